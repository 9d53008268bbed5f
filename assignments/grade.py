"""Grade a student's notebook without nbgrader, as `nbgrader autograde` does.

    python assignments/grade.py alice/lora.ipynb [bob/lora.ipynb ...]
    SUBMISSION=alice/lora.ipynb python -m pytest assignments/grade.py

Run it with the chapter's Python (.venv): it needs nbformat and nbclient,
not nbgrader. It finds the assignment by the ids of the notebook's cells,
takes the student's solution cells and everything else (read-only cells,
and the test cells with their hidden tests) from the source notebook in
assignments/source/, executes the result, and gives each test cell its
points if it raises no error. The command prints the points per part and
writes the executed notebook beside the submission (NAME.graded.ipynb);
pytest reports one test per part, named with its points.
"""
import os
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent


def grade_id(cell):
    return cell.metadata.get('nbgrader', {}).get('grade_id')


def merged(submission):
    """The source notebook of the submission's assignment with the
    student's solution cells; and the assignment's name."""
    student = nbformat.read(submission, as_version=4)
    answers = {grade_id(c): c for c in student.cells if grade_id(c)}
    for path in sorted((ROOT / 'source').glob('*/*.ipynb')):
        source = nbformat.read(path, as_version=4)
        solutions = [c for c in source.cells
                     if c.metadata['nbgrader'].get('solution')]
        if not any(grade_id(c) in answers for c in solutions):
            continue
        for i, cell in enumerate(source.cells):
            if grade_id(cell) in answers and cell in solutions:
                source.cells[i] = nbformat.v4.new_code_cell(
                    answers[grade_id(cell)].source, id=cell.id,
                    metadata=cell.metadata)
        missing = sorted(set(map(grade_id, solutions)) - answers.keys())
        if missing:
            print(f'{submission}: the solution cells {missing} are missing; '
                  'they keep their stubs', file=sys.stderr)
        return source, path.parent.name
    sys.exit(f'{submission} is none of the assignments in '
             f'{ROOT / "source"}: no cell has the id of a solution cell')


def grade(submission, write=True):
    """{part: (points scored, points)} for a student's notebook."""
    nb, name = merged(submission)
    nb.metadata['kernelspec'] = {'name': 'python3', 'language': 'python',
                                 'display_name': 'Python 3'}
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
    NotebookClient(nb, timeout=120, allow_errors=True,
                   kernel_name='python3').execute()
    if write:
        path = pathlib.Path(submission)
        nbformat.write(nb, path.with_name(path.stem + '.graded.ipynb'))
    result = {}
    for cell in nb.cells:
        meta = cell.metadata['nbgrader']
        if meta.get('grade'):
            failed = any(o.output_type == 'error' for o in cell.outputs)
            result[meta['grade_id']] = (0 if failed else meta['points'],
                                        meta['points'])
    return result


def main(paths):
    for path in paths:
        scores = grade(path)
        got = sum(s for s, _ in scores.values())
        total = sum(p for _, p in scores.values())
        parts = ', '.join(f'{part} {s:g}/{p:g}'
                          for part, (s, p) in scores.items())
        print(f'{path}: {got:g}/{total:g} ({parts})', flush=True)


if __name__ == '__main__':
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
else:  # collected by pytest
    import pytest

    SUBMISSION = os.environ.get('SUBMISSION')

    @pytest.fixture(scope='module')
    def scores():
        return grade(SUBMISSION)

    def parts():
        if not SUBMISSION:
            return []
        nb, _ = merged(SUBMISSION)
        return [pytest.param(grade_id(c), id=f'{grade_id(c)}-'
                             f'{c.metadata["nbgrader"]["points"]:g}-points')
                for c in nb.cells if c.metadata['nbgrader'].get('grade')]

    @pytest.mark.skipif(not SUBMISSION,
                        reason='set SUBMISSION to a student\'s notebook')
    @pytest.mark.parametrize('part', parts() or [None])
    def test_part(scores, part):
        got, points = scores[part]
        assert got == points, (f'part {part} fails: see '
                               f'{SUBMISSION[:-6]}.graded.ipynb')
