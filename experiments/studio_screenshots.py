r"""Screenshots of the studio's pages for the docs (docs/studio_evolve.png, studio_harmonize.png).

  python -m experiments.studio_screenshots --musicvae_workdir=runs/mel_2bar_small

Starts the studio on a free loopback port in this process, drives Debian's Chromium with
Playwright (the test extra; `make browser-deps` installs Chromium): a few generations on Evolve
with two melodies liked, and the bundled example melody harmonized on Harmonize.
"""

from __future__ import annotations

import logging as pylogging
import os
import threading

from absl import flags
from absl import logging

from common.errors import UserError
from experiments import cli

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']

_MUSICVAE_WORKDIR = flags.DEFINE_string('musicvae_workdir', None, 'Trained MusicVAE run '
                                        '(default: pretrained/mel_2bar_small).')
_COCONET_WORKDIR = flags.DEFINE_string('coconet_workdir', None, 'Trained Coconet run '
                                       '(default: pretrained/coconet_small).')
_OUT_DIR = flags.DEFINE_string('out_dir', 'docs', 'Where the PNG files go.')
_GENERATIONS = flags.DEFINE_integer('generations', 2, 'Generations to breed before the shot.')
_GIBBS_STEPS = flags.DEFINE_integer('gibbs_steps', 64, 'Gibbs steps for the harmonization.')
_SEED = flags.DEFINE_integer('seed', 1, 'Seed of the studio sessions.')


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  pylogging.getLogger('werkzeug').setLevel(pylogging.WARNING)  # no line per request
  try:
    from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError('studio_screenshots needs playwright: pip install -e ".[test]"') from None
  if not os.access(CHROMIUM, os.X_OK):
    raise UserError(f'studio_screenshots needs {CHROMIUM}: make browser-deps')
  from studio import app as app_lib  # pylint: disable=g-import-not-at-top
  from studio import engine  # pylint: disable=g-import-not-at-top
  models = engine.load_models(_MUSICVAE_WORKDIR.value or engine.DEFAULT_MUSICVAE_WORKDIR,
                              _COCONET_WORKDIR.value or engine.DEFAULT_COCONET_WORKDIR,
                              musicvae_required=bool(_MUSICVAE_WORKDIR.value),
                              coconet_required=bool(_COCONET_WORKDIR.value))
  settings = app_lib.StudioSettings(default_gibbs_steps=_GIBBS_STEPS.value)
  app = app_lib.create_app(models, settings, seed=_SEED.value)
  server = app_lib.make_server(app, '127.0.0.1', 0)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = f'http://127.0.0.1:{server.server_port}'
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  try:
    with sync_playwright() as playwright:
      browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
      page = browser.new_page(viewport={'width': 1280, 'height': 860})
      page.set_default_timeout(300_000)

      page.goto(f'{url}/evolve')
      if models.musicvae is not None:
        page.wait_for_selector('.card canvas')
        for generation in range(1, _GENERATIONS.value + 1):
          page.check('.card[data-index="1"] input.like')
          page.check('.card[data-index="5"] input.like')
          page.click('#next')
          page.wait_for_selector(f'#generation[data-generation="{generation}"]')
        page.check('.card[data-index="0"] input.like')
        page.check('.card[data-index="3"] input.like')
      else:
        page.wait_for_selector('#unavailable:not([hidden])')
      path = os.path.join(_OUT_DIR.value, 'studio_evolve.png')
      page.screenshot(path=path, full_page=True)
      print(f'wrote {path}')

      page.goto(f'{url}/harmonize')
      page.wait_for_selector('#grid .cell')
      page.click('#example')
      page.wait_for_selector('#grid .cell.on')
      page.click('#harmonize')
      page.wait_for_function('() => { const img = document.getElementById("roll");'
                             ' return img.complete && img.naturalWidth > 0; }')
      path = os.path.join(_OUT_DIR.value, 'studio_harmonize.png')
      page.screenshot(path=path, full_page=True)
      print(f'wrote {path}')
      browser.close()
  finally:
    server.shutdown()
    server.server_close()


if __name__ == '__main__':
  cli.run(main)
