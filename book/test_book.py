"""The built book in a real browser: Playwright drives Debian's Chromium.

    .book-venv/bin/pytest book    # run by `make book-test`, after `make book`

Every page is opened with every request that is not to the local server
refused. A page passes when it raised no JavaScript error and made no
refused or failed request; its math is typeset with no MathJax error;
every image loaded; no :cite:, :numref: or :label: text is left and every
cross-reference resolved; and every internal link lands on a file and an
anchor that exist. A screenshot of each page is saved under
build/book/screenshots/. The last two tests show that the checks fail when
they should: on a page with each defect, and on a build with the CDN
MathJax.
"""
import functools
import http.server
import os
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

import build

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
CHROMIUM_FLAGS = ['--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-sync',
                  '--disable-component-update']
CITATION = re.compile(r':cite[pt]?:`([^`]+)`')
LEFTOVER_MARKUP = re.compile(r':(?:cite|citet|citep|numref|label|eqref|'
                             r'eqlabel|ref):`?')
PAGE_STATE = """() => {
  const math = document.querySelectorAll('.math');
  return {
    math: math.length,
    typeset: [...math].filter(e => e.querySelector('mjx-container')).length,
    mathErrors: document.querySelectorAll('mjx-merror').length,
    images: [...document.images].map(img => img.src),
    citations: document.querySelectorAll('.citation').length,
    brokenImages: [...document.images].filter(
        img => !img.complete || img.naturalWidth === 0).map(img => img.src),
    unresolved: [...document.querySelectorAll('.xref')].filter(
        e => !e.closest('a')).map(e => e.textContent),
    text: document.body.innerText,
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id], a[name]')].map(
        e => e.id || e.name),
    clipped: [...document.querySelectorAll('.page-content pre')].filter(
        e => e.scrollWidth > e.clientWidth + 1).map(
        e => e.textContent.split('\\n').reduce(
            (a, b) => b.length > a.length ? b : a, '')),
    height: Math.max(...[document.body, ...document.querySelectorAll(
        '.mdl-layout__content')].map(e => e.scrollHeight)),
  };
}"""


