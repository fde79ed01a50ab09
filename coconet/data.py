"""Coconet's encoding: SATB pitch arrays <-> piano rolls <-> NoteSequences.

Three views of a four-part chorale on a 16th-note grid (4 steps per quarter):
  pitches_TI  float32 (T, 4): MIDI pitch of soprano, alto, tenor, bass per step; NaN = silent.
              This is the JSB npz format (Jsb16thSeparated.npz).
  roll_TPI    float32 (T, 46, 4): one-hot over pitch MIDI 36..81 per (step, voice); a silent voice
              is an all-zero pitch row. The model's input and target.
  NoteSequence one instrument per voice (0 = soprano .. 3 = bass), quantized on the 16th grid.

Held vs repeated notes: the JSB arrays store a pitch per 16th step, so a half note and four
repeated 8th notes of the same pitch look the same. We read a run of equal pitches in one voice as
ONE held note (Bach's chorales hold far more often than they repeat), so `pitches_to_sequence`
merges runs and `sequence_to_pitches` loses re-attacks. Round trips pitches -> sequence -> pitches
are exact; sequence -> pitches -> sequence merges repeated notes.

Melody range: a melody to harmonize must lie in the soprano range of the JSB training data,
MIDI 60..81 (C4..A5). The model never saw a soprano outside it, so we refuse (UserError naming the
notes) rather than produce nonsense, or transpose by whole octaves when asked.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from common import midi
from common.errors import UserError

MIN_PITCH = 36
MAX_PITCH = 81
NUM_PITCHES = MAX_PITCH - MIN_PITCH + 1  # 46
NUM_INSTRUMENTS = 4
VOICE_NAMES = ('soprano', 'alto', 'tenor', 'bass')
STEPS_PER_QUARTER = 4  # 16th-note grid
QUARTER_FACTOR = 4  # 16th steps per quarter-note frame
# Per-voice ranges in the JSB chorales (all splits), read from Jsb16thSeparated.npz.
VOICE_RANGES = ((60, 81), (52, 74), (46, 69), (36, 66))
SOPRANO_RANGE = VOICE_RANGES[0]

# General MIDI programs per voice (S, A, T, B).
PROGRAMS = {
    'choir': (52, 52, 53, 53),  # Choir Aahs for the upper voices, Voice Oohs for the lower
    'piano': (0, 0, 0, 0),
    'organ': (19, 19, 19, 19),  # Church Organ
    'strings': (40, 41, 42, 43),  # violin, viola, cello, contrabass
    'brass': (56, 60, 57, 58),  # trumpet, French horn, trombone, tuba
    'woodwinds': (73, 68, 71, 70),  # flute, oboe, clarinet, bassoon
}

_NOTE_NAMES = ('C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B')


def pitch_name(pitch: int) -> str:
  """MIDI pitch -> scientific name, e.g. 60 -> 'C4'."""
  return f'{_NOTE_NAMES[int(pitch) % 12]}{int(pitch) // 12 - 1}'


# ------------------------------------------------------------------------------------------------
# pitches <-> indices <-> rolls


def pitches_to_indices(pitches: np.ndarray) -> np.ndarray:
  """MIDI pitches (NaN = silent) -> int32 pitch indices 0..45, -1 = silent. Any shape."""
  pitches = np.asarray(pitches, np.float32)
  silent = np.isnan(pitches)
  filled = np.where(silent, MIN_PITCH, pitches)
  if np.any(filled != np.round(filled)):
    raise ValueError('pitches must be whole MIDI numbers or NaN')
  bad = (filled < MIN_PITCH) | (filled > MAX_PITCH)
  if np.any(bad):
    values = sorted({int(p) for p in filled[bad]})
    raise UserError(f'pitches {values} are outside Coconet\'s range {MIN_PITCH}..{MAX_PITCH}')
  return np.where(silent, -1, filled.astype(np.int32) - MIN_PITCH).astype(np.int32)


def indices_to_pitches(indices: np.ndarray) -> np.ndarray:
  """int pitch indices (-1 = silent) -> float32 MIDI pitches with NaN for silent. Any shape."""
  indices = np.asarray(indices)
  return np.where(indices < 0, np.nan, indices + MIN_PITCH).astype(np.float32)


def indices_to_roll(indices_TI: np.ndarray) -> np.ndarray:
  """(..., T, I) int indices (-1 silent) -> (..., T, P, I) float32 one-hot roll."""
  indices_TI = np.asarray(indices_TI)
  onehot_TIP = (indices_TI[..., None] == np.arange(NUM_PITCHES)).astype(np.float32)
  return np.swapaxes(onehot_TIP, -1, -2)


def pitches_to_roll(pitches_TI: np.ndarray) -> np.ndarray:
  """(T, 4) MIDI pitches, NaN = silent -> roll_TPI float32 (T, 46, 4); silent = all-zero row."""
  return indices_to_roll(pitches_to_indices(pitches_TI))


def roll_to_indices(roll_TPI: np.ndarray) -> np.ndarray:
  """(..., T, P, I) roll -> (..., T, I) int32 argmax indices, -1 where the row is all zero."""
  roll_TPI = np.asarray(roll_TPI)
  silent = ~np.any(roll_TPI > 0, axis=-2)
  return np.where(silent, -1, np.argmax(roll_TPI, axis=-2)).astype(np.int32)


def roll_to_pitches(roll_TPI: np.ndarray) -> np.ndarray:
  """roll_TPI (T, 46, 4) -> (T, 4) float32 MIDI pitches; an all-zero row -> NaN."""
  return indices_to_pitches(roll_to_indices(roll_TPI))


# ------------------------------------------------------------------------------------------------
# Quarter-note grid


def to_quarter_grid(pitches_TI: np.ndarray, factor: int = QUARTER_FACTOR) -> np.ndarray:
  """Keeps every `factor`-th 16th step: (T, 4) -> (ceil(T / factor), 4)."""
  return np.asarray(pitches_TI)[::factor]


def upsample_to_16th(pitches_QI: np.ndarray, factor: int = QUARTER_FACTOR) -> np.ndarray:
  """Repeats each quarter frame `factor` times: (Q, 4) -> (Q * factor, 4) (held notes)."""
  return np.repeat(np.asarray(pitches_QI, np.float32), factor, axis=0)


def quarter_frames_mask(num_steps: int, factor: int = QUARTER_FACTOR) -> np.ndarray:
  """bool (T,): True on the steps that fall on a quarter-note frame (t % factor == 0)."""
  return np.arange(num_steps) % factor == 0


# ------------------------------------------------------------------------------------------------
# NoteSequence


def resolve_programs(programs: str | Sequence[int]) -> tuple[int, ...]:
  """'choir' | 'piano' | 'organ' | 'strings' | 'brass' | 'woodwinds' or 4 GM programs 0..127."""
  if isinstance(programs, str):
    if programs not in PROGRAMS:
      raise UserError(f'unknown programs {programs!r}; choose one of {", ".join(PROGRAMS)} '
                      'or give four General MIDI program numbers')
    return PROGRAMS[programs]
  programs = tuple(int(p) for p in programs)
  if len(programs) != NUM_INSTRUMENTS or any(not 0 <= p <= 127 for p in programs):
    raise UserError(f'programs {programs} must be four General MIDI numbers in 0..127')
  return programs


def pitches_to_sequence(pitches_TI: np.ndarray, *, qpm: float = 90.0,
                        programs: str | Sequence[int] = 'choir', velocity: int = 80,
                        steps_per_quarter: int = STEPS_PER_QUARTER) -> midi.NoteSequence:
  """(T, I) MIDI pitches (NaN = silent) -> a quantized NoteSequence, one instrument per voice.

  A run of equal pitches in a voice becomes one held note (see the module docstring).
  """
  pitches_TI = np.asarray(pitches_TI, np.float32)
  if pitches_TI.ndim != 2:
    raise ValueError(f'pitches must be (T, voices), got shape {pitches_TI.shape}')
  num_steps, num_voices = pitches_TI.shape
  program_list = resolve_programs(programs)
  seconds_per_step = 60.0 / qpm / steps_per_quarter

  seq = midi.NoteSequence()
  seq.ticks_per_quarter = midi.note_seq.STANDARD_PPQ
  seq.tempos.add(time=0.0, qpm=qpm)
  seq.time_signatures.add(time=0.0, numerator=4, denominator=4)
  seq.quantization_info.steps_per_quarter = steps_per_quarter
  seq.total_quantized_steps = num_steps
  seq.total_time = num_steps * seconds_per_step
  for voice in range(num_voices):
    seq.instrument_infos.add(instrument=voice, name=VOICE_NAMES[voice % NUM_INSTRUMENTS])
    column = pitches_TI[:, voice]
    start = 0
    for t in range(1, num_steps + 1):
      ends_run = t == num_steps or not _same_pitch(column[t], column[start])
      if not ends_run:
        continue
      if not np.isnan(column[start]):
        seq.notes.add(
            pitch=int(column[start]), velocity=velocity, instrument=voice,
            program=program_list[voice % NUM_INSTRUMENTS],
            start_time=start * seconds_per_step, end_time=t * seconds_per_step,
            quantized_start_step=start, quantized_end_step=t)
      start = t
  return seq


def _same_pitch(a: float, b: float) -> bool:
  return (np.isnan(a) and np.isnan(b)) or a == b


def _quantized(seq: midi.NoteSequence, steps_per_quarter: int) -> midi.NoteSequence:
  if (seq.quantization_info.steps_per_quarter == steps_per_quarter
      and all(n.quantized_end_step > n.quantized_start_step for n in seq.notes)):
    return seq
  return midi.quantize(seq, steps_per_quarter)


def _voice_groups(seq: midi.NoteSequence) -> list[list]:
  """Pitched notes grouped by (instrument, program), ordered soprano to bass by mean pitch."""
  groups: dict[tuple[int, int], list] = {}
  for note in seq.notes:
    if not note.is_drum:
      groups.setdefault((note.instrument, note.program), []).append(note)
  return sorted(groups.values(), key=lambda notes: -np.mean([n.pitch for n in notes]))


def sequence_to_pitches(seq: midi.NoteSequence, *, name: str = 'sequence',
                        steps_per_quarter: int = STEPS_PER_QUARTER) -> np.ndarray:
  """A four-part NoteSequence -> (T, 4) float32 MIDI pitches on the 16th grid, NaN = silent.

  Parts are the (instrument, program) groups of pitched notes, ordered soprano to bass by mean
  pitch. Within a part, a later note overwrites an earlier one where they overlap.
  """
  pitches_TI = _four_parts(seq, name, steps_per_quarter)
  _check_range(pitches_TI, name)
  return pitches_TI


def _four_parts(seq: midi.NoteSequence, name: str, steps_per_quarter: int) -> np.ndarray:
  seq = _quantized(seq, steps_per_quarter)
  groups = _voice_groups(seq)
  if len(groups) != NUM_INSTRUMENTS:
    raise UserError(f'{name}: expected 4 parts (SATB), found {len(groups)}')
  num_steps = max(n.quantized_end_step for notes in groups for n in notes)
  pitches_TI = np.full((num_steps, NUM_INSTRUMENTS), np.nan, np.float32)
  for voice, notes in enumerate(groups):
    for note in sorted(notes, key=lambda n: n.quantized_start_step):
      pitches_TI[note.quantized_start_step:note.quantized_end_step, voice] = note.pitch
  return pitches_TI


def four_part_pitches(seq: midi.NoteSequence, *, name: str = 'sequence',
                      steps_per_quarter: int = STEPS_PER_QUARTER) -> np.ndarray:
  """A MIDI file's NoteSequence as a training chorale (T, 4), or UserError saying why it is not
  one: Coconet learns four voices, so a piece must have exactly four pitched parts (see
  sequence_to_pitches); a piece whose notes lie outside 36..81 is moved by the whole octaves that
  bring it inside, when some do."""
  if not any(not n.is_drum for n in seq.notes):
    raise UserError(f'{name}: no pitched notes')
  groups = _voice_groups(seq)
  if len(groups) != NUM_INSTRUMENTS:
    raise UserError(f'{name}: {len(groups)} part{"s" * (len(groups) != 1)}, not 4 (SATB)')
  pitches = [n.pitch for notes in groups for n in notes]
  low, high = min(pitches), max(pitches)
  shifts = [12 * k for k in range(-10, 11)
            if MIN_PITCH <= low + 12 * k and high + 12 * k <= MAX_PITCH]
  if not shifts:
    raise UserError(f'{name}: its notes span {pitch_name(low)}..{pitch_name(high)}, wider than '
                    f'Coconet\'s range {pitch_name(MIN_PITCH)}..{pitch_name(MAX_PITCH)}')
  return _four_parts(seq, name, steps_per_quarter) + min(shifts, key=abs)


def _check_range(pitches_TI: np.ndarray, name: str) -> None:
  bad = ~np.isnan(pitches_TI) & ((pitches_TI < MIN_PITCH) | (pitches_TI > MAX_PITCH))
  if np.any(bad):
    values = sorted({int(p) for p in pitches_TI[bad]})
    raise UserError(f'{name}: pitches {_describe(values)} are outside Coconet\'s range '
                    f'{MIN_PITCH}..{MAX_PITCH} ({pitch_name(MIN_PITCH)}..{pitch_name(MAX_PITCH)})')


def _describe(pitches: Sequence[int], limit: int = 8) -> str:
  names = [f'{p} ({pitch_name(p)})' for p in pitches[:limit]]
  more = f' and {len(pitches) - limit} more' if len(pitches) > limit else ''
  return ', '.join(names) + more


# ------------------------------------------------------------------------------------------------
# Melodies


def melody_from_pitches(pitches: Sequence[int | None], steps_per_note: int = 4) -> np.ndarray:
  """A list of MIDI pitches (None or negative = rest), each held `steps_per_note` 16th steps."""
  if steps_per_note < 1:
    raise UserError(f'steps_per_note must be >= 1, got {steps_per_note}')
  values = [np.nan if p is None or p < 0 else float(p) for p in pitches]
  if not values:
    raise UserError('the melody is empty')
  return np.repeat(np.asarray(values, np.float32), steps_per_note)


def melody_from_sequence(seq: midi.NoteSequence, *, name: str = 'melody',
                         steps_per_quarter: int = STEPS_PER_QUARTER) -> np.ndarray:
  """A NoteSequence -> (T,) soprano on the 16th grid: the highest sounding pitch per step.

  Works on a bare melody and on a full score (its top line is taken), NaN where nothing sounds.
  """
  seq = _quantized(seq, steps_per_quarter)
  from common import midi  # pylint: disable=g-import-not-at-top
  notes = midi.pitched_notes(seq, name)
  num_steps = max(n.quantized_end_step for n in notes)
  soprano_T = np.full(num_steps, np.nan, np.float32)
  for note in notes:
    span = soprano_T[note.quantized_start_step:note.quantized_end_step]
    span[np.isnan(span) | (span < note.pitch)] = note.pitch
  return soprano_T


def fit_soprano_range(soprano_T: np.ndarray, *, transpose: bool = False,
                      name: str = 'melody') -> np.ndarray:
  """Checks that a melody lies in SOPRANO_RANGE; with transpose=True shifts it by whole octaves.

  The smallest octave shift that fits is used. UserError names the notes out of range (or says
  that the melody spans too much to fit any octave).
  """
  soprano_T = np.asarray(soprano_T, np.float32)
  low, high = SOPRANO_RANGE
  sounding = soprano_T[~np.isnan(soprano_T)]
  if sounding.size == 0:
    raise UserError(f'{name}: the melody has no notes')
  lo, hi = float(sounding.min()), float(sounding.max())
  if low <= lo and hi <= high:
    return soprano_T
  if transpose:
    shifts = [12 * k for k in range(-10, 11) if low <= lo + 12 * k and hi + 12 * k <= high]
    if shifts:
      return soprano_T + min(shifts, key=abs)
    raise UserError(
        f'{name}: the melody spans {pitch_name(int(lo))}..{pitch_name(int(hi))}, which fits no '
        f'octave of the soprano range {pitch_name(low)}..{pitch_name(high)} ({low}..{high})')
  out_of_range = [(t, int(p)) for t, p in enumerate(soprano_T)
                  if not np.isnan(p) and not low <= p <= high]
  # Name each note once (at its first step), not every 16th step it is held.
  first = [(t, p) for i, (t, p) in enumerate(out_of_range)
           if i == 0 or out_of_range[i - 1] != (t - 1, p)]
  shown = ', '.join(f'{pitch_name(p)} ({p}) at step {t}' for t, p in first[:8])
  more = f' and {len(first) - 8} more' if len(first) > 8 else ''
  raise UserError(
      f'{name}: notes outside the soprano range {pitch_name(low)}..{pitch_name(high)} '
      f'({low}..{high}): {shown}{more}; use --transpose to shift the melody by octaves')


def soprano_from_melody(melody: midi.NoteSequence | Sequence[int | None], *,
                        steps_per_note: int = 4, transpose: bool = False,
                        name: str = 'melody', num_steps: int | None = None) -> np.ndarray:
  """A melody (NoteSequence or list of MIDI pitches) -> (T,) soprano in range, 16th grid.

  num_steps: keep only the first num_steps 16th steps (before the range check).
  """
  if isinstance(melody, midi.NoteSequence):
    soprano_T = melody_from_sequence(melody, name=name)
  else:
    soprano_T = melody_from_pitches(melody, steps_per_note)
  if num_steps:
    soprano_T = soprano_T[:num_steps]
  return fit_soprano_range(soprano_T, transpose=transpose, name=name)
