"""The studio in a real browser: Playwright drives Debian's Chromium against the real server
(a threaded WSGI server on a free loopback port, in a thread of this process).

Needs the playwright package (the test extra) and /usr/bin/chromium (`make browser-deps`);
skipped otherwise. Playwright's own browser download is never used.
"""

import os
import threading

import note_seq
import numpy as np
import pytest

from common import midi
from studio import app as app_lib

try:
  from playwright.sync_api import expect
  from playwright.sync_api import sync_playwright
except ImportError:  # the test extra is not installed
  sync_playwright = None

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
pytestmark = [
    pytest.mark.skipif(sync_playwright is None,
                       reason='the playwright package is missing (pip install -e ".[test]")'),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f'{CHROMIUM} is missing (make browser-deps, or apt-get install '
                              f'chromium)'),
]
# Grid columns (eighth notes) to click: (column, MIDI pitch).
MELODY = [(0, 72), (1, 71), (2, 69), (3, 67), (4, 69), (6, 71), (7, 72), (8, 74), (9, 76),
          (10, 74), (12, 72), (16, 67), (17, 69), (18, 71), (20, 72), (24, 76), (28, 72)]
GRID_STEPS = 32
# Set by a MutationObserver when the page is busy: a spinner text and disabled buttons.
WATCH_BUSY = '''() => {
  window.sawBusy = false;
  new MutationObserver(() => {
    const busy = document.body.classList.contains('busy');
    const status = document.getElementById('status').textContent;
    const buttons = Array.from(document.querySelectorAll('main button'));
    if (busy && status && buttons.every((b) => b.disabled)) window.sawBusy = true;
  }).observe(document.body, {attributes: true, childList: true, subtree: true});
}'''


@pytest.fixture(scope='module')
def server(studio_models):
  app = app_lib.create_app(studio_models, seed=0)
  httpd = app_lib.make_server(app, '127.0.0.1', 0)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{httpd.server_port}'
  httpd.shutdown()
  thread.join()
  httpd.server_close()


@pytest.fixture(scope='module')
def browser():
  with sync_playwright() as playwright:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser):
  context = browser.new_context(viewport={'width': 1280, 'height': 900}, accept_downloads=True)
  page = context.new_page()
  page.set_default_timeout(60_000)
  errors = []
  page.on('pageerror', lambda e: errors.append(str(e)))
  yield page
  context.close()
  assert not errors, f'JavaScript errors: {errors}'


def _downloaded_midi(page, selector: str):
  with page.expect_download() as info:
    page.click(selector)
  download = info.value
  assert download.suggested_filename.endswith('.mid')
  with open(download.path(), 'rb') as f:
    return note_seq.midi_io.midi_to_note_sequence(f.read())


def test_evolve_in_the_browser(page, server):
  page.goto(f'{server}/evolve')
  expect(page.locator('.card')).to_have_count(8)
  expect(page.locator('#next')).to_be_disabled()  # nothing selected yet
  page.evaluate(WATCH_BUSY)
  for generation in (1, 2, 3):
    page.check('.card[data-index="1"] input.like')
    page.click('.card[data-index="4"] canvas')  # a click on the piano roll selects too
    expect(page.locator('.card.liked')).to_have_count(2)
    expect(page.locator('#selection-count')).to_have_text('2 selected')
    if generation == 2:
      page.fill('#sigma', '0.3')
      expect(page.locator('#sigma-value')).to_have_text('0.30')
    page.click('#next')
    expect(page.locator('#generation')).to_have_text(f'Generation {generation}')
    expect(page.locator('.card')).to_have_count(8)
    expect(page.locator('.card.liked')).to_have_count(0)
  assert page.evaluate('window.sawBusy')
  expect(page.locator('#undo')).to_be_enabled()

  page.click('.card[data-index="2"] button.play')
  expect(page.locator('.card[data-index="2"]')).to_have_class('card playing')
  src = page.eval_on_selector('#player', 'audio => audio.src')
  assert '/out/' in src and src.endswith('.wav')
  response = page.request.get(src)  # the page's cookies: the same session
  assert response.status == 200 and response.headers['content-type'] == 'audio/wav'
  assert response.body()[:4] == b'RIFF'
  page.wait_for_function('() => document.getElementById("player").readyState >= 1')

  seq = _downloaded_midi(page, '.card[data-index="0"] a.midi')
  shown = page.evaluate('''() => fetch('/api/evolve').then((r) => r.json())
                           .then((s) => s.population[0].notes.map((n) => n.pitch))''')
  assert [n.pitch for n in seq.notes] == shown

  page.click('#undo')
  expect(page.locator('#generation')).to_have_text('Generation 2')


def test_an_expired_session_is_said_once(page, server):
  page.context.add_cookies([dict(name=app_lib.COOKIE, value='A' * 32, url=server)])
  page.goto(f'{server}/evolve')
  expect(page.locator('.card')).to_have_count(8)
  expect(page.locator('#notice')).to_contain_text('session had expired')
  page.check('.card[data-index="0"] input.like')
  page.click('#next')
  expect(page.locator('#generation')).to_have_text('Generation 1')
  expect(page.locator('#notice')).to_be_hidden()


def test_harmonize_in_the_browser(page, server):
  page.goto(f'{server}/harmonize')
  cells = page.locator('#grid .cell')
  expect(cells).to_have_count(GRID_STEPS * 22)
  expect(page.locator('#harmonize')).to_be_disabled()  # empty melody
  cell = '#grid .cell[data-step="{}"][data-pitch="{}"]'
  page.click(cell.format(5, 60))  # a note, then the same click removes it
  page.click(cell.format(5, 60))
  expect(page.locator('#grid .cell.on')).to_have_count(0)
  for step, pitch in MELODY:
    page.click(cell.format(step, pitch))
  expect(page.locator('#grid .cell.on')).to_have_count(len(MELODY))
  page.select_option('#gibbs', '8')
  page.evaluate(WATCH_BUSY)
  with page.expect_response(lambda r: r.url.endswith('/api/harmonize')) as info:
    page.click('#harmonize')
  assert info.value.status == 200
  result = info.value.json()
  assert page.evaluate('window.sawBusy')

  columns = [None] * GRID_STEPS
  for step, pitch in MELODY:
    columns[step] = pitch
  want = [p for p in columns for _ in range(2)]  # eighth-note columns -> 16th steps
  assert [row[0] for row in result['voices']] == want
  assert result['gibbs_steps'] == 8
  expect(page.locator('#result')).to_be_visible()
  page.wait_for_function('() => { const img = document.getElementById("roll");'
                         ' return img.complete && img.naturalWidth > 0; }')
  expect(page.locator('#harmonize')).to_be_enabled()

  seq = midi.quantize(_downloaded_midi(page, '#download'), 4)
  soprano = np.full(len(want), np.nan)
  for note in seq.notes:
    if note.instrument == 0:
      soprano[note.quantized_start_step:note.quantized_end_step] = note.pitch
  np.testing.assert_array_equal(soprano, [np.nan if p is None else p for p in want])
  assert len({n.instrument for n in seq.notes}) == 4

  page.click('#play')
  src = page.eval_on_selector('#player', 'audio => audio.src')
  assert page.request.get(src).headers['content-type'] == 'audio/wav'
