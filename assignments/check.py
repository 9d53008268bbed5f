"""Generate the student versions of the assignments with nbgrader and check
the grading: `make assignments` runs this in assignments/.venv (which has
nbgrader); the notebooks run on the chapter's Python (.venv).

For each assignment, in a fresh nbgrader course of its own under
build/assignments/courses/ (so that two can be graded at once), it runs
`nbgrader generate_assignment` on the source notebook, then submits, as
three kinds of student, and autogrades with `nbgrader autograde`:

- `reference`: the source notebook, whose solutions are the chapter's code;
  it must score full marks;
- `untouched`: the student version as released; it must score zero, and
  every error in it must be the stubs' NotImplementedError;
- `wrong-NAME`: each wrong solution of assignments/wrong.py; it must lose
  the points of exactly the parts that it breaks.

The student versions are copied to build/assignments/release/.
"""
import argparse
import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from build import ORDER  # noqa: E402
from wrong import WRONG  # noqa: E402


def run(*args, env, cwd):
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True,
                            text=True)
    if result.returncode:
        sys.exit(f'{" ".join(args)} failed:\n{result.stdout}'
                 f'\n{result.stderr}')
    return result


def make_course(course, name, kernel_python):
    """A fresh course with the source notebook of assignment `name` and a
    `python3` kernel that runs on `kernel_python`."""
    shutil.rmtree(course, ignore_errors=True)
    shutil.copytree(ROOT / 'source' / name, course / 'source' / name)
    (course / 'nbgrader_config.py').write_text(
        'c = get_config()\n'
        f'c.CourseDirectory.root = {str(course)!r}\n'
        "c.CourseDirectory.db_url = 'sqlite:///' + "
        f"{str(course / 'gradebook.db')!r}\n"
        'c.ExecutePreprocessor.timeout = 120\n')
    kernel = course / 'jupyter' / 'kernels' / 'python3'
    kernel.mkdir(parents=True)
    (kernel / 'kernel.json').write_text(json.dumps({
        'argv': [kernel_python, '-m', 'ipykernel_launcher', '-f',
                 '{connection_file}'],
        'display_name': 'Python 3 (d2l_peft)', 'language': 'python'}))


def submit(course, student, name, nb):
    path = course / 'submitted' / student / name / f'{name}.ipynb'
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def wrong_version(source, wrong):
    nb = nbformat.read(source, as_version=4)
    for old, new in wrong['replace']:
        cells = [c for c in nb.cells
                 if c.metadata['nbgrader'].get('solution')
                 and old in c.source]
        if len(cells) != 1:
            sys.exit(f'wrong solution {wrong["name"]} of '
                     f'{wrong["assignment"]}: {old!r} is in {len(cells)} '
                     'solution cells, not one; update assignments/wrong.py')
        cells[0].source = cells[0].source.replace(old, new)
    return nb


def errors(path):
    """The names of the errors in an autograded notebook's outputs."""
    nb = nbformat.read(path, as_version=4)
    return [out.ename for cell in nb.cells if cell.cell_type == 'code'
            for out in cell.outputs if out.output_type == 'error']


def grade(name, root, kernel_python):
    """Generate and autograde assignment `name` in a course of its own
    under `root`; (report lines, failures)."""
    start = time.time()
    course = root / 'courses' / name
    make_course(course, name, kernel_python)
    env = dict(os.environ, JUPYTER_PATH=str(course / 'jupyter'),
               JUPYTER_CONFIG_DIR=str(course / 'jupyter'),
               HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
               PATH=os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                                     os.environ['PATH']]))
    nbgrader = [sys.executable, '-m', 'nbgrader']
    config = [f'--CourseDirectory.root={course}']
    run(*nbgrader, 'generate_assignment', name, '--force', *config,
        env=env, cwd=course)
    release = course / 'release' / name / f'{name}.ipynb'
    source = course / 'source' / name / f'{name}.ipynb'
    (root / 'release' / name).mkdir(parents=True, exist_ok=True)
    shutil.copy(release, root / 'release' / name / f'{name}.ipynb')
    submit(course, 'reference', name, nbformat.read(source, 4))
    submit(course, 'untouched', name, nbformat.read(release, 4))
    wrongs = [w for w in WRONG if w['assignment'] == name]
    for w in wrongs:
        submit(course, f'wrong-{w["name"]}', name, wrong_version(source, w))
    run(*nbgrader, 'autograde', name, '--force', *config, env=env,
        cwd=course)
    failures = []
    from nbgrader.api import Gradebook
    with Gradebook(f'sqlite:///{course / "gradebook.db"}') as gb:
        parts = {c.name: c.max_score for c in
                 gb.find_notebook(name, name).grade_cells}
        total = sum(parts.values())

        def scores(student):
            return {part: gb.find_grade(part, name, name, student).score
                    for part in parts}
        lines = [f'{name}: {len(parts)} parts, {total:g} points '
                 f'({", ".join(f"{p} {v:g}" for p, v in parts.items())}), '
                 f'graded in {time.time() - start:.0f} s']
        got = scores('reference')
        lines.append(f'  reference: {sum(got.values()):g}/{total:g}')
        if got != parts:
            failures.append(f'{name}: the reference scores {got}')
        got = scores('untouched')
        lines.append(f'  untouched: {sum(got.values()):g}/{total:g}')
        if any(got.values()):
            failures.append(f'{name}: the untouched notebook scores {got}')
        autograded = (course / 'autograded' / 'untouched' / name /
                      f'{name}.ipynb')
        other = sorted(set(errors(autograded)) - {'NotImplementedError'})
        if other:
            failures.append(f'{name}: the untouched notebook raises '
                            f'{other}, not only NotImplementedError')
        for w in wrongs:
            got = scores(f'wrong-{w["name"]}')
            expected = {p: 0 if p in w['breaks'] else v
                        for p, v in parts.items()}
            lost = sorted(p for p in parts if got[p] < parts[p])
            lines.append(f'  wrong {w["name"]} ({w["why"]}): '
                         f'{sum(got.values()):g}/{total:g}, loses '
                         f'{", ".join(lost) or "nothing"}')
            if got != expected:
                failures.append(f'{name}: wrong solution {w["name"]} '
                                f'scores {got}, not {expected}')
    return lines, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--kernel-python', default=str(
        ROOT.parent / '.venv' / 'bin' / 'python'))
    parser.add_argument('--build', default=str(
        ROOT.parent / 'build' / 'assignments'))
    parser.add_argument('--jobs', type=int, default=2,
                        help='assignments graded at once (default 2)')
    parser.add_argument('names', nargs='*', default=ORDER)
    args = parser.parse_args()
    root = pathlib.Path(args.build).resolve()
    shutil.rmtree(root / 'release', ignore_errors=True)
    kernel_python = str(pathlib.Path(args.kernel_python).absolute())
    failures = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for lines, failed in pool.map(
                lambda name: grade(name, root, kernel_python), args.names):
            print('\n'.join(lines), flush=True)
            failures += failed
    if failures:
        sys.exit('FAILED:\n' + '\n'.join(failures))
    print(f'all {len(args.names)} assignments grade as they should; the '
          f'student versions are in {root / "release"}')


if __name__ == '__main__':
    main()
