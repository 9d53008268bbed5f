"""The committed library, notebooks, bibliography and README match the
chapter's sources."""
import os
import re
import time

import nbformat
import pytest

import chapter
from conftest import ROOT, assert_full_gpu_run

NOTEBOOKS = sorted((ROOT / 'notebooks').glob('*.ipynb'))
SECTIONS_WITH_CODE = [p for p in chapter.sections()
                      if '```python' in p.read_text()]


def test_library_is_made_from_the_sources():
    assert chapter.LIBRARY.read_text() == chapter.library_text(), (
        'd2l_peft/__init__.py is stale: run python tools/chapter.py library')


def test_saved_blocks():
    cell = ('#@save\nimport torch\nimport d2l_peft as d2lp\n\n'
            'def f(x):  #@save\n    return x')
    assert chapter.saved_blocks(cell) == [
        'import torch\n\ndef f(x):\n    return x']
    cell = ('def f(x):  #@save\n    return (x +\n            1)\n\n'
            'def g():\n    pass\n\nclass A:  #@save\n    pass\nprint(1)')
    assert chapter.saved_blocks(cell) == [
        'def f(x):\n    return (x +\n            1)', 'class A:\n    pass']


def test_every_section_with_code_has_its_notebook():
    assert ({p.stem for p in NOTEBOOKS}
            == {p.stem for p in SECTIONS_WITH_CODE})


@pytest.mark.parametrize('section', SECTIONS_WITH_CODE, ids=lambda p: p.stem)
def test_notebook_matches_its_source(section):
    committed = nbformat.read(ROOT / 'notebooks' / f'{section.stem}.ipynb',
                              as_version=4)
    assert_full_gpu_run(committed, section, f'notebooks/{section.stem}.ipynb '
                        'is stale: re-execute it on a GPU')


def test_reduced_notebook_says_so():
    nb = chapter.notebook(SECTIONS_WITH_CODE[0], reduced=True)
    assert nb.cells[0].source == chapter.REDUCED_NOTE


def parse_bib(text):
    """Entries {key: {field: value}} of a BibTeX file; raises on bad syntax."""
    entries, pos = {}, 0
    for m in re.finditer(r'@(\w+)\s*\{\s*([^,\s]+)\s*,', text):
        assert not text[pos:m.start()].strip(), f'junk before {m.group(2)}'
        depth, i = 1, m.end()
        while depth:
            assert i < len(text), f'unbalanced braces in {m.group(2)}'
            depth += {'{': 1, '}': -1}.get(text[i], 0)
            i += 1
        body = text[m.end():i - 1]
        fields = dict(re.findall(r'(\w+)\s*=\s*\{((?:[^{}]|\{[^{}]*\})*)\}',
                                 body))
        assert m.group(2) not in entries, f'duplicate key {m.group(2)}'
        entries[m.group(2)] = fields
        pos = i
    assert not text[pos:].strip(), 'junk after the last entry'
    return entries


def test_bibliography_parses_and_has_every_citation():
    entries = parse_bib((ROOT / 'd2l.bib').read_text())
    for key, fields in entries.items():
        assert {'title', 'author', 'year'} <= set(fields), key
    cited = {key for path in chapter.CHAPTER.glob('*.md')
             for group in re.findall(r':citet?:`([^`]+)`', path.read_text())
             for key in group.split(',')}
    assert cited and cited <= set(entries), cited - set(entries)
    with pytest.raises(AssertionError):
        parse_bib('@article{a, title = {x}')


def test_readme_links_every_notebook_to_colab():
    readme = (ROOT / 'README.md').read_text()
    for section in SECTIONS_WITH_CODE:
        url = (f'https://colab.research.google.com/github/{chapter.GITHUB_REPO}'
               f'/blob/main/notebooks/{section.stem}.ipynb')
        assert url in readme, url


def test_refresh_keeps_outputs_and_refuses_changed_code(tmp_path):
    section = SECTIONS_WITH_CODE[0]
    committed = ROOT / 'notebooks' / f'{section.stem}.ipynb'
    (tmp_path / committed.name).write_bytes(committed.read_bytes())
    source = tmp_path / section.name
    text = section.read_text()
    source.write_text(text.replace('## Summary', '## Summary\n\nNew prose.'))
    chapter.refresh(source, tmp_path)
    refreshed = nbformat.read(tmp_path / committed.name, as_version=4)
    assert any('New prose.' in c.source for c in refreshed.cells)
    outputs = lambda nb: [c.outputs for c in nb.cells
                          if c.cell_type == 'code']
    assert outputs(refreshed) == outputs(nbformat.read(committed,
                                                       as_version=4))
    source.write_text(text.replace('batch_size = 64', 'batch_size = 32'))
    with pytest.raises(SystemExit, match='code changed'):
        chapter.refresh(source, tmp_path)


