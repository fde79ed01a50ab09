r"""Generates music with a trained model: loads --workdir's config.json and latest checkpoint.

  python -m experiments.generate --workdir=runs/coconet_small --task=harmonize \
      --pitches="67,67,69,71,72,71,69,67" --steps_per_note=4 --out_dir=out/ --num_samples=3
  python -m experiments.generate --workdir=runs/coconet_small --task=harmonize \
      --melody=tune.mid --transpose --wav --png --programs=piano
  python -m experiments.generate --workdir=runs/coconet_small --task=generate --num_steps=64

  python -m experiments.generate --workdir=runs/pianonet_small --melody=seed.mid --seconds=10 --wav
  python -m experiments.generate --workdir=runs/musicvae_mel2 --task=interpolate \
      --inputs=a.mid,b.mid --num_samples=7 --png
  python -m experiments.generate --workdir=runs/cpword_small --num_samples=2 --num_steps=512
  python -m experiments.generate --workdir=runs/cpword_emotion --emotion=Q1 --num_samples=2

Dispatch: the run's config.task names the model package. Coconet and cpword provide
`generate_from_flags(model, config, options: dict) -> list[str]` (the paths written) in
`<task>/sample.py`; PianoNet and MusicVAE provide `generate_main(config, workdir, ...)`.
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
_TASK = flags.DEFINE_string('task', None,
                            'What to generate. coconet: harmonize (default)|generate|complete|'
                            'revoice|upsample (complete/revoice/upsample take a 4-part --melody '
                            'file); musicvae: sample (default)|reconstruct|interpolate|attribute.')
_SECONDS = flags.DEFINE_float('seconds', 10.0, 'pianonet: seconds of music to generate after the '
                              'seed (--melody is the seed MIDI; none = silence).')
_INPUTS = flags.DEFINE_list('inputs', [], 'musicvae: input MIDI/MusicXML files.')
_ATTRIBUTE = flags.DEFINE_string('attribute', None, 'musicvae --task=attribute: which attribute.')
_ATTRIBUTE_SCALE = flags.DEFINE_float('attribute_scale', 1.5, 'musicvae: attribute vector scale.')
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
_EMOTION = flags.DEFINE_enum('emotion', None, ['Q1', 'Q2', 'Q3', 'Q4'],
                             'cpword trained with emotion (configs.py:small,emotion): the EMOPIA '
                             'quadrant to condition on (Q1 happy, Q2 tense, Q3 sad, Q4 calm).')
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


def options_from_flags() -> dict[str, Any]:
  # Counts below 1 would reach numpy as negative array sizes (a traceback) or crop from the end.
  if _NUM_SAMPLES.value < 1:
    raise UserError(f'--num_samples must be >= 1, got {_NUM_SAMPLES.value}')
  if _NUM_STEPS.value is not None and _NUM_STEPS.value < 1:
    raise UserError(f'--num_steps must be >= 1, got {_NUM_STEPS.value}')
  return dict(task=_TASK.value, melody=_MELODY.value, pitches=parse_pitches(_PITCHES.value),
              steps_per_note=_STEPS_PER_NOTE.value, num_steps=_NUM_STEPS.value,
              out_dir=_OUT_DIR.value, num_samples=_NUM_SAMPLES.value,
              gibbs_steps=_GIBBS_STEPS.value, temperature=_TEMPERATURE.value,
              transpose=_TRANSPOSE.value, wav=_WAV.value, png=_PNG.value,
              programs=_PROGRAMS.value, qpm=_QPM.value, seed=_SEED.value,
              emotion=_EMOTION.value)


def _generate_with_main(config: Any, options: dict[str, Any]) -> list[str]:
  """PianoNet and MusicVAE load their own checkpoint; MIDI out, WAV/PNG rendered here."""
  workdir, step, out_dir = _WORKDIR.value, _STEP.value, options['out_dir']
  if config.task == 'pianonet':
    from pianonet import generate as pianonet_generate  # pylint: disable=g-import-not-at-top
    paths = pianonet_generate.generate_main(
        config, workdir, seed_midi=options['melody'], seconds=_SECONDS.value, out_dir=out_dir,
        temperature=options['temperature'], num_samples=options['num_samples'],
        rng_seed=options['seed'], step=step)
  else:
    from musicvae import sample as musicvae_sample  # pylint: disable=g-import-not-at-top
    paths = musicvae_sample.generate_main(
        config, workdir, task=options['task'] or 'sample', inputs=_INPUTS.value, out_dir=out_dir,
        num_samples=options['num_samples'], temperature=options['temperature'],
        rng_seed=options['seed'], step=step, attribute=_ATTRIBUTE.value,
        attribute_scale=_ATTRIBUTE_SCALE.value)
  from common import render  # pylint: disable=g-import-not-at-top
  return paths + render.render_files(paths, wav=options['wav'], png=options['png'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise flags.UsageError(f'unexpected arguments: {argv[1:]}')
  options = options_from_flags()  # parse flags before the (slow) checkpoint load
  config = training.read_config(_WORKDIR.value)
  if options['emotion'] and not (config.task == 'cpword' and config.data.get('emotion')):
    raise UserError(f'--emotion needs a cpword run trained with emotion conditioning '
                    f'(cpword/configs.py:small,emotion); {_WORKDIR.value} is not one')
  if config.task in ('pianonet', 'musicvae'):
    paths = _generate_with_main(config, options)
  else:
    model = training.load_model(training.get_task(config), config, _WORKDIR.value, _STEP.value)
    sampler = importlib.import_module(f'{config.task}.sample')
    if not hasattr(sampler, 'generate_from_flags'):
      raise UserError(f'{config.task} has no command-line generation')
    paths = sampler.generate_from_flags(model, config, options)
  for path in paths:
    print(path)


if __name__ == '__main__':
  cli.run(main)
