r"""The main job in one command: harmonize a bundled melody in the style of Bach (`make demo`).

  python -m experiments.demo                      # writes out/demo/*.mid, *.wav, *.png
  python -m experiments.demo --melody=my_tune.mid --out_dir=out/mine --num_samples=3

Uses the pretrained Coconet checkpoint in pretrained/coconet_small when the repository ships one;
otherwise it first trains a small Coconet on the Bach chorales that music21 bundles (no download,
a few minutes on a 2-core CPU) and keeps it in runs/demo_coconet for the next time.
"""

from __future__ import annotations

import os
import time

from absl import flags
from absl import logging

from common import training
from experiments import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(REPO, 'pretrained', 'coconet_small')
DEFAULT_MELODY = os.path.join(REPO, 'assets', 'ode_to_joy.mid')

_MELODY = flags.DEFINE_string('melody', DEFAULT_MELODY, 'Melody to harmonize (MIDI or MusicXML).')
_OUT_DIR = flags.DEFINE_string('out_dir', os.path.join('out', 'demo'), 'Output folder.')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 2, 'Harmonizations to write.')
_WORKDIR = flags.DEFINE_string('workdir', os.path.join('runs', 'demo_coconet'),
                               'Where the fallback model is trained when no pretrained one ships.')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 600, 'Steps of the fallback training.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')


def _fallback_config(num_steps: int):
  from coconet import configs  # pylint: disable=g-import-not-at-top
  config = configs.get_config('small')
  config.dataset = 'bach_music21'
  config.num_train_steps = num_steps
  config.log_every_steps = 50
  config.checkpoint_every_steps = 100
  config.eval_every_steps = 0
  config.sample_every_steps = 0
  return config


def coconet_workdir() -> str:
  """A workdir with a trained Coconet: the shipped one, or one trained here now."""
  if os.path.isdir(os.path.join(PRETRAINED, training.CHECKPOINT_DIR)):
    print(f'Using the pretrained Coconet in {PRETRAINED}')
    return PRETRAINED
  config = _fallback_config(_TRAIN_STEPS.value)
  print(f'No pretrained Coconet ships with this checkout: training a small one on the Bach '
        f'chorales bundled with music21 for {config.num_train_steps} steps (a few minutes on a '
        f'2-core CPU; kept in {_WORKDIR.value} for next time).', flush=True)
  start = time.perf_counter()
  training.train_and_evaluate(training.get_task(config), config, _WORKDIR.value)
  print(f'Trained in {time.perf_counter() - start:.0f} s.')
  return _WORKDIR.value


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  from coconet import sample  # pylint: disable=g-import-not-at-top
  workdir = coconet_workdir()
  config = training.read_config(workdir)
  model = training.load_model(training.get_task(config), config, workdir)
  print(f'Harmonizing {_MELODY.value} ({_NUM_SAMPLES.value} versions, annealed Gibbs sampling)...',
        flush=True)
  paths = sample.generate_from_flags(model, config, dict(
      task='harmonize', melody=_MELODY.value, out_dir=_OUT_DIR.value,
      num_samples=_NUM_SAMPLES.value, transpose=True, wav=True, png=True, programs='choir',
      seed=_SEED.value))
  print('Wrote:')
  for path in paths:
    print(f'  {path}')
  print('Play a .wav file, open a .mid file in any MIDI player or DAW, or look at the .png piano '
        'rolls. More: README.md (train, generate, evaluate for each model).')


if __name__ == '__main__':
  cli.run(main)
