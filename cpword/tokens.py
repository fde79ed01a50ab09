"""REMI events and compound words (CP) from a NoteSequence, and back.

A piece is put on a 16th-note grid (4 steps per beat, 480 ticks per beat conceptually, 4/4 bars)
through its own tempo map, so pieces whose tempo changes every beat (Pop1K7) work. Per bar:

  Bar word; then for every grid position that has a note onset, a tempo change or a chord change:
  a Beat word (position, tempo or CONTI, chord or CONTI) followed by its Note words
  (pitch, duration, velocity bin), sorted by (-pitch, duration, velocity).

Bins (`Vocab`), by default the original's (CW:dataset/midi2corpus.py): tempo the nearest of
32, 35, .., 224 bpm (65 bins); velocity the nearest of 0, 2, .., 128 with a floor of 40, i.e. the
nearest of 40, 42, .., 126 (44 bins); duration the raw duration clipped to one bar and rounded to
16ths, so 0 .. 16 steps (a note shorter than half a step has duration 0 and is written back as
half a step, as the original's write_midi does); pitch 22..107 (the original dictionary's range;
notes outside it are dropped and counted). `durations='grid'` with 32 velocity bins over 1..127,
64 tempo bins and pitch 21..108 is this project's first tokenisation (the `_v1tokens` configs).

A CP word is one int row of `FAMILIES` fields; a field a word does not use holds IGNORE (0). The
first word is an optional Emotion word (EMOPIA quadrants), the last an EOS word. REMI is the same
information as a flat stream: Bar / Position / Tempo / Chord / Pitch / Duration / Velocity / EOS
/ Emotion events, where CONTI is simply the absence of a Tempo or Chord event.

Decoding is the exact inverse on pieces that are already on the grid (onsets and offsets on 16th
steps of their tempo map, tempos and velocities at bin values, durations of 1 step .. 1 bar).
Invalid (e.g. generated) sequences decode to their longest valid prefix with a `TokenWarning`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from typing import Sequence

import numpy as np

from common import files
from common import midi
from common.errors import UserError

NoteSequence = midi.NoteSequence

FAMILIES = ('type', 'bar_beat', 'tempo', 'chord', 'pitch', 'duration', 'velocity', 'emotion')
F = {name: i for i, name in enumerate(FAMILIES)}  # family -> column of a CP word
NUM_FAMILIES = len(FAMILIES)

IGNORE = 0  # every family: the field is not used by this word
# type family
TYPE_EOS, TYPE_METRICAL, TYPE_NOTE, TYPE_EMOTION = 1, 2, 3, 4
TYPE_NAMES = ('<ignore>', 'EOS', 'Metrical', 'Note', 'Emotion')
BAR = 1  # bar_beat family: 1 = Bar, 2 + p = Beat at position p
CONTI = 1  # tempo and chord families: unchanged
CHORD_NONE = 2  # chord family: no chord ('N')

ROOTS = ('C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B')
_FLATS = {'Db': 'C#', 'Eb': 'D#', 'Gb': 'F#', 'Ab': 'G#', 'Bb': 'A#', 'Cb': 'B', 'Fb': 'E',
          'E#': 'F', 'B#': 'C'}
# Pop1K7's chord qualities (its analysis markers read 'root_quality_bass', e.g. 'A_M7_A').
QUALITIES = {
    'M': (0, 4, 7), 'm': (0, 3, 7), 'o': (0, 3, 6), '+': (0, 4, 8), 'sus2': (0, 2, 7),
    'sus4': (0, 5, 7), '7': (0, 4, 7, 10), 'M7': (0, 4, 7, 11), 'm7': (0, 3, 7, 10),
    'o7': (0, 3, 6, 9), '/o7': (0, 3, 6, 10)}
CHORD_NAMES = tuple(f'{r}_{q}' for r in ROOTS for q in QUALITIES)
EMOTIONS = ('Q1', 'Q2', 'Q3', 'Q4')
DURATION_KINDS = ('original', 'grid')


class TokenWarning(UserWarning):
  """A token sequence was invalid; only its valid prefix was decoded."""


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Grid and bin settings; every family's size and every REMI id follow from them."""
  steps_per_beat: int = 4
  beats_per_bar: int = 4
  tempo_min: int = 32  # bpm; bins are tempo_min + tempo_step * i
  tempo_step: int = 3
  num_tempo_bins: int = 65
  pitch_min: int = 22
  pitch_max: int = 107
  velocity_min: int = 40  # bins are round(linspace(velocity_min, velocity_max, num_velocity_bins))
  velocity_max: int = 126
  num_velocity_bins: int = 44
  durations: str = 'original'  # 'original' (raw, rounded: 0..bar) | 'grid' (offset - onset: 1..bar)
  ticks_per_beat: int = 480  # the original's grid; the MIDI files written

  def __post_init__(self):
    if self.durations not in DURATION_KINDS:
      raise UserError(f'tokens.durations={self.durations!r}: use one of '
                      f'{", ".join(map(repr, DURATION_KINDS))}')
    if not 1 <= self.num_velocity_bins <= self.velocity_max - self.velocity_min + 1:
      raise UserError(f'tokens: {self.num_velocity_bins} velocity bins do not fit '
                      f'{self.velocity_min}..{self.velocity_max}')
    if not 0 <= self.pitch_min <= self.pitch_max <= 127:
      raise UserError(f'tokens: pitch range {self.pitch_min}..{self.pitch_max} is not in 0..127')

  @property
  def steps_per_bar(self) -> int:
    return self.steps_per_beat * self.beats_per_bar

  @property
  def tempo_values(self) -> np.ndarray:
    return self.tempo_min + self.tempo_step * np.arange(self.num_tempo_bins, dtype=np.float64)

  @property
  def velocity_values(self) -> np.ndarray:
    return np.round(np.linspace(self.velocity_min, self.velocity_max,
                                self.num_velocity_bins)).astype(np.int64)

  @property
  def min_duration(self) -> int:
    """The shortest duration in steps (0 for the original's durations, else 1)."""
    return 0 if self.durations == 'original' else 1

  def duration_value(self, steps: np.ndarray) -> np.ndarray:
    """Duration family value(s) of durations in steps (min_duration..steps_per_bar)."""
    return np.asarray(steps) + 1 - self.min_duration

  def duration_steps(self, value: int) -> int:
    return value - 1 + self.min_duration

  @property
  def family_sizes(self) -> dict[str, int]:
    return {
        'type': len(TYPE_NAMES),
        'bar_beat': 2 + self.steps_per_bar,
        'tempo': 2 + self.num_tempo_bins,
        'chord': 3 + len(CHORD_NAMES),
        'pitch': 1 + self.pitch_max - self.pitch_min + 1,
        'duration': 2 + self.steps_per_bar - self.min_duration,
        'velocity': 1 + self.num_velocity_bins,
        'emotion': 1 + len(EMOTIONS),
    }

  # REMI: one id per (family, value) that a REMI event can carry; 0 = PAD, 1 = EOS.
  @property
  def remi_ranges(self) -> dict[str, tuple[int, int, int]]:
    """family -> (first remi id, first CP value, count)."""
    sizes = self.family_sizes
    first_values = {'bar_beat': 1, 'tempo': 2, 'chord': 2, 'pitch': 1, 'duration': 1,
                    'velocity': 1, 'emotion': 1}
    ranges, offset = {}, 2
    for family in ('bar_beat', 'tempo', 'chord', 'pitch', 'duration', 'velocity', 'emotion'):
      count = sizes[family] - first_values[family]
      ranges[family] = (offset, first_values[family], count)
      offset += count
    return ranges

  @property
  def remi_size(self) -> int:
    start, _, count = self.remi_ranges['emotion']
    return start + count

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> Vocab:
    return cls(**json.loads(text))

  def save(self, path: str) -> None:
    """Writes the vocabulary as JSON atomically."""
    text = self.to_json()
    files.atomic_write(path, lambda f: f.write(text), mode='w')

  @classmethod
  def load(cls, path: str) -> Vocab:
    try:
      with open(path) as f:
        return cls.from_json(f.read())
    except (OSError, ValueError, TypeError) as e:
      raise UserError(f'{path}: cannot read the vocabulary ({e})') from None


