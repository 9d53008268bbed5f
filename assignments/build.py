"""Build the instructor's (nbgrader source) notebooks of the assignments
from their templates and the chapter's library.

    python assignments/build.py           # write assignments/source/*/*.ipynb
    python assignments/build.py --check   # fail if they differ from a build

A template `assignments/templates/NAME.md` is Markdown with ```python code
blocks. The first line of a code block may be a directive:

    #@solve LoRALinear: __init__ forward   the class (or function) as the
                                           library defines it, with the
                                           bodies of the named methods (of
                                           the function) as the solution
    #@library                              the chapter's code that the rest
                                           of the notebook uses, read-only
    #@test ID POINTS                       an autograded test cell

Any other code block is a read-only cell. The reference solution is the
chapter's own `#@save` code, read from `d2l_peft/__init__.py` (generated
from the sections; and `d2l_peft/resources.py`) at build time, so the two
cannot drift apart; the library is parsed, not imported, so the build needs
no torch.
"""
import argparse
import ast
import builtins
import json
import pathlib
import re
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent
LIBRARY = ROOT.parent / 'd2l_peft' / '__init__.py'
RESOURCES = ROOT.parent / 'd2l_peft' / 'resources.py'  # its names too
ORDER = ['lora', 'adapters', 'prompt-tuning', 'nf4', 'bitfit', 'save-load']


def library_definitions(paths=(RESOURCES, LIBRARY)):
    """Source of each top-level function, class and constant of the
    library, by name (the last definition wins), in the library's order."""
    defs = {}
    for path in paths:
        defs.update(definitions(path.read_text()))
    return defs


def definitions(source):
    defs = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        else:
            continue
        start = (node.decorator_list[0].lineno if getattr(
            node, 'decorator_list', None) else node.lineno)
        lines = source.splitlines()[start - 1:node.end_lineno]
        for name in names:
            defs.pop(name, None)
            defs[name] = '\n'.join(lines)
    return defs


def used_names(code):
    """Names that `code` reads and does not bind anywhere itself (roughly
    its free names), and the X of every `d2lp.X`."""
    names, bound = set(), set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split('.')[0] for a in node.names}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif (isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Name)
              and node.value.id == 'd2lp'):
            names.add(node.attr)
    return names - bound


def defined_names(code):
    """Top-level names that `code` defines or imports."""
    names = set()
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split('.')[0] for a in node.names}
    return names


def with_solution(code, methods):
    """`code` (a class or function) with the bodies of `methods` (after
    their docstrings) between nbgrader's solution markers."""
    lines = code.splitlines()
    tree = ast.parse(code).body[0]
    if isinstance(tree, ast.FunctionDef):
        functions = [tree]
    else:
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    found = {f.name: f for f in functions}
    missing = [m for m in methods if m not in found]
    if missing:
        raise SystemExit(f'{tree.name} has no method {missing}: update the '
                         'template')
    inserts = []
    for name in methods:
        f = found[name]
        body = f.body
        if (isinstance(body[0], ast.Expr) and isinstance(body[0].value,
                                                         ast.Constant)
                and isinstance(body[0].value.value, str)):
            start = body[0].end_lineno  # 0-based index of the line after
        else:
            start = body[0].lineno - 1
            while lines[start - 1].strip().startswith('#'):
                start -= 1
        indent = re.match(r'\s*', lines[body[-1].lineno - 1]).group()
        inserts.append((start, f.end_lineno, indent))
    for start, end, indent in sorted(inserts, reverse=True):
        lines[end:end] = [indent + '### END SOLUTION']
        lines[start:start] = [indent + '### BEGIN SOLUTION']
    return '\n'.join(lines)


def parse_template(text):
    """(kind, text) pairs: 'markdown' or 'code' blocks of a template."""
    blocks, pos = [], 0
    for m in re.finditer(r'^```python\n(.*?)^```\n', text, re.M | re.S):
        blocks.append(('markdown', text[pos:m.start()].strip()))
        blocks.append(('code', m.group(1).rstrip()))
        pos = m.end()
    blocks.append(('markdown', text[pos:].strip()))
    return [(kind, body) for kind, body in blocks if body]


def cell_meta(grade_id, solution=False, points=None):
    meta = {'grade': points is not None, 'grade_id': grade_id,
            'locked': not solution, 'schema_version': 3,
            'solution': solution, 'task': False}
    if points is not None:
        meta['points'] = points
    return {'nbgrader': meta}


def build(name, defs):
    """The nbgrader source notebook of assignment `name`."""
    blocks = parse_template((ROOT / 'templates' / f'{name}.md').read_text())
    cells, solved, codes = [], set(), []
    for kind, body in blocks:  # first pass: the code that will be there
        if kind == 'code' and body.startswith('#@solve'):
            for line in body.splitlines():
                target, _, methods = line[len('#@solve'):].partition(':')
                target = target.strip()
                solved.add(target)
                codes.append(defs[target])
        elif kind == 'code' and not body.startswith('#@library'):
            codes.append(body)
    defined = solved | set().union(*map(defined_names, codes))
    needed, todo = [], set().union(*map(used_names, codes))
    while todo:
        name_ = todo.pop()
        if (name_ in needed or name_ in defined
                or hasattr(builtins, name_)):
            continue
        if name_ not in defs:
            raise SystemExit(f'{name}: the name {name_!r} is neither in the '
                             'library nor defined or imported by the '
                             'template')
        needed.append(name_)
        todo |= used_names(defs[name_])
    order = list(defs)
    library = '\n\n\n'.join(defs[n] for n in sorted(needed, key=order.index))
    for i, (kind, body) in enumerate(blocks):
        gid = f'{name}-{i:02d}'
        if kind == 'markdown':
            cell = nbformat.v4.new_markdown_cell(body)
            cell.metadata = cell_meta(gid)
        elif body.startswith('#@solve'):
            parts = []
            for line in body.splitlines():
                target, _, methods = line[len('#@solve'):].partition(':')
                target = target.strip()
                parts.append(with_solution(defs[target], methods.split()
                                           or [target]))
            cell = nbformat.v4.new_code_cell('\n\n\n'.join(parts))
            cell.metadata = cell_meta(f'{name}-solution-{i:02d}',
                                      solution=True)
        elif body.startswith('#@test'):
            _, test_id, points = body.splitlines()[0].split()
            cell = nbformat.v4.new_code_cell(body.split('\n', 1)[1])
            cell.metadata = cell_meta(test_id, points=int(points))
        elif body.startswith('#@library'):
            if not library:
                continue
            cell = nbformat.v4.new_code_cell(
                '# The chapter\'s code that this assignment uses (from '
                'd2l_peft).\n' + library)
            cell.metadata = cell_meta(gid)
        else:
            cell = nbformat.v4.new_code_cell(body)
            cell.metadata = cell_meta(gid)
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {
        'kernelspec': {'display_name': 'Python 3', 'language': 'python',
                       'name': 'python3'},
        'language_info': {'name': 'python'}}
    for cell in nb.cells:
        cell.id = cell.metadata['nbgrader']['grade_id']
    return nb


def serialize(nb):
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true',
                        help='fail if a source notebook is out of date')
    parser.add_argument('names', nargs='*', default=ORDER)
    args = parser.parse_args()
    defs = library_definitions()
    stale = []
    for name in args.names:
        path = ROOT / 'source' / name / f'{name}.ipynb'
        text = serialize(build(name, defs))
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT.parent)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.exit(f'out of date with the library: {stale}; run '
                 '`python assignments/build.py` and commit them')


if __name__ == '__main__':
    main()
