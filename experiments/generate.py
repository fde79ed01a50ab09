r"""Generates music with a trained model: loads --workdir's config.json and latest checkpoint.

  python -m experiments.generate --workdir=pretrained/coconet_small --task=harmonize \
      --pitches="67,67,69,71,72,71,69,67" --steps_per_note=4 --out_dir=out/ --num_samples=3
  python -m experiments.generate --workdir=pretrained/coconet_small --melody=tune.mid \
      --transpose --wav --png --programs=piano
  python -m experiments.generate --workdir=pretrained/coconet_small --task=generate --length=64
  python -m experiments.generate --workdir=pretrained/pianonet_small --melody=seed.mid --seconds=10
  python -m experiments.generate --workdir=pretrained/mel_2bar_small --task=interpolate \
      --inputs=a.mid,b.mid --num_samples=7 --png
  python -m experiments.generate --workdir=pretrained/mel_2bar_small --task=attribute \
      --inputs=a.mid --attribute=note_density --attribute_scale=1.5
  python -m experiments.generate --workdir=pretrained/cpword_small --num_samples=2 --length=512
  python -m experiments.generate --workdir=runs/cpword_emotion --emotion=Q1 --num_samples=2

Every model answers the same way (common.generation): the flags become a Request, the input files
are read and the flags checked before the model loads, the model returns NoteSequences, and they
are written here as MIDI (plus WAV and PNG when asked).
"""

from __future__ import annotations

from typing import Any

from absl import flags

from common import configs
from common import runtime
from common.errors import UserError
from experiments import cli
from experiments import registry

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir or export (config.json + '
                               'checkpoints), e.g. pretrained/coconet_small.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_TASK = flags.DEFINE_string(
    'task', None, 'What to generate. coconet: harmonize (default)|generate|complete|revoice|'
    'upsample (complete/revoice/upsample take a 4-part --melody file); musicvae: sample '
    '(default)|reconstruct|interpolate|attribute; pianonet: continue; cpword: generate '
    '(default)|continue.')
_SECONDS = flags.DEFINE_float('seconds', 10.0, 'pianonet: seconds of music to generate after the '
                              'seed (--melody is the seed MIDI; none = silence).')
_INPUTS = flags.DEFINE_list('inputs', [], 'musicvae: input MIDI/MusicXML files.')
_ATTRIBUTE = flags.DEFINE_string(
    'attribute', None, 'musicvae --task=attribute: note_density|average_interval|'
    'syncopation_16th|syncopation_8th|c_diatonic.')
_ATTRIBUTE_SCALE = flags.DEFINE_float('attribute_scale', 1.5, 'musicvae: attribute vector scale.')
_MELODY = flags.DEFINE_string('melody', None, 'Input file: .mid/.midi/.xml/.musicxml/.mxl.')
_PITCHES = flags.DEFINE_string('pitches', None,
                               'Melody as comma-separated MIDI pitches, "r" for a rest.')
_STEPS_PER_NOTE = flags.DEFINE_integer('steps_per_note', 4,
                                       '16th steps per --pitches note (4 = quarter notes).')
_LENGTH = flags.DEFINE_integer(
    'length', None, 'How much to generate: 16th steps (coconet --task=generate; also crops an '
    'input piece) or words/events (cpword).')
flags.DEFINE_alias('num_steps', 'length')
_OUT_DIR = flags.DEFINE_string('out_dir', 'out', 'Where outputs are written.')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 1, 'Samples to generate.')
_GIBBS_STEPS = flags.DEFINE_integer('gibbs_steps', None,
                                    'coconet: Gibbs steps (default: the model\'s own default).')
_SAMPLER = flags.DEFINE_enum('sampler', None, ['gibbs', 'ancestral', 'independent'],
                             'coconet: the sampler (default: annealed blocked Gibbs).')
_ORDER = flags.DEFINE_enum('order', None, ['chronological', 'random'],
                           'coconet --sampler=ancestral: the order of the variables.')
_PMAX = flags.DEFINE_float('pmax', None, 'coconet: Gibbs schedule, the first block fraction.')
_PMIN = flags.DEFINE_float('pmin', None, 'coconet: Gibbs schedule, the last block fraction.')
_ETA = flags.DEFINE_float('eta', None, 'coconet: Gibbs schedule, the fraction of the steps over '
                          'which the block fraction falls from pmax to pmin.')
_TEMPERATURE = flags.DEFINE_float('temperature', None, 'Sampling temperature (default per model).')
_TRANSPOSE = flags.DEFINE_bool('transpose', False,
                               'Shift a melody out of the model\'s range by whole octaves.')
