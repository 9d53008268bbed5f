"""Build the chapter as a d2l-style web book, from its sources and the
executed notebooks in notebooks/, without executing anything.

    python book/build.py                 # run by `make book`, in .book-venv
    python book/build.py --cdn-mathjax --into build/book-cdn   # for tests

The sources are staged into build/book/ the way d2lbook expects them:
code cells fenced as {.python .input}, and each section's executed notebook
(less its Colab install cell) placed in _build/eval/ newer than its source,
so that d2lbook takes it as evaluated. The HTML lands in
build/book/_build/html/; what the theme ships and no page loads is pruned.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / 'tools'))
import chapter  # noqa: E402  the chapter's sections, toc and Colab cell

STAGE = ROOT / 'build' / 'book'
CHAPTER_DIR = chapter.CHAPTER.name
HEADER = re.compile(r'\A---\n.*?\n---\n+', re.S)  # jupytext's YAML header
FENCE = re.compile(r'^```python\b.*$', re.M)
MATHJAX_KEEP = ('tex-chtml.js', 'output/chtml/fonts/woff-v2/')
COPY_ICON = ('https://raw.githubusercontent.com/choldgraf/sphinx-copybutton/'
             'master/sphinx_copybutton/_static/copy-button.svg')
COPY_ICON_INLINE = (  # two sheets of paper, drawn here
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' "
    "width='16' height='16' viewBox='0 0 16 16' fill='none' stroke='%23666' "
    "stroke-width='1.3'%3E%3Crect x='5' y='5' width='9' height='10' "
    "rx='1'/%3E%3Cpath d='M11 5V2a1 1 0 0 0-1-1H3a1 1 0 0 0-1 1v9a1 1 0 0 "
    "0 1 1h2'/%3E%3C/svg%3E")


def config_ini(cdn_mathjax=False):
    """d2lbook's configuration: nothing is evaluated; MathJax is local
    unless `cdn_mathjax` (Sphinx's default) is asked for."""
    mathjax = '' if cdn_mathjax else 'sphinx-mathjax-offline'
    return f"""[project]
name = finetuning-bert
title = Fine-Tuning BERT Efficiently
author = The contributors
release = 0.1.0

[build]
index = index
notebooks = index.md {CHAPTER_DIR}/*.md chapter_references/*.md
resources = {CHAPTER_DIR}/img/ d2l.bib
eval_notebook = False
sphinx_extensions = {mathjax}
sphinx_configs = html_copy_source = False
    html_show_sourcelink = False

[html]
include_css = book.css

[pdf]
bibfile = d2l.bib
"""


def links(name):
    """The line under a section's title: its notebook and its Colab badge
    (raw HTML, so that the badge stays in the line)."""
    colab = ('https://colab.research.google.com/github/'
             f'{chapter.GITHUB_REPO}/blob/main/notebooks/{name}.ipynb')
    return ('```eval_rst\n.. raw:: html\n\n   <p class="notebook-links">'
            f'<a href="../notebooks/{name}.ipynb" download>Download the '
            f'executed notebook</a> &middot; <a href="{colab}"><img '
            'src="../_static/colab-badge.svg" alt="Open In Colab"></a></p>'
            '\n```')


def with_links(markdown, name):
    """Markdown with the links placed after the title and its label."""
    return re.sub(r'\A(# .+\n:label:`[^`]+`\n)', lambda m: m.group(1) +
                  '\n' + links(name) + '\n', markdown, count=1)


def stage_source(path, stage):
    """A section as d2lbook reads it: no YAML header, d2l's fences."""
    text = FENCE.sub('```{.python .input}', HEADER.sub('', path.read_text()))
    if '```{.python .input}' in text:
        text = with_links(text, path.stem)
    (stage / CHAPTER_DIR / path.name).write_text(text)


def stage_notebook(path, stage):
    """The executed notebook of a section as d2lbook's evaluated copy."""
    executed = ROOT / 'notebooks' / f'{path.stem}.ipynb'
    if not executed.exists():
        sys.exit(f'{executed} is missing: execute the section on a GPU '
                 '(see README.md) before building the book')
    nb = nbformat.read(executed, as_version=4)
    if not nb.metadata.get('d2l_peft', {}).get('gpu'):
        sys.exit(f'{executed} was not executed on a GPU: the book shows '
                 'full runs only')
    if nb.cells[0].source != chapter.colab_cell():
        sys.exit(f'{executed} does not start with the Colab cell; '
                 're-execute it with tools/chapter.py')
    del nb.cells[0]
    first = nb.cells[0]
    first.source = with_links(first.source, path.stem)
    nb.metadata['language_info'] = {'name': 'python'}
    out = stage / '_build' / 'eval' / CHAPTER_DIR / f'{path.stem}.ipynb'
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return executed


def stage_book(stage, cdn_mathjax):
    """Write the staging folder: sources, images, bibliography, the
    evaluated copies. Returns the executed notebooks."""
    if stage.exists():
        shutil.rmtree(stage)
    (stage / CHAPTER_DIR).mkdir(parents=True)
    (stage / 'chapter_references').mkdir()
    (stage / 'config.ini').write_text(config_ini(cdn_mathjax))
    shutil.copy(ROOT / 'd2l.bib', stage)
    shutil.copy(HERE / 'index.md', stage)
    shutil.copy(HERE / 'zreferences.md', stage / 'chapter_references')
    shutil.copy(HERE / 'book.css', stage)
    shutil.copytree(chapter.CHAPTER / 'img', stage / CHAPTER_DIR / 'img')
    stage_source(chapter.CHAPTER / 'index.md', stage)
    executed = []
    for path in chapter.sections():
        stage_source(path, stage)
        executed.append(stage_notebook(path, stage))
    return executed


def referenced(html_dir):
    """Every local file that a page or a style sheet of the book loads."""
    pattern = re.compile(r'''(?:src|href)=["']([^"'#?]+)|url\(["']?'''
                         r'''([^"')#?]+)''')
    seen, todo = set(), list(html_dir.rglob('*.html'))
    while todo:
        page = todo.pop()
        seen.add(page)
        for match in pattern.finditer(page.read_text(errors='ignore')):
            link = (match.group(1) or match.group(2)).strip()
            if re.match(r'[a-z]+:', link):
                continue  # another site, or a data: URL
            target = (page.parent / link).resolve()
            if target.is_file() and target not in seen and \
                    target.suffix in ('.css', '.html'):
                todo.append(target)
            seen.add(target)
    return seen


def fallback_font(path):
    """A font in an older format beside its WOFF2, which every current browser
    loads instead."""
    return path.suffix in ('.eot', '.ttf', '.woff', '.svg') and \
        path.with_suffix('.woff2').exists()


def prune(html_dir):
    """Delete what the theme and MathJax ship that no page loads: files
    that nothing references, and fonts in fallback formats. MathJax loads
    its fonts itself; they are kept."""
    keep = referenced(html_dir)
    mathjax = html_dir / '_static' / 'mathjax'
    for path in sorted((html_dir / '_static').rglob('*'), reverse=True):
        relative = path.relative_to(mathjax).as_posix() if \
            mathjax in path.parents else None
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif fallback_font(path) or path.resolve() not in keep and not (
                relative and relative.startswith(MATHJAX_KEEP)):
            path.unlink()
    for name in ['.buildinfo', 'objects.inv']:
        (html_dir / name).unlink(missing_ok=True)


def offline_scripts(html_dir):
    """d2lbook's d2l.js loads Google Analytics (with an empty tracking id)
    and the copy button's icon from GitHub: drop the one, inline the
    other, so that no page sends a request off the machine."""
    from d2lbook.sphinx_template import google_tracker
    tracker = google_tracker.replace('GOOGLE_ANALYTICS_TRACKING_ID', '')
    script = html_dir / '_static' / 'd2l.js'
    text = script.read_text()
    if tracker not in text or COPY_ICON not in text:
        sys.exit(f"{script} is not what book/build.py expects of d2lbook "
                 "1.0.3: check book/constraints.txt's d2lbook pin")
    script.write_text(text.replace(tracker, '').replace(COPY_ICON,
                                                        COPY_ICON_INLINE))


def size(folder):
    """The bytes of all files under a folder."""
    return sum(p.stat().st_size for p in folder.rglob('*') if p.is_file())


def build(stage=STAGE, cdn_mathjax=False):
    """Build the book into stage/_build/html; returns that folder."""
    if sys.version_info >= (3, 13):
        sys.exit("d2lbook's Sphinx 5.3 needs Python 3.12 or older (it "
                 'imports imghdr): `make book` sets up .book-venv with '
                 'python3.11')
    if not shutil.which('pandoc'):
        sys.exit('d2lbook needs pandoc: install it (Debian/Ubuntu: '
                 'apt-get install pandoc; macOS: brew install pandoc)')
    start = time.time()
    executed = stage_book(stage, cdn_mathjax)
    bin_dir = Path(sys.executable).parent  # d2lbook and sphinx-build
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    subprocess.run([str(bin_dir / 'd2lbook'), 'build', 'html'], cwd=stage,
                   env=env, check=True)
    html = stage / '_build' / 'html'
    (html / 'notebooks').mkdir()
    for path in executed:
        shutil.copy(path, html / 'notebooks')
    shutil.copy(HERE / 'colab-badge.svg', html / '_static')
    offline_scripts(html)
    prune(html)
    summary = {'seconds': round(time.time() - start, 1), 'bytes': size(html),
               'pages': len(list(html.rglob('*.html')))}
    (stage / 'summary.json').write_text(json.dumps(summary) + '\n')
    print(f"{html / 'index.html'}: {summary['pages']} pages, "
          f"{summary['bytes'] / 2**20:.1f} MiB, built in "
          f"{summary['seconds']:.0f} s")
    return html


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--into', type=Path, default=STAGE,
                        help='staging folder (default: build/book)')
    parser.add_argument('--cdn-mathjax', action='store_true',
                        help="load MathJax from Sphinx's CDN (the browser "
                        'test shows that this fails offline)')
    args = parser.parse_args()
    build(args.into.resolve(), args.cdn_mathjax)