def vocab_from_config(config) -> Vocab:
  """The Vocab a cpword config's `tokens` section describes."""
  return Vocab(**config.tokens.to_dict())


# ------------------------------------------------------------------------------------------------
# Names of values (for printing and for chord annotations).


def chord_name(value: int) -> str:
  if value == CHORD_NONE:
    return 'N'
  return CHORD_NAMES[value - 3]


def parse_chord(text: str) -> int | None:
  """A chord family value for 'A_M7', 'A_M7_A' (Pop1K7 markers), 'N', 'N_N_N'; None if unknown."""
  parts = text.strip().split('_')
  if parts[0] == 'N':
    return CHORD_NONE
  if len(parts) < 2:
    return None
  root = _FLATS.get(parts[0], parts[0])
  name = f'{root}_{parts[1]}'
  return CHORD_NAMES.index(name) + 3 if name in CHORD_NAMES else None


def describe(word: Sequence[int]) -> str:
  """A readable form of one CP word, for debugging."""
  kind = TYPE_NAMES[word[F['type']]] if 0 <= word[F['type']] < len(TYPE_NAMES) else '?'
  fields = ', '.join(f'{FAMILIES[i]}={int(v)}' for i, v in enumerate(word) if i and v)
  return f'{kind}({fields})'


# ------------------------------------------------------------------------------------------------
# The grid.