def test_a_fork_changes_one_line(tmp_path, monkeypatch):
    """A new GITHUB_REPO reaches the install cell of an executed notebook
    by refresh, with no re-execution, and the notebook stays valid."""
    monkeypatch.setattr(chapter, 'GITHUB_REPO', 'someone/fork')
    section = SECTIONS_WITH_CODE[0]
    committed = ROOT / 'notebooks' / f'{section.stem}.ipynb'
    (tmp_path / committed.name).write_bytes(committed.read_bytes())
    chapter.refresh(section, tmp_path)
    refreshed = nbformat.read(tmp_path / committed.name, as_version=4)
    assert 'github.com/someone/fork' in chapter.colab_cell()
    assert_full_gpu_run(refreshed, section, 'refresh broke the notebook')
    assert ('colab.research.google.com/github/someone/fork/blob/main/'
            f'notebooks/{section.stem}.ipynb') in chapter.sections_table()


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_records_its_gpu_and_time(path):
    run = nbformat.read(path, as_version=4).metadata['d2l_peft']
    assert run['gpu'] and run['seconds'] > 0


def test_readme_tables_are_up_to_date():
    assert (ROOT / 'README.md').read_text() == chapter.readme_text(), (
        'README.md is stale: run python tools/chapter.py readme')
    results = (ROOT / 'benchmarks' / 'results.md').read_text()
    assert results.startswith('Measured on') and 'speed-up' in results


def test_execute_records_gpu_and_seconds(tmp_path):
    section = tmp_path / 'tiny.md'
    section.write_text('# Tiny\n\n```python\nprint(6 * 7)\n```\n')
    chapter.execute(section, tmp_path / 'out', reduced=True)
    nb = nbformat.read(tmp_path / 'out' / 'tiny.ipynb', as_version=4)
    run = nb.metadata['d2l_peft']
    assert run['gpu'] is None and isinstance(run['seconds'], int)
    assert nb.cells[0].source == chapter.REDUCED_NOTE
    assert nb.cells[-1].outputs[0]['text'] == '42\n'


def test_reduced_run_keeps_its_plots(tmp_path, monkeypatch):
    """A reduced run's kernel is forked from a server that imported
    matplotlib before any kernel existed; its plots still reach the
    notebook, as a kernel started afresh draws them."""
    monkeypatch.delenv('MPLBACKEND')  # as `chapter.py execute` runs
    section = tmp_path / 'plot.md'
    section.write_text('# Plot\n\n```python\nfrom d2l import torch as d2l\n'
                       'd2l.plot([1, 2], [[3, 4]])\n```\n')
    chapter.execute(section, tmp_path / 'out', reduced=True)
    nb = nbformat.read(tmp_path / 'out' / 'plot.ipynb', as_version=4)
    assert [o['output_type'] for o in nb.cells[-1].outputs] == [
        'display_data']
    assert 'image/svg+xml' in nb.cells[-1].outputs[0]['data']


def test_forked_kernel_runs_in_its_cwd_and_env_and_can_be_interrupted(
        tmp_path):
    """nbval's kernels are forked from a server that preloaded modules:
    each runs in the directory and environment it was started with, ends
    with the process that started it, and an interrupt (nbval's timeout)
    stops the cell that runs."""
    manager = chapter.local_kernel_manager(chapter.PRELOAD)(
        kernel_name='python3')
    manager.start_kernel(cwd=str(tmp_path),
                         env={**os.environ, 'FORKED_KERNEL_TEST': 'yes'})
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        outputs = []
        reply = client.execute_interactive(
            "import os, sys; print(os.getcwd(), os.environ"
            "['FORKED_KERNEL_TEST'], os.environ['JPY_PARENT_PID'], "
            "os.getppid(), 'torch' in sys.modules)", timeout=60,
            output_hook=lambda msg: outputs.append(
                msg['content'].get('text', '')))
        assert reply['content']['status'] == 'ok'
        cwd, value, parent, forked_by, torch = ''.join(outputs).split()
        assert (cwd, value, parent, torch) == (
            str(tmp_path), 'yes', str(os.getpid()), 'True')
        assert forked_by != str(os.getpid())  # the server's child, not ours
        msg_id = client.execute('import time; time.sleep(60)')
        time.sleep(1)
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=20)
        assert reply['parent_header']['msg_id'] == msg_id
        assert reply['content']['ename'] == 'KeyboardInterrupt'
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert not manager.is_alive()


@pytest.mark.parametrize(
    'path', [*chapter.CHAPTER.glob('*.md'), ROOT / 'README.md',
             *chapter.solutions()],
    ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_placeholder_is_left(path):
    """A `<!-- GPU: ... -->` marker stands for a number that a GPU run
    must give, a TODO for unfinished work: none may reach main."""
    text = path.read_text()
    assert '<!-- GPU' not in text, (
        f'{path.name} still waits for numbers from a GPU run: read them '
        'from the executed notebooks and replace its <!-- GPU: --> markers')
    assert 'TODO' not in text, path.name
