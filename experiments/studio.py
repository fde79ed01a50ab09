r"""The studio: a local web app to evolve MusicVAE melodies and harmonize melodies with Coconet.

  python -m experiments.studio                              # http://127.0.0.1:8000/
  python -m experiments.studio --port=8080 --musicvae_workdir=runs/mel_2bar_small \
      --coconet_workdir=pretrained/coconet_small

Evolve needs a trained MusicVAE (default pretrained/mel_2bar_small; without one the page says so
and Harmonize still works). Harmonize uses the shipped pretrained/coconet_small. More in
docs/studio.md. Binds to 127.0.0.1: only this computer can reach it unless --host says otherwise.
At most --max_sessions sessions stay in memory; idle ones are spilled to --session_dir.
"""

from __future__ import annotations

import ipaddress

from absl import flags
from absl import logging

from experiments import cli
from musicvae import evolve

_PORT = flags.DEFINE_integer('port', 8000, 'TCP port (0: any free port).')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to bind. Anything but a loopback '
                            'address lets other computers use the studio.')
_MUSICVAE_WORKDIR = flags.DEFINE_string(
    'musicvae_workdir', None, 'Trained MusicVAE run for the Evolve page (default: '
    'pretrained/mel_2bar_small when it exists; "" leaves Evolve off).')
_COCONET_WORKDIR = flags.DEFINE_string(
    'coconet_workdir', None, 'Trained Coconet run for the Harmonize page (default: '
    'pretrained/coconet_small; "" leaves Harmonize off).')
_POPULATION = flags.DEFINE_integer('population_size', 8, 'Melodies per generation.')
_SIGMA = flags.DEFINE_float('sigma', 0.5, 'Initial mutation strength (the slider, 0..1).')
_CROSSOVER = flags.DEFINE_enum('crossover', 'uniform', list(evolve.CROSSOVERS),
                               'How two parents mix.')
_NUM_FOREIGN = flags.DEFINE_integer('num_foreign', 2, 'Fresh random melodies per generation.')
_KEEP_SELECTED = flags.DEFINE_enum(
    'keep_selected', 'mutated', list(evolve.KEEP_SELECTED),
    'What becomes of the melodies you pick: kept and mutated with the children (the write-up\'s '
    'Deep Interactive Evolution), kept unchanged (elites), or replaced by their children.')
_ELITISM = flags.DEFINE_bool('elitism', False, 'The same as --keep_selected=unchanged.')
_TEMPERATURE = flags.DEFINE_float('temperature', None, 'MusicVAE decoding temperature (default: '
                                  'the config\'s sample.temperature).')
_GIBBS_STEPS = flags.DEFINE_integer('gibbs_steps', 64, 'Default Gibbs steps on Harmonize.')
_SEED = flags.DEFINE_integer('seed', None, 'Seed for the sessions\' random draws (default: '
                             'random).')
_MAX_SESSIONS = flags.DEFINE_integer(
    'max_sessions', 64, 'Sessions kept in memory at once; beyond that, sessions that never came '
    'back are dropped first, then idle ones are spilled to --session_dir (docs/studio.md).')
_SESSION_DIR = flags.DEFINE_string(
    'session_dir', None, 'Folder for spilled sessions; sessions left there at Ctrl+C are found '
    'again after a restart (default: a temporary folder, deleted at exit).')
_ACTIVE_SESSION_MINUTES = flags.DEFINE_float(
    'active_session_minutes', 15.0, 'A session used within this many minutes is never pushed '
    'out of memory by a new one.')
_WARMUP = flags.DEFINE_bool('warmup', True, 'Compile the models before serving, so that the '
                            'first page view is quick.')


def _is_loopback(host: str) -> bool:
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise flags.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  from studio import app as app_lib  # pylint: disable=g-import-not-at-top
  from studio import engine  # pylint: disable=g-import-not-at-top
  musicvae_workdir = _MUSICVAE_WORKDIR.value
  coconet_workdir = _COCONET_WORKDIR.value
  print('Loading models...', flush=True)
  models = engine.load_models(
      engine.DEFAULT_MUSICVAE_WORKDIR if musicvae_workdir is None else musicvae_workdir,
      engine.DEFAULT_COCONET_WORKDIR if coconet_workdir is None else coconet_workdir,
      musicvae_required=bool(musicvae_workdir), coconet_required=bool(coconet_workdir),
      temperature=_TEMPERATURE.value)
  for loaded, message in ((models.musicvae, models.musicvae_message),
                          (models.coconet, models.coconet_message)):
    print(f'  {loaded.workdir}' if loaded else f'  {message}', flush=True)
  settings = app_lib.StudioSettings(
      population_size=_POPULATION.value, sigma=_SIGMA.value, crossover=_CROSSOVER.value,
      num_foreign=_NUM_FOREIGN.value, keep_selected=_KEEP_SELECTED.value,
      elitism=_ELITISM.value,
      default_gibbs_steps=_GIBBS_STEPS.value)
  loopback = _is_loopback(_HOST.value)
  app = app_lib.create_app(models, settings, seed=_SEED.value, max_sessions=_MAX_SESSIONS.value,
                           trusted_hosts=app_lib.LOOPBACK_HOSTS if loopback else None,
                           session_dir=_SESSION_DIR.value or None,
                           active_session_minutes=_ACTIVE_SESSION_MINUTES.value)
  if not loopback:
    print(f'Warning: listening on {_HOST.value}: other computers on the network can use the '
          f'studio (and its CPU).', flush=True)
  if _WARMUP.value:
    print('Compiling the models (once)...', flush=True)
    engine.warm_up(models, settings.population_size, settings.default_gibbs_steps)
  app_lib.serve(app, _HOST.value, _PORT.value)


if __name__ == '__main__':
  cli.run(main)