class _TempoMap:
  """seconds <-> beats for a piecewise-constant tempo."""

  def __init__(self, times: Sequence[float], qpms: Sequence[float]):
    order = np.argsort(np.asarray(times, np.float64), kind='stable')
    self.times = np.asarray(times, np.float64)[order]
    self.qpms = np.asarray(qpms, np.float64)[order]
    if not len(self.times) or self.times[0] > 0:
      # note_seq's convention: 120 qpm until the first tempo event.
      self.times = np.concatenate([[0.0], self.times])
      self.qpms = np.concatenate([[120.0], self.qpms])
    self.beats = np.concatenate(
        [[0.0], np.cumsum(np.diff(self.times) * self.qpms[:-1] / 60.0)])

  def to_beats(self, t: np.ndarray) -> np.ndarray:
    k = np.maximum(np.searchsorted(self.times, t, side='right') - 1, 0)
    return self.beats[k] + (t - self.times[k]) * self.qpms[k] / 60.0

  def to_seconds(self, beats: np.ndarray) -> np.ndarray:
    k = np.maximum(np.searchsorted(self.beats, beats, side='right') - 1, 0)
    return self.times[k] + (beats - self.beats[k]) * 60.0 / self.qpms[k]


def _nearest(values: np.ndarray, x: np.ndarray) -> np.ndarray:
  return np.argmin(np.abs(values[None, :] - np.asarray(x, np.float64)[:, None]), axis=1)


