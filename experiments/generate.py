r"""Generates music with a trained model: loads --workdir's config.json and latest checkpoint.

  python -m experiments.generate --workdir=runs/coconet_small --task=harmonize \
      --pitches="67,67,69,71,72,71,69,67" --steps_per_note=4 --out_dir=out/ --num_samples=3
  python -m experiments.generate --workdir=runs/coconet_small --task=harmonize \
      --melody=tune.mid --transpose --wav --png --programs=piano
  python -m experiments.generate --workdir=runs/coconet_small --task=generate --num_steps=64

Dispatch: the run's config.task names the model package; `<task>/sample.py` provides
`generate_from_flags(model, config, options: dict) -> list[str]` (the paths it wrote), where
`options` holds this file's flag values by name. A model adds its own --task values there.
"""

from __future__ import annotations

import importlib
from typing import Any

from absl import flags

from common import training
from common.errors import UserError
from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (config.json + checkpoints).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_TASK = flags.DEFINE_string('task', 'harmonize',
                            'What to generate. coconet: harmonize|generate|complete|revoice|'
                            'upsample (complete/revoice/upsample take a 4-part --melody file).')
_MELODY = flags.DEFINE_string('melody', None, 'Input file: .mid/.midi/.xml/.musicxml/.mxl.')
_PITCHES = flags.DEFINE_string('pitches', None,
                               'Melody as comma-separated MIDI pitches, "r" for a rest.')
_STEPS_PER_NOTE = flags.DEFINE_integer('steps_per_note', 4,
                                       '16th steps per --pitches note (4 = quarter notes).')
_NUM_STEPS = flags.DEFINE_integer('num_steps', None,
                                  'Length in 16th steps (generate), or crop of the input piece.')
_OUT_DIR = flags.DEFINE_string('out_dir', 'out', 'Where outputs are written.')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 1, 'Samples to generate.')
_GIBBS_STEPS = flags.DEFINE_integer('gibbs_steps', None,
                                    'Gibbs steps (default: the model\'s own default).')
_TEMPERATURE = flags.DEFINE_float('temperature', None, 'Sampling temperature (default per model).')
_TRANSPOSE = flags.DEFINE_bool('transpose', False,
                               'Shift a melody out of the model\'s range by whole octaves.')
_WAV = flags.DEFINE_bool('wav', False, 'Also write WAV audio.')
_PNG = flags.DEFINE_bool('png', False, 'Also write a piano-roll PNG.')
_PROGRAMS = flags.DEFINE_string('programs', 'choir', 'Instruments: choir|piano|organ|strings|...')
_QPM = flags.DEFINE_float('qpm', None, 'Tempo of the written MIDI in quarter notes per minute.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
flags.mark_flags_as_required(['workdir'])


def parse_pitches(text: str | None) -> list[int | None] | None:
  """'60,62,r,64' -> [60, 62, None, 64]; UserError on anything else."""
  if not text:
    return None
  out: list[int | None] = []
  for token in text.replace(' ', '').split(','):
    if token.lower() in ('r', 'rest', '-', ''):
      out.append(None)
      continue
    try:
      out.append(int(token))
    except ValueError:
      raise UserError(
          f'--pitches: {token!r} is not a MIDI pitch number (or "r" for a rest)') from None
    if not 0 <= out[-1] <= 127:
      raise UserError(f'--pitches: {token} is outside MIDI 0..127')
  return out


def load_run(workdir: str, step: int | None = None) -> tuple[Any, Any]:
  """(config, model in eval mode) of a training workdir; UserError if it has none."""
  config = training.read_config(workdir)
  model = training.load_model(training.get_task(config), config, workdir, step)
  return config, model


def options_from_flags() -> dict[str, Any]:
  return dict(task=_TASK.value, melody=_MELODY.value, pitches=parse_pitches(_PITCHES.value),
              steps_per_note=_STEPS_PER_NOTE.value, num_steps=_NUM_STEPS.value,
              out_dir=_OUT_DIR.value, num_samples=_NUM_SAMPLES.value,
              gibbs_steps=_GIBBS_STEPS.value, temperature=_TEMPERATURE.value,
              transpose=_TRANSPOSE.value, wav=_WAV.value, png=_PNG.value,
              programs=_PROGRAMS.value, qpm=_QPM.value, seed=_SEED.value)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise flags.UsageError(f'unexpected arguments: {argv[1:]}')
  options = options_from_flags()  # parse flags before the (slow) checkpoint load
  config, model = load_run(_WORKDIR.value, _STEP.value)
  sampler = importlib.import_module(f'{config.task}.sample')
  if not hasattr(sampler, 'generate_from_flags'):
    raise UserError(f'{config.task} has no command-line generation ({config.task}/sample.py '
                    'defines no generate_from_flags)')
  for path in sampler.generate_from_flags(model, config, options):
    print(path)


if __name__ == '__main__':
  cli.run(main)
