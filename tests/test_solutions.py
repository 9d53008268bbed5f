"""Every exercise of the chapter has a solution in solutions/, and the
solutions' notebooks and table match their sources."""
import nbformat
import pytest

import chapter
from conftest import ROOT, assert_full_gpu_run

SECTIONS_WITH_EXERCISES = [p for p in chapter.sections()
                           if chapter.exercises(p)]
NOTEBOOKS = ROOT / 'solutions' / 'notebooks'


def unsolved(section, solutions):
    """What the solutions file lacks for the exercises of a section."""
    if not solutions.exists():
        return [f'{solutions.name} is missing']
    exercises, found = chapter.exercises(section), chapter.solved(solutions)
    problems = [f'exercise {n} has no solution'
                for n in range(1, len(exercises) + 1) if n not in found]
    problems += [f'exercise {n} does not exist' for n in found
                 if not 1 <= n <= len(exercises)]
    if list(found) != sorted(found):
        problems.append('the exercises are out of order')
    for number, item in found.items():
        if 1 <= number <= len(exercises) and \
                item['quote'] != exercises[number - 1]:
            problems.append(f'exercise {number} is not quoted as the '
                            'section words it now')
        if not item['kind']:
            problems.append(f'exercise {number} lacks its line *Kind: ... '
                            'Time: about N minutes. GPU: yes|no.*')
    return problems


@pytest.mark.parametrize('section', SECTIONS_WITH_EXERCISES,
                         ids=lambda p: p.stem)
def test_every_exercise_has_its_solution(section):
    problems = unsolved(section, chapter.SOLUTIONS / section.name)
    assert not problems, f'solutions/{section.name}: {problems}'


def test_unsolved_finds_what_is_missing(tmp_path):
    section = tmp_path / 'section.md'
    section.write_text('# S\n\n## Exercises\n\n1. Compute a.\n1. Explain\n'
                       '   b.\n')
    solutions = tmp_path / 'solutions.md'
    assert unsolved(section, solutions) == ['solutions.md is missing']
    solutions.write_text('# Solutions\n\n## Exercise 1\n\n> Compute a.\n\n'
                         '*Kind: compute. Time: about 5 minutes. GPU: no.*\n')
    assert unsolved(section, solutions) == ['exercise 2 has no solution']
    solutions.write_text(solutions.read_text() + '\n## Exercise 2\n\n> '
                         'Explain c.\n\nBecause.\n')
    assert unsolved(section, solutions) == [
        'exercise 2 is not quoted as the section words it now',
        'exercise 2 lacks its line *Kind: ... Time: about N minutes. GPU: '
        'yes|no.*']


def test_no_solutions_without_a_section():
    names = {p.name for p in chapter.sections()}
    assert {p.name for p in chapter.SOLUTIONS.glob('*.md')
            if p.name != 'README.md'} <= names


@pytest.mark.parametrize('solutions', chapter.solutions(),
                         ids=lambda p: p.stem)
def test_notebook_matches_its_source(solutions):
    committed = nbformat.read(NOTEBOOKS / f'{solutions.stem}.ipynb',
                              as_version=4)
    assert_full_gpu_run(committed, solutions, (
        f'solutions/notebooks/{solutions.stem}.ipynb is stale: execute '
        'it again on a GPU (tools/chapter.py execute --solutions)'))


def test_every_notebook_has_its_source():
    assert ({p.stem for p in NOTEBOOKS.glob('*.ipynb')}
            == {p.stem for p in chapter.solutions()})


def test_readme_table_is_current():
    assert (chapter.SOLUTIONS / 'README.md').read_text() == \
        chapter.solutions_readme_text(), (
            'solutions/README.md is stale: run python tools/chapter.py readme')