def recognize_chords(pitch: np.ndarray, onset: np.ndarray, duration: np.ndarray,
                     num_steps: int, vocab: Vocab) -> np.ndarray:
  """One chord value per beat from template matching on duration-weighted pitch classes.

  Chord tones count +1, other sounding pitch classes -0.5, and the lowest note of the beat +0.5 if
  it is the root; a beat where nothing sounds gets 'N'.
  """
  spb = vocab.steps_per_beat
  num_beats = -(-num_steps // spb)
  weights_BP = np.zeros((num_beats, 12))
  lowest_B = np.full(num_beats, 128)
  for p, on, d in zip(pitch, onset, duration):
    for beat in range(on // spb, min(-(-(on + d) // spb), num_beats)):
      overlap = min(on + d, (beat + 1) * spb) - max(on, beat * spb)
      weights_BP[beat, p % 12] += overlap
      lowest_B[beat] = min(lowest_B[beat], p)
  template_CP = np.full((len(CHORD_NAMES), 12), -0.5)
  roots_C = np.zeros(len(CHORD_NAMES), np.int64)
  for c, name in enumerate(CHORD_NAMES):
    root, quality = name.split('_', 1)
    roots_C[c] = ROOTS.index(root)
    for interval in QUALITIES[quality]:
      template_CP[c, (roots_C[c] + interval) % 12] = 1.0
  scores_BC = weights_BP @ template_CP.T
  scores_BC += 0.5 * spb * (roots_C[None, :] == (lowest_B[:, None] % 12))
  # Prefer triads over sevenths on ties: a small cost per chord tone.
  scores_BC -= 0.01 * (template_CP > 0).sum(1)[None, :]
  chords_B = np.argmax(scores_BC, axis=1) + 3
  chords_B[weights_BP.sum(1) == 0] = CHORD_NONE
  return chords_B


def _chord_changes_from_annotations(seq: NoteSequence, tempo_map: _TempoMap,
                                    vocab: Vocab) -> dict[int, int] | None:
  kind = midi.music_pb2.NoteSequence.TextAnnotation.CHORD_SYMBOL
  annotations = [a for a in seq.text_annotations if a.annotation_type == kind]
  if not annotations:
    return None
  changes = {}
  for a in sorted(annotations, key=lambda a: a.time):
    value = parse_chord(a.text)
    if value is not None:
      step = int(np.round(tempo_map.to_beats(np.array([a.time]))[0] * vocab.steps_per_beat))
      changes[max(step, 0)] = value
  return changes


def _dedupe(changes: dict[int, int]) -> dict[int, int]:
  out, last = {}, None
  for step in sorted(changes):
    if changes[step] != last:
      out[step] = last = changes[step]
  return out


# ------------------------------------------------------------------------------------------------
# NoteSequence -> CP words.


def encode_cp(seq: NoteSequence, vocab: Vocab = Vocab(), *, emotion: str | None = None,
              chords: str = 'auto', eos: bool = True) -> np.ndarray:
  """CP words (int32 (N, NUM_FAMILIES)) of a NoteSequence.

  Args:
    seq: any NoteSequence (seconds); notes outside the pitch range are dropped; drums are dropped.
    vocab: grid and bins.
    emotion: 'Q1'..'Q4' puts an Emotion word first.
    chords: 'auto' (the sequence's CHORD_SYMBOL annotations when it has any, else the template
      recogniser, one chord per beat), 'annotations', 'recognize' or 'none'.
    eos: end with an EOS word.
  """
  if chords not in ('auto', 'annotations', 'recognize', 'none'):
    raise ValueError(f'chords={chords!r}')
  tempo_map = _TempoMap([t.time for t in seq.tempos], [t.qpm for t in seq.tempos])
  spb, bar = vocab.steps_per_beat, vocab.steps_per_bar
  notes = [n for n in seq.notes
           if not n.is_drum and vocab.pitch_min <= n.pitch <= vocab.pitch_max
           and n.end_time > n.start_time]
  pitch = np.array([n.pitch for n in notes], np.int64)
  start_beats = tempo_map.to_beats(np.array([n.start_time for n in notes]))
  end_beats = tempo_map.to_beats(np.array([n.end_time for n in notes]))
  if vocab.durations == 'original':
    # The original reads integer ticks (480 per beat) and rounds ticks / 120: snapping to the tick
    # grid first makes a note exactly half a step off the grid round as it does there (to even).
    start_beats = np.round(start_beats * vocab.ticks_per_beat) / vocab.ticks_per_beat
    end_beats = np.round(end_beats * vocab.ticks_per_beat) / vocab.ticks_per_beat
  on = np.round(start_beats * spb).astype(np.int64)
  if vocab.durations == 'original':
    # The raw duration, clipped to a bar, then rounded (CW:dataset/midi2corpus.py:154-158).
    dur = np.round(np.minimum((end_beats - start_beats) * spb, bar)).astype(np.int64)
  else:
    off = np.round(end_beats * spb).astype(np.int64)
    dur = np.clip(off - on, 1, bar)
  vel = _nearest(vocab.velocity_values, np.array([n.velocity for n in notes], np.int64)) + 1

  tempo_steps = np.round(tempo_map.to_beats(tempo_map.times) * spb).astype(np.int64)
  tempo_bins = _nearest(vocab.tempo_values, tempo_map.qpms) + 2
  tempo_changes = _dedupe({int(s): int(b) for s, b in zip(tempo_steps, tempo_bins)})

  last_step = int(max(on.max(initial=0), max(tempo_changes)))
  chord_changes: dict[int, int] = {}
  if chords in ('auto', 'annotations'):
    chord_changes = _chord_changes_from_annotations(seq, tempo_map, vocab) or {}
  if chords == 'recognize' or (chords == 'auto' and not chord_changes and len(notes)):
    per_beat = recognize_chords(pitch, on, dur, last_step + 1, vocab)
    chord_changes = {b * spb: int(c) for b, c in enumerate(per_beat)}
  chord_changes = _dedupe({s: c for s, c in chord_changes.items() if s <= last_step})

  order = np.lexsort((vel, dur, -pitch, on))
  notes_at: dict[int, list[tuple[int, int, int]]] = {}
  for i in order:
    notes_at.setdefault(int(on[i]), []).append(
        (int(pitch[i] - vocab.pitch_min + 1), int(vocab.duration_value(dur[i])), int(vel[i])))

  words = []
  if emotion is not None:
    if emotion not in EMOTIONS:
      raise UserError(f'emotion {emotion!r} is not one of {", ".join(EMOTIONS)}')
    words.append(make_word(type=TYPE_EMOTION, emotion=EMOTIONS.index(emotion) + 1))
  steps = sorted(set(notes_at) | set(tempo_changes) | set(chord_changes))
  num_bars = last_step // bar + 1
  k = 0
  for b in range(num_bars):
    words.append(make_word(type=TYPE_METRICAL, bar_beat=BAR))
    while k < len(steps) and steps[k] < (b + 1) * bar:
      s = steps[k]
      words.append(make_word(type=TYPE_METRICAL, bar_beat=2 + s - b * bar,
                         tempo=tempo_changes.get(s, CONTI), chord=chord_changes.get(s, CONTI)))
      for p, d, v in notes_at.get(s, ()):
        words.append(make_word(type=TYPE_NOTE, pitch=p, duration=d, velocity=v))
      k += 1
  if eos:
    words.append(make_word(type=TYPE_EOS))
  return np.array(words, np.int32).reshape(-1, NUM_FAMILIES)


def count_out_of_range(seq: NoteSequence, vocab: Vocab = Vocab()) -> tuple[int, int]:
  """(pitched notes, of them outside the vocabulary's pitch range): what encode_cp drops."""
  pitched = [n.pitch for n in seq.notes if not n.is_drum and n.end_time > n.start_time]
  outside = sum(not vocab.pitch_min <= p <= vocab.pitch_max for p in pitched)
  return len(pitched), outside


def make_word(**fields: int) -> list[int]:
  """One CP word with the given fields (family name -> value) and IGNORE elsewhere."""
  word = [IGNORE] * NUM_FAMILIES
  for name, value in fields.items():
    word[F[name]] = value
  return word


# ------------------------------------------------------------------------------------------------
# CP words -> NoteSequence.


def _invalid(i: int, word, reason: str) -> None:
  warnings.warn(f'invalid CP word {i} {describe(word)}: {reason}; decoded the {i} words before it',
                TokenWarning, stacklevel=3)


def valid_prefix_length(words: np.ndarray, vocab: Vocab = Vocab(), *, warn: bool = True) -> int:
  """How many leading words form a valid sequence (EOS and trailing padding not counted)."""
  words = np.asarray(words)
  sizes = [vocab.family_sizes[f] for f in FAMILIES]
  bar_started, position = False, -1
  for i, w in enumerate(words.tolist()):
    t = w[F['type']]
    reason = None
    if t in (IGNORE, TYPE_EOS):
      return i
    if len(w) != NUM_FAMILIES or any(not 0 <= v < n for v, n in zip(w, sizes)):
      reason = 'a field is out of range'
    elif t == TYPE_EMOTION:
      if i != 0 or not w[F['emotion']]:
        reason = 'an Emotion word may only come first and needs an emotion'
    elif t == TYPE_METRICAL:
      bb = w[F['bar_beat']]
      if bb == IGNORE:
        reason = 'a Metrical word needs a bar or beat'
      elif bb == BAR:
        bar_started, position = True, -1
      elif not bar_started:
        reason = 'a beat before the first bar'
      elif bb - 2 <= position:
        reason = f'position {bb - 2} does not come after position {position}'
      elif IGNORE in (w[F['tempo']], w[F['chord']]):
        reason = 'a beat needs a tempo and a chord (or CONTI)'
      else:
        position = bb - 2
    elif t == TYPE_NOTE:
      if position < 0:
        reason = 'a note before any beat of its bar'
      elif IGNORE in (w[F['pitch']], w[F['duration']], w[F['velocity']]):
        reason = 'a note needs a pitch, a duration and a velocity'
    if reason is not None:
      if warn:
        _invalid(i, w, reason)
      return i
  return len(words)


def decode_cp(words: np.ndarray, vocab: Vocab = Vocab()) -> NoteSequence:
  """A NoteSequence of CP words: up to EOS or padding; invalid words end it with a TokenWarning.

  The sequence has a tempo at time 0 (120 qpm if the words set none), tempo changes where the
  words change it, CHORD_SYMBOL annotations where the chord changes, 4/4 at time 0.
  """
  words = np.asarray(words).reshape(-1, NUM_FAMILIES)
  words = words[:valid_prefix_length(words, vocab)]
  spb, bar = vocab.steps_per_beat, vocab.steps_per_bar
  tempo_changes: dict[int, float] = {}
  chord_changes: dict[int, int] = {}
  notes = []  # (onset step, pitch, duration steps, velocity)
  bar_index, onset = -1, 0
  for w in words.tolist():
    t = w[F['type']]
    if t == TYPE_METRICAL:
      if w[F['bar_beat']] == BAR:
        bar_index += 1
        continue
      onset = bar_index * bar + w[F['bar_beat']] - 2
      if w[F['tempo']] != CONTI:
        tempo_changes[onset] = float(vocab.tempo_values[w[F['tempo']] - 2])
      if w[F['chord']] != CONTI:
        chord_changes[onset] = w[F['chord']]
    elif t == TYPE_NOTE:
      notes.append((onset, w[F['pitch']] + vocab.pitch_min - 1,
                    vocab.duration_steps(w[F['duration']]),
                    int(vocab.velocity_values[w[F['velocity']] - 1])))
  tempo_changes = _dedupe(tempo_changes)
  if 0 not in tempo_changes:
    tempo_changes = {0: 120.0, **tempo_changes}
  seq = NoteSequence()
  seq.ticks_per_quarter = vocab.ticks_per_beat
  ts = seq.time_signatures.add()
  ts.time, ts.numerator, ts.denominator = 0.0, vocab.beats_per_bar, 4
  # Seconds of every tempo change, integrated segment by segment.
  times, t_sec, prev_step, prev_qpm = [], 0.0, 0, None
  for step in sorted(tempo_changes):
    if prev_qpm is not None:
      t_sec += (step - prev_step) / spb * 60.0 / prev_qpm
    times.append(t_sec)
    prev_step, prev_qpm = step, tempo_changes[step]
  tempo_map = _TempoMap(times, [tempo_changes[s] for s in sorted(tempo_changes)])
  for time, step in zip(times, sorted(tempo_changes)):
    tempo = seq.tempos.add()
    tempo.time, tempo.qpm = time, tempo_changes[step]

  def seconds(step: int) -> float:
    return float(tempo_map.to_seconds(np.array([step / spb]))[0])

  for onset, pitch, dur, vel in notes:
    note = seq.notes.add()
    note.pitch, note.velocity = pitch, vel
    # A 0-step duration (the original's durations) is written as half a step, as the original's
    # write_midi writes 60 ticks.
    note.start_time, note.end_time = seconds(onset), seconds(onset + max(dur, 0.5))
    note.instrument, note.program = 0, 0
  kind = midi.music_pb2.NoteSequence.TextAnnotation.CHORD_SYMBOL
  for step, value in sorted(_dedupe(chord_changes).items()):
    a = seq.text_annotations.add()
    a.time, a.text, a.annotation_type = seconds(step), chord_name(value), kind
  seq.total_time = max([n.end_time for n in seq.notes], default=0.0)
  return seq


def starts_with_emotion(song: np.ndarray, vocab: Vocab = Vocab()) -> bool:
  """Whether a song's first CP word (or REMI event) is an EMOPIA emotion token."""
  if len(song) == 0:
    return False
  if song.ndim == 2:
    return bool(song[0, F['type']] == TYPE_EMOTION)
  start, _, count = vocab.remi_ranges['emotion']
  return bool(start <= song[0] < start + count)


def emotion_of(words: np.ndarray) -> str | None:
  words = np.asarray(words)
  if len(words) and words[0, F['type']] == TYPE_EMOTION:
    return EMOTIONS[words[0, F['emotion']] - 1]
  return None


# ------------------------------------------------------------------------------------------------
# REMI.


def cp_to_remi(words: np.ndarray, vocab: Vocab = Vocab()) -> np.ndarray:
  """The REMI event ids (int32 (M,)) of valid CP words."""
  ranges = vocab.remi_ranges

  def rid(family: str, value: int) -> int:
    start, first, _ = ranges[family]
    return start + value - first

  out = []
  for w in np.asarray(words).tolist():
    t = w[F['type']]
    if t == TYPE_EOS:
      out.append(1)
    elif t == TYPE_EMOTION:
      out.append(rid('emotion', w[F['emotion']]))
    elif t == TYPE_METRICAL:
      out.append(rid('bar_beat', w[F['bar_beat']]))
      if w[F['bar_beat']] != BAR:
        for family in ('tempo', 'chord'):
          if w[F[family]] != CONTI:
            out.append(rid(family, w[F[family]]))
    elif t == TYPE_NOTE:
      out += [rid(f, w[F[f]]) for f in ('pitch', 'duration', 'velocity')]
  return np.array(out, np.int32)


def remi_event(event_id: int, vocab: Vocab = Vocab()) -> tuple[str, int]:
  """(family, CP value) of a REMI id; ('pad', 0), ('eos', 0) or ('?', id) for the others."""
  if event_id == 0:
    return 'pad', 0
  if event_id == 1:
    return 'eos', 0
  for family, (start, first, count) in vocab.remi_ranges.items():
    if start <= event_id < start + count:
      return family, event_id - start + first
  return '?', event_id


def remi_to_cp(events: np.ndarray, vocab: Vocab = Vocab()) -> np.ndarray:
  """CP words of REMI events, up to EOS/padding or the first event out of grammar (with a warning).

  Grammar: [Emotion] then Bar | Position [Tempo] [Chord] | Pitch Duration Velocity.
  """
  events = [remi_event(int(e), vocab) for e in np.asarray(events).reshape(-1)]
  words: list[list[int]] = []
  i = 0
  while i < len(events):
    family, value = events[i]
    if family == 'eos':
      words.append(make_word(type=TYPE_EOS))
    if family in ('pad', 'eos'):
      break
    if family == 'emotion' and not words:
      words.append(make_word(type=TYPE_EMOTION, emotion=value))
      i += 1
    elif family == 'bar_beat' and value == BAR:
      words.append(make_word(type=TYPE_METRICAL, bar_beat=BAR))
      i += 1
    elif family == 'bar_beat':
      word = make_word(type=TYPE_METRICAL, bar_beat=value, tempo=CONTI, chord=CONTI)
      i += 1
      for optional in ('tempo', 'chord'):
        if i < len(events) and events[i][0] == optional:
          word[F[optional]] = events[i][1]
          i += 1
      words.append(word)
    elif family == 'pitch' and [e[0] for e in events[i + 1:i + 3]] == ['duration', 'velocity']:
      words.append(make_word(type=TYPE_NOTE, pitch=value, duration=events[i + 1][1],
                         velocity=events[i + 2][1]))
      i += 3
    else:
      warnings.warn(f'REMI event {i} ({family} {value}) is out of grammar; decoded the events '
                    f'before it', TokenWarning, stacklevel=2)
      break
  return np.array(words, np.int32).reshape(-1, NUM_FAMILIES)


def remi_grammar(vocab: Vocab = Vocab()) -> np.ndarray:
  """bool (V, V): allowed[previous event, next event] under remi_to_cp's grammar.

  A Pitch must be followed by its Duration and a Duration by its Velocity; Tempo only after a
  Position, Chord after a Position or Tempo; Emotion only first (never generated); after any other
  event: Bar, Position, Pitch or EOS. Sampling with this mask only produces decodable songs.
  """
  size = vocab.remi_size
  family = [remi_event(i, vocab)[0] for i in range(size)]
  is_beat = np.zeros(size, bool)
  start, _, count = vocab.remi_ranges['bar_beat']
  is_beat[start + 1:start + count] = True  # bar_beat values > BAR are positions
  ids = {f: np.array([i for i in range(size) if family[i] == f], int)
         for f in ('bar_beat', 'tempo', 'chord', 'pitch', 'duration', 'velocity', 'eos')}
  free = np.concatenate([ids['bar_beat'], ids['pitch'], ids['eos']])
  allowed = np.zeros((size, size), bool)
  for prev in range(size):
    if family[prev] == 'pitch':
      allowed[prev, ids['duration']] = True
    elif family[prev] == 'duration':
      allowed[prev, ids['velocity']] = True
    else:
      allowed[prev, free] = True
      if is_beat[prev]:
        allowed[prev, ids['tempo']] = True
      if is_beat[prev] or family[prev] == 'tempo':
        allowed[prev, ids['chord']] = True
  return allowed


def encode_remi(seq: NoteSequence, vocab: Vocab = Vocab(), **kwargs) -> np.ndarray:
  """REMI event ids of a NoteSequence; kwargs as for `encode_cp`."""
  return cp_to_remi(encode_cp(seq, vocab, **kwargs), vocab)


def decode_remi(events: np.ndarray, vocab: Vocab = Vocab()) -> NoteSequence:
  return decode_cp(remi_to_cp(events, vocab), vocab)


# ------------------------------------------------------------------------------------------------
# Pop1K7's chord markers.

_MARKER = re.compile(r'^([A-G][#b]?|N)_[^_]+_')


def add_chord_markers(seq: NoteSequence, path: str) -> NoteSequence:
  """A copy of `seq` with the MIDI file's chord markers ('A_M7_A', Pop1K7) as CHORD_SYMBOL
  annotations; note_seq does not read markers. Unreadable files give `seq` unchanged."""
  import mido  # pylint: disable=g-import-not-at-top
  import pretty_midi  # pylint: disable=g-import-not-at-top
  try:
    mid = mido.MidiFile(path)
    markers = []
    for track in mid.tracks:
      tick = 0
      for msg in track:
        tick += msg.time
        if msg.is_meta and msg.type in ('marker', 'text') and _MARKER.match(msg.text + '_'):
          markers.append((tick, msg.text))
    if not markers:
      return seq
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      pm = pretty_midi.PrettyMIDI(path)
  except Exception:  # pylint: disable=broad-except
    return seq  # a damaged file loses its chords (the recogniser takes over), not the scan
  out = NoteSequence()
  out.CopyFrom(seq)
  kind = midi.music_pb2.NoteSequence.TextAnnotation.CHORD_SYMBOL
  for tick, text in markers:
    if parse_chord(text) is not None:
      a = out.text_annotations.add()
      a.time, a.text, a.annotation_type = float(pm.tick_to_time(tick)), text, kind
  return out
