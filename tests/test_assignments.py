"""The assignments (assignments/): their source notebooks match the
chapter's library, each part has a stub and a test with points, every wrong
solution still applies, and grading without nbgrader (assignments/grade.py)
gives the reference full marks and a wrong solution the points it should.
`make assignments` checks the same with nbgrader, for every assignment."""
import importlib.util
import pathlib

import nbformat
import pytest

ASSIGNMENTS = pathlib.Path(__file__).resolve().parents[1] / 'assignments'


def load(name):
    """assignments/NAME.py as a module (named so that it clashes with
    nothing, such as the checkout's build/ folder)."""
    spec = importlib.util.spec_from_file_location(
        f'assignments_{name}', ASSIGNMENTS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build, grade, wrong = load('build'), load('grade'), load('wrong')


def source(name):
    return nbformat.read(ASSIGNMENTS / 'source' / name / f'{name}.ipynb',
                         as_version=4)


def test_sources_match_library():
    defs = build.library_definitions()
    for name in build.ORDER:
        path = ASSIGNMENTS / 'source' / name / f'{name}.ipynb'
        assert path.read_text() == build.serialize(build.build(name, defs)), \
            f'{path} is out of date: run python assignments/build.py'


def test_build_rejects_a_missing_method(tmp_path):
    defs = build.library_definitions()
    with pytest.raises(SystemExit, match='has no method'):
        build.with_solution(defs['LoRALinear'], ['no_such_method'])


@pytest.mark.parametrize('name', build.ORDER)
def test_parts(name):
    nb = source(name)
    meta = [c.metadata['nbgrader'] for c in nb.cells]
    solutions = [c for c, m in zip(nb.cells, meta) if m['solution']]
    tests = [m for m in meta if m['grade']]
    assert 5 <= len(build.ORDER) <= 8
    assert solutions and all('### BEGIN SOLUTION' in c.source
                             for c in solutions)
    assert len(tests) >= 2 and all(m['points'] > 0 for m in tests)
    assert all('### BEGIN HIDDEN TESTS' in c.source for c in nb.cells
               if c.metadata['nbgrader']['grade'])
    assert len({c.id for c in nb.cells}) == len(nb.cells)
    assert 'import d2l_peft' not in ''.join(c.source for c in nb.cells), \
        'the notebooks carry the code they use, to start fast'


def test_wrong_solutions_apply():
    parts = {name: {c.metadata['nbgrader']['grade_id'] for c in
                    source(name).cells
                    if c.metadata['nbgrader']['grade']}
             for name in build.ORDER}
    for w in wrong.WRONG:
        assert set(w['breaks']) <= parts[w['assignment']]
        solutions = ''.join(c.source for c in source(w['assignment']).cells
                            if c.metadata['nbgrader']['solution'])
        for old, _ in w['replace']:
            assert solutions.count(old) == 1, (w['name'], old)
    assert {w['assignment'] for w in wrong.WRONG} == set(build.ORDER)


def test_grade_without_nbgrader(tmp_path):
    nb = source('nf4')
    nbformat.write(nb, tmp_path / 'reference.ipynb')
    w = next(w for w in wrong.WRONG if w['name'] == 'per-tensor-absmax')
    for cell in nb.cells:
        for old, new in w['replace']:
            cell.source = cell.source.replace(old, new)
    nbformat.write(nb, tmp_path / 'wrong.ipynb')
    scores = grade.grade(tmp_path / 'reference.ipynb')
    assert all(got == points for got, points in scores.values())
    scores = grade.grade(tmp_path / 'wrong.ipynb')
    assert {part for part, (got, points) in scores.items()
            if got < points} == set(w['breaks'])
    assert (tmp_path / 'wrong.graded.ipynb').exists()
