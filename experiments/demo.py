r"""The main job in one command (`make demo`): every model makes music from the shipped checkpoints.

  python -m experiments.demo                      # writes out/demo/<model>/*.mid, *.wav, *.png
  python -m experiments.demo --melody=my_tune.mid --out_dir=out/mine --num_samples=3
  python -m experiments.demo --models=coconet,musicvae

Coconet harmonizes a bundled melody in the style of Bach; MusicVAE samples melodies and
interpolates between two bundled ones; PianoNet continues Coconet's first harmonization as
piano; the Compound Word Transformer writes a short pop-piano piece. Checkpoints come from
pretrained/ (each has a MODEL_CARD.md). Without pretrained/coconet_small, a small Coconet is first
trained on the Bach chorales that music21 bundles (no download, a few minutes on a 2-core CPU) and
kept in runs/demo_coconet; the other models are skipped, with a note, when theirs are missing.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import flags
from absl import logging

from experiments import cli
from experiments import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(REPO, 'pretrained', 'coconet_small')


def _pianonet_folder() -> str:
  """PianoNet: the original's released model (r5p3) when it ships, else the small one."""
  released = os.path.join(REPO, 'pretrained', 'pianonet_paper', 'checkpoints')
  return 'pianonet_paper' if os.path.isdir(released) else 'pianonet_small'


PRETRAINED_OTHERS = {name: os.path.join(REPO, 'pretrained', folder) for name, folder in (
    ('musicvae', 'mel_2bar_small'), ('pianonet', _pianonet_folder()),
    ('cpword', 'cpword_small'))}
DEFAULT_MELODY = os.path.join(REPO, 'assets', 'ode_to_joy.mid')
SECOND_MELODY = os.path.join(REPO, 'assets', 'twinkle.mid')
MODELS = ('coconet', 'musicvae', 'pianonet', 'cpword')

_MELODY = flags.DEFINE_string('melody', DEFAULT_MELODY, 'Melody to harmonize (MIDI or MusicXML).')
_OUT_DIR = flags.DEFINE_string('out_dir', os.path.join('out', 'demo'), 'Output folder.')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 2, 'Harmonizations to write.')
_WORKDIR = flags.DEFINE_string('workdir', os.path.join('runs', 'demo_coconet'),
                               'Where the fallback model is trained when no pretrained one ships.')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 600, 'Steps of the fallback training.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_MODELS = flags.DEFINE_multi_enum('models', list(MODELS), MODELS, 'Which models to run.')
_PIANO_SECONDS = flags.DEFINE_float('piano_seconds', 8.0, 'PianoNet: seconds to add.')
_CP_WORDS = flags.DEFINE_integer('cp_words', 384, 'CP-word: words in the generated piece.')


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
  if os.path.isdir(os.path.join(PRETRAINED, 'checkpoints')):
    print(f'Using the pretrained Coconet in {PRETRAINED}')
    return PRETRAINED
  config = _fallback_config(_TRAIN_STEPS.value)
  print(f'No pretrained Coconet ships with this checkout: training a small one on the Bach '
        f'chorales bundled with music21 for {config.num_train_steps} steps (a few minutes on a '
        f'2-core CPU; kept in {_WORKDIR.value} for next time).', flush=True)
  start = time.perf_counter()
  from common import training  # pylint: disable=g-import-not-at-top
  training.train_and_evaluate(registry.get_task(config), config, _WORKDIR.value)
  print(f'Trained in {time.perf_counter() - start:.0f} s.')
  return _WORKDIR.value


def _generate(workdir: str, out_dir: str, **request: Any) -> list[str]:
  """What `python -m experiments.generate` does: one Request to the model of `workdir`."""
  from common import generation  # pylint: disable=g-import-not-at-top
  from common import midi  # pylint: disable=g-import-not-at-top
  paths = request.pop('inputs', ())
  return registry.generate_files(
      workdir, generation.Request(inputs=tuple(midi.read_music(p) for p in paths),
                                  input_names=tuple(paths), seed=_SEED.value, **request),
      out_dir, wav=True, png=True)


def harmonize(out_dir: str) -> list[str]:
  """Coconet: harmonizations of --melody (choir), MIDI + WAV + PNG."""
  workdir = coconet_workdir()
  print(f'Coconet: harmonizing {_MELODY.value} ({_NUM_SAMPLES.value} versions, annealed Gibbs '
        'sampling)...', flush=True)
  return _generate(workdir, out_dir, task='harmonize', inputs=[_MELODY.value],
                   num_samples=_NUM_SAMPLES.value, transpose=True, programs='choir')


def musicvae_melodies(workdir: str, out_dir: str) -> list[str]:
  """MusicVAE: 4 melodies from the prior and 5 steps between two bundled melodies' first bars."""
  print('MusicVAE: sampling 4 two-bar melodies and interpolating between the openings of '
        f'{os.path.basename(DEFAULT_MELODY)} and {os.path.basename(SECOND_MELODY)}...', flush=True)
  return (_generate(workdir, out_dir, task='sample', num_samples=4) +
          _generate(workdir, out_dir, task='interpolate', num_samples=5,
                    inputs=[DEFAULT_MELODY, SECOND_MELODY]))


def piano_continuation(workdir: str, seed_midi: str, out_dir: str) -> list[str]:
  """PianoNet: continues the opening of `seed_midi` by --piano_seconds."""
  print(f'PianoNet: continuing the opening of {seed_midi} by {_PIANO_SECONDS.value:g} s...',
        flush=True)
  return _generate(workdir, out_dir, inputs=[seed_midi], seconds=_PIANO_SECONDS.value)


def pop_piano(workdir: str, out_dir: str) -> list[str]:
  """Compound Word Transformer: one short pop-piano piece."""
  print(f'CP-word: writing a pop-piano piece of {_CP_WORDS.value} compound words...', flush=True)
  return _generate(workdir, out_dir, length=_CP_WORDS.value, min_length=_CP_WORDS.value // 2)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  start = time.perf_counter()
  models = _MODELS.value
  written: dict[str, list[str]] = {}
  if 'coconet' in models:
    written['coconet'] = harmonize(os.path.join(_OUT_DIR.value, 'coconet'))
  for name in models:
    if name == 'coconet':
      continue
    workdir = PRETRAINED_OTHERS[name]
    if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
      print(f'{name}: skipped, no pretrained checkpoint in {workdir}')
      continue
    out_dir = os.path.join(_OUT_DIR.value, name)
    if name == 'musicvae':
      paths = musicvae_melodies(workdir, out_dir)
    elif name == 'pianonet':
      seeds = [p for p in written.get('coconet', []) if p.endswith('.mid')]
      paths = piano_continuation(workdir, seeds[0] if seeds else _MELODY.value, out_dir)
    else:
      paths = pop_piano(workdir, out_dir)
    written[name] = paths
  print(f'Wrote ({time.perf_counter() - start:.0f} s):')
  for name, paths in written.items():
    print(f'  {name}:')
    for path in paths:
      print(f'    {path}')
  print('Play a .wav file, open a .mid file in any MIDI player or DAW, or look at the .png piano '
        'rolls. To evolve melodies and harmonize your own tunes in a browser: '
        'python -m experiments.studio (then open http://127.0.0.1:8000). More: README.md.')


if __name__ == '__main__':
  cli.run(main)