_FIRST_SECTION = flags.DEFINE_bool(
    'first_section', False, 'Use each input file only up to its first tempo or time-signature '
    'change (models need one tempo and meter per piece).')
_WAV = flags.DEFINE_bool('wav', False, 'Also write WAV audio.')
_PNG = flags.DEFINE_bool('png', False, 'Also write a piano-roll PNG.')
_PROGRAMS = flags.DEFINE_string('programs', 'choir', 'Instruments: choir|piano|organ|strings|...')
_QPM = flags.DEFINE_float('qpm', None, 'Tempo of the written MIDI in quarter notes per minute.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_EMOTION = flags.DEFINE_enum('emotion', None, ['Q1', 'Q2', 'Q3', 'Q4'],
                             'cpword trained with emotion (configs.py:small_emotion): the EMOPIA '
                             'quadrant to condition on (Q1 happy, Q2 tense, Q3 sad, Q4 calm).')
flags.mark_flags_as_required(['workdir'])

_MUSICVAE_ATTRIBUTES = ('note_density', 'average_interval', 'syncopation_16th', 'syncopation_8th',
                        'c_diatonic')


def parse_pitches(text: str | None) -> tuple[int | None, ...] | None:
  """'60,62,r,64' -> (60, 62, None, 64); UserError on anything else."""
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
  return tuple(out)


def request_from_flags(config: Any) -> Any:
  """The Request the flags describe for this model, checked, with its input files read."""
  from common import generation  # pylint: disable=g-import-not-at-top
  entry = registry.entry(config)
  model_name = config.task
  task = _TASK.value or entry.tasks[0]
  if task not in entry.tasks:
    raise UserError(f'{model_name} cannot --task={task}; it can: {", ".join(entry.tasks)}')
  # Counts below 1 would reach numpy as negative array sizes (a traceback) or crop from the end.
  if _NUM_SAMPLES.value < 1:
    raise UserError(f'--num_samples must be >= 1, got {_NUM_SAMPLES.value}')
  if _LENGTH.value is not None and _LENGTH.value < 1:
    raise UserError(f'--length must be >= 1, got {_LENGTH.value}')
  if task == 'attribute' and _ATTRIBUTE.value not in _MUSICVAE_ATTRIBUTES:
    raise UserError(f'--task=attribute needs --attribute=one of {", ".join(_MUSICVAE_ATTRIBUTES)}'
                    f' (got {_ATTRIBUTE.value!r})')
  if _EMOTION.value and not (model_name == 'cpword' and config.data.get('emotion')):
    raise UserError(f'--emotion needs a cpword run trained with emotion conditioning '
                    f'(cpword/configs.py:small_emotion); {_WORKDIR.value} is not one')
  paths = _INPUTS.value if entry.input_flag == 'inputs' else (
      [_MELODY.value] if _MELODY.value else [])
  return generation.Request(
      task=task, inputs=tuple(_read_inputs(paths)), input_names=tuple(paths),
      pitches=parse_pitches(_PITCHES.value), steps_per_note=_STEPS_PER_NOTE.value,
      length=_LENGTH.value, num_samples=_NUM_SAMPLES.value, temperature=_TEMPERATURE.value,
      seed=_SEED.value, gibbs_steps=_GIBBS_STEPS.value, sampler=_SAMPLER.value,
      order=_ORDER.value, pmax=_PMAX.value, pmin=_PMIN.value, eta=_ETA.value,
      transpose=_TRANSPOSE.value,
      programs=_PROGRAMS.value, qpm=_QPM.value, seconds=_SECONDS.value,
      attribute=_ATTRIBUTE.value, attribute_scale=_ATTRIBUTE_SCALE.value, emotion=_EMOTION.value)


def _read_inputs(paths: list[str]) -> list[Any]:
  if not paths:
    return []
  from common import midi  # pylint: disable=g-import-not-at-top
  pieces = [midi.read_music(path) for path in paths]
  return [midi.first_section(p) for p in pieces] if _FIRST_SECTION.value else pieces


def main(argv: list[str]) -> None:
  del argv
  config = configs.read_config(_WORKDIR.value)
  request = request_from_flags(config)  # input files and flags are checked before the model loads
  runtime.configure_process()  # after the file checks: it imports jax, which takes a second
  check = registry.entry(config).check_request
  if check is not None:
    check(config, request)
  for path in registry.generate_files(_WORKDIR.value, request, _OUT_DIR.value, step=_STEP.value,
                                      wav=_WAV.value, png=_PNG.value, config=config):
    print(path)


if __name__ == '__main__':
  cli.run(main, configure_process=False)