def serve(folder):
    """An HTTP server for `folder` on a free local port, in a thread."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f'http://127.0.0.1:{server.server_port}/'


@pytest.fixture(scope='module')
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f'no Chromium at {CHROMIUM}: install it (Debian: '
                    'apt-get install chromium) or set CHROMIUM')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def visit(browser, base, path, screenshot=None):
    """Open one page offline; returns its state and the problems seen
    while it loaded."""
    context = browser.new_context(viewport={'width': 1280, 'height': 900})
    problems = []

    def only_local(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            problems.append(f'request refused: {route.request.url}')
            route.abort()

    context.set_default_timeout(120_000)  # slow machines, busy CI
    context.route('**/*', only_local)
    page = context.new_page()
    page.on('pageerror', lambda error: problems.append(
        f'JavaScript error: {error}'))
    page.on('response', lambda response: response.status >= 400 and
            problems.append(f'HTTP {response.status}: {response.url}'))
    page.goto(base + path, wait_until='load')
    page.wait_for_load_state('networkidle')
    if page.evaluate('() => !!(window.MathJax && MathJax.startup)'):
        page.evaluate('() => MathJax.startup.promise')
    state = page.evaluate(PAGE_STATE)
    if screenshot:  # the whole page: the theme scrolls an inner box
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({'width': 1280,
                                'height': min(state['height'], 30_000)})
        page.screenshot(path=str(screenshot))
    context.close()
    return state, problems


def page_problems(state, problems):
    """What is wrong with a page, from its state in the browser."""
    problems = list(problems)
    if state['typeset'] < state['math'] or state['mathErrors']:
        problems.append(f"math: {state['typeset']} of {state['math']} "
                        f"typeset, {state['mathErrors']} MathJax errors")
    problems += [f'image not loaded: {src}' for src in state['brokenImages']]
    problems += [f'unresolved reference: {text}'
                 for text in state['unresolved']]
    problems += [f'markup left: {m.group()}'
                 for m in LEFTOVER_MARKUP.finditer(state['text'])]
    problems += [f'clipped, wider than the column: {line.strip()[:60]}'
                 for line in state['clipped']]
    return problems


def link_problems(states, base, folder):
    """Internal links whose file or anchor does not exist."""
    problems = []
    for path, state in states.items():
        for link in state['links']:
            url, anchor = urldefrag(link)
            if not url.startswith(base):
                continue  # another site: not loaded with the page
            target = unquote(urlparse(url).path).lstrip('/') or 'index.html'
            if target.endswith('/'):
                target += 'index.html'
            if not (folder / target).is_file():
                problems.append(f'{path}: link to missing {target}')
            elif anchor and target.endswith('.html') and \
                    anchor not in states[target]['ids']:
                problems.append(f'{path}: link to missing {target}#{anchor}')
    return problems


def check_book(browser, folder, screenshots=None):
    """Visit every page of a built book; returns its problems by page."""
    server, base = serve(folder)
    try:
        states, problems = {}, {}
        for page in sorted(folder.rglob('*.html')):
            path = page.relative_to(folder).as_posix()
            shot = screenshots / path.replace('/', '__').replace(
                '.html', '.png') if screenshots else None
            states[path], seen = visit(browser, base, path, shot)
            problems[path] = page_problems(states[path], seen)
        problems['links'] = link_problems(states, base, folder)
    finally:
        server.shutdown()
    return {page: found for page, found in problems.items() if found}


@pytest.fixture(scope='module')
def book():
    html = build.STAGE / '_build' / 'html'
    if not (html / 'index.html').exists():
        pytest.fail(f'{html} has no book: run `make book` first')
    return html


def test_every_page(browser, book):
    problems = check_book(browser, book, build.STAGE / 'screenshots')
    assert not problems


def test_sections_figures_and_references(browser, book):
    """Every section has its page, with its figures, plots and links; the
    references page lists every work that the chapter cites."""
    sections = [path.stem for path in build.chapter.sections()]
    cited = {key.strip() for path in build.chapter.CHAPTER.glob('*.md')
             for keys in CITATION.findall(path.read_text())
             for key in keys.split(',')}
    server, base = serve(book)
    try:
        states = {name: visit(browser, base,
                              f'{build.CHAPTER_DIR}/{name}.html')[0]
                  for name in sections}
        references, _ = visit(browser, base,
                              'chapter_references/zreferences.html')
    finally:
        server.shutdown()
    for name, state in states.items():
        assert any(link.endswith(f'/notebooks/{name}.ipynb')
                   for link in state['links']), name
        assert any(link.startswith('https://colab.research.google.com/')
                   and link.endswith(f'/notebooks/{name}.ipynb')
                   for link in state['links']), name
    assert states['lora']['math'] > 10
    assert any(src.endswith('/lora.svg') for src in states['lora']['images'])
    assert any('/output_comparison_' in src
               for src in states['comparison']['images'])
    assert references['citations'] == len(cited)


BROKEN_PAGE = """<!DOCTYPE html><html><head>
<script src="https://cdn.example.org/lib.js"></script></head><body>
<p>See :numref:`sec_lora`.</p>
<img src="missing.png">
<a href="other.html">a missing page</a> <a href="#nowhere">a missing anchor</a>
<span class="xref std std-ref">sec_nowhere</span>
<div class="page-content" style="width: 300px"><pre>xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx a line
far wider than its column</pre></div>
<script>undefinedFunction();</script>
</body></html>"""


def test_checks_fail_on_a_broken_page(browser, tmp_path):
    (tmp_path / 'index.html').write_text(BROKEN_PAGE)
    problems = check_book(browser, tmp_path)
    found = '\n'.join(problems['index.html'] + problems['links'])
    for expected in ['request refused: https://cdn.example.org/lib.js',
                     'JavaScript error', 'image not loaded',
                     'markup left: :numref:', 'unresolved reference',
                     'link to missing other.html',
                     'link to missing index.html#nowhere',
                     'clipped, wider than the column: ' + 'x' * 60]:
        assert expected in found


def test_cdn_mathjax_fails(browser):
    """Sphinx's default MathJax comes from a CDN: offline, no math is
    typeset and the page's request is refused."""
    html = build.build(build.ROOT / 'build' / 'book-cdn', cdn_mathjax=True)
    server, base = serve(html)
    try:
        state, seen = visit(browser, base, f'{build.CHAPTER_DIR}/lora.html')
    finally:
        server.shutdown()
    problems = '\n'.join(page_problems(state, seen))
    assert 'request refused: https://cdn.jsdelivr.net/' in problems
    assert f"math: 0 of {state['math']} typeset" in problems
