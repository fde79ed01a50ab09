"""PianoNet's encoding: NoteSequence <-> binary key-state rolls <-> one flattened 1-D sequence.

A song becomes a roll (T, num_keys) of uint8 key states (1 = key down) over a window of keys
[lowest_key, lowest_key + num_keys), flattened row-major (index = t * num_keys + k) and
concatenated with 4-6 s of silence after each song into one long uint8 sequence.

By default the roll is the original's (angsten/pianonet over pypianoroll 0.5.0, tested against
rolls its own code made: tests/pianonet/test_original_encoding.py):
- time grid: 24 steps per beat of the file's tempo map (pretty_midi's beats: tempo changes are
  followed and a compound meter's beat is the dotted note), so 48 steps per second at 120 qpm
  (all of MAESTRO); the first beat is the first time signature's time, or else estimated from the
  onsets (notes that end before it are dropped; generation seeds start at 0 s, as the original's
  serving code reads them); a note starts at round(step) (half to even), ends at floor(step);
- no sustain pedal (the original reads note-offs only) and any velocity;
- notes drawn one by one per track in the file's order: a new note clears the step before it if
  an earlier note holds it, and stops one step early if the step at its end is down, so that one
  up step separates the notes of a key; a one-step note just before a new one is erased, notes
  that round to nothing vanish; tracks are merged by union; drum notes mark their onset step;
- silence trimmed at both ends of the full 128-key roll, then the key window cut out.
Time-stretch augmentation (Angsten 2020) makes `stretch_copies` copies of each song, every one
stretched by a factor drawn stratified-randomly in [0.85, 1.2] by nearest-neighbour resampling of
the roll's rows, in the training and the validation split.

Each rule has a config flag (Encoding, and stretch settings in configs.py) whose other value is
this codebase's earlier encoding, which pretrained/pianonet_small was trained on:
`time_grid='seconds'` (steps_per_second of real time), `sustain=True`, `note_end='round'`,
`note_rules='separate'` (every note its own run of at least one step: a note that would vanish
moves the next note one step later instead, so the inverse recovers every note; same-step
duplicates merge; drums dropped), `trim='window'`, `stretch_method='notes'` (note boundaries
resampled and re-rendered, keeping every note), `unstretched_copy=True`,
`stretch_validation=False`, `padding='around'` (silence before the first song too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import os
from typing import Any, Iterable, Sequence

import numpy as np

from common import files
from common.errors import UserError

# Velocity of decoded notes (the encoding has none): what pypianoroll writes for a binary roll.
DEFAULT_VELOCITY = 100
TIME_GRIDS = ('beats', 'seconds')
NOTE_RULES = ('original', 'separate')
NOTE_ENDS = ('floor', 'round')
TRIMS = ('all_keys', 'window')


@dataclasses.dataclass(frozen=True)
class Encoding:
  """Where and how finely key states are sampled, and the rules that draw notes (see above).

  steps_per_second: the 'seconds' grid's rate; with either grid also the nominal rate of padding,
  of generated seconds and of decoded MIDI (the original writes 24 steps per beat at 120 qpm).
  """
  steps_per_second: float = 48.0
  num_keys: int = 72
  lowest_key: int = 31
  sustain: bool = False
  time_grid: str = 'beats'
  steps_per_beat: int = 24
  note_rules: str = 'original'
  note_end: str = 'floor'
  trim: str = 'all_keys'

  def __post_init__(self):
    for name, allowed in (('time_grid', TIME_GRIDS), ('note_rules', NOTE_RULES),
                          ('note_end', NOTE_ENDS), ('trim', TRIMS)):
      if getattr(self, name) not in allowed:
        raise UserError(f'pianonet: {name}={getattr(self, name)!r} is not one of '
                        f'{", ".join(allowed)}')
    if not 0 <= self.lowest_key <= 128 - self.num_keys or self.num_keys < 1:
      raise UserError(f'pianonet: keys {self.lowest_key}..{self.lowest_key + self.num_keys - 1} '
                      'are not inside MIDI 0..127')
    if self.steps_per_second <= 0 or self.steps_per_beat < 1:
      raise UserError('pianonet: steps_per_second and steps_per_beat must be positive')

  @property
  def key_states_per_second(self) -> float:
    return self.steps_per_second * self.num_keys


def encoding_from_config(config: Any) -> Encoding:
  """The Encoding a pianonet config describes (settings it lacks take the original's value)."""
  return Encoding(steps_per_second=float(config.steps_per_second), num_keys=int(config.num_keys),
                  lowest_key=int(config.lowest_key), sustain=bool(config.get('sustain', False)),
                  time_grid=config.get('time_grid', 'beats'),
                  steps_per_beat=int(config.get('steps_per_beat', 24)),
                  note_rules=config.get('note_rules', 'original'),
                  note_end=config.get('note_end', 'floor'), trim=config.get('trim', 'all_keys'))


@dataclasses.dataclass
class EncodeStats:
  """What encoding did to the notes (summed over songs with `add`)."""
  songs: int = 0
  notes_in: int = 0
  notes_kept: int = 0
  out_of_range: int = 0   # outside the key window: dropped
  duplicates: int = 0     # 'separate': same key and same start step as another note: merged
  shifted: int = 0        # 'separate': restarted a key one step after its previous start: moved
  vanished: int = 0       # 'original': drew no step when drawn (later notes may erase more)
  key_states: int = 0
  key_down: int = 0

  def add(self, other: 'EncodeStats') -> None:
    for field in dataclasses.fields(self):
      setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

  @property
  def key_down_rate(self) -> float:
    return self.key_down / max(self.key_states, 1)


# Notes on the roll grid: int arrays key_N, start_N, end_N (end exclusive, in steps).
Notes = tuple[np.ndarray, np.ndarray, np.ndarray]


def render_notes(notes: Notes, num_keys: int, num_steps: int = 0
                 ) -> tuple[np.ndarray, int]:
  """Draws notes into a (T, num_keys) uint8 roll; returns (roll, number of notes shifted).

  Each note keeps at least one step. On one key, a note that starts while the previous one is
  still down (or right when it ends) cuts the previous one so that one up step separates them;
  when the previous note would vanish, the new note moves later instead. Notes are never merged
  (equal starts on one key must be removed first), so the roll has exactly one run per note.
  """
  key_N, start_N, end_N = (np.asarray(a, np.int64) for a in notes)
  order = np.lexsort((end_N, start_N, key_N))
  key_N, start_N, end_N = key_N[order], start_N[order], np.maximum(end_N[order], start_N[order] + 1)
  # Only notes that touch the previous note on their key need work; fixing one can push the next
  # one into conflict, so work through a heap of indices in order.
  same_key = np.zeros(len(key_N), bool)
  same_key[1:] = key_N[1:] == key_N[:-1]
  todo = list(np.nonzero(same_key[1:] & (start_N[1:] <= end_N[:-1]))[0] + 1)
  heapq.heapify(todo)
  shifted, done = 0, set()
  while todo:
    i = heapq.heappop(todo)
    if i in done or start_N[i] > end_N[i - 1]:
      continue
    done.add(i)
    end_N[i - 1] = max(start_N[i - 1] + 1, min(end_N[i - 1], start_N[i] - 1))
    if start_N[i] <= end_N[i - 1]:
      start_N[i] = end_N[i - 1] + 1
      end_N[i] = max(end_N[i], start_N[i] + 1)
      shifted += 1
      if i + 1 < len(key_N) and same_key[i + 1]:
        heapq.heappush(todo, i + 1)
  num_steps = max(num_steps, int(end_N.max()) if len(end_N) else 0)
  # Runs never overlap now, so +1 at each start and -1 at each end, summed over time, is the roll.
  edges_TK = np.zeros((num_steps + 1, num_keys), np.int8)
  np.add.at(edges_TK, (start_N, key_N), 1)
  np.add.at(edges_TK, (end_N, key_N), -1)
  roll_TK = np.cumsum(edges_TK[:-1], axis=0, dtype=np.int8).astype(np.uint8)
  return roll_TK, shifted


def roll_to_notes(roll_TK: np.ndarray) -> Notes:
  """Runs of 1s per key -> (key_N, start_N, end_N), sorted by start then key."""
  padded = np.pad(np.asarray(roll_TK, np.int8), ((1, 1), (0, 0)))
  diff = np.diff(padded, axis=0)
  start_t, start_k = np.nonzero(diff == 1)
  end_t, end_k = np.nonzero(diff == -1)
  # Both lists sorted by (key, time) pair runs up one to one.
  so, eo = np.lexsort((start_t, start_k)), np.lexsort((end_t, end_k))
  key_N, start_N, end_N = start_k[so], start_t[so], end_t[eo]
  order = np.lexsort((key_N, start_N))
  return key_N[order], start_N[order], end_N[order]


def trim_silence(roll_TK: np.ndarray) -> np.ndarray:
  """Drops all-up time steps at both ends."""
  active_T = np.nonzero(roll_TK.any(axis=1))[0]
  if not len(active_T):
    return roll_TK[:0]
  return roll_TK[active_T[0]:active_T[-1] + 1]


# --- The time grid: pretty_midi's beats (what pypianoroll quantizes to), or seconds. ---

def _qpm_to_bpm(qpm: float, numerator: int, denominator: int) -> float:
  """Beats per minute under a time signature (pretty_midi.utilities.qpm_to_bpm): a compound
  meter's beat is three of its denominator notes, a simple meter's one."""
  if denominator in (1, 2, 4, 8, 16, 32):
    if numerator == 3:
      return qpm * denominator / 4.0
    if numerator % 3 == 0:
      return qpm / 3.0 * denominator / 4.0
    return qpm * denominator / 4.0
  return qpm


@dataclasses.dataclass
class _TempoMap:
  """The timing of a NoteSequence as pretty_midi holds it."""
  tempo_times: np.ndarray                     # seconds, sorted, the first at 0
  qpms: np.ndarray
  signatures: list[tuple[float, int, int]]    # (time, numerator, denominator), sorted by time
  end_time: float                             # pretty_midi's get_end_time


def _tempo_map(seq: Any) -> _TempoMap:
  tempos = sorted(((t.time, t.qpm) for t in seq.tempos), key=lambda x: x[0])
  if not tempos or tempos[0][0] > 0:
    tempos.insert(0, (0.0, 120.0))  # pretty_midi's tempo before the first tempo event
  signatures = sorted(((ts.time, ts.numerator, ts.denominator) for ts in seq.time_signatures),
                      key=lambda x: x[0])
  times = ([n.end_time for n in seq.notes] + [b.time for b in seq.pitch_bends] +
           [c.time for c in seq.control_changes] + [ts[0] for ts in signatures] +
           [k.time for k in seq.key_signatures] + [a.time for a in seq.text_annotations] +
           [t for t, _ in tempos])
  return _TempoMap(np.array([t for t, _ in tempos]), np.array([q for _, q in tempos]),
                   signatures, max(times) if times else 0.0)


def _beats(tm: _TempoMap, start_time: float) -> np.ndarray:
  """Beat times from `start_time` to the end (pretty_midi.PrettyMIDI.get_beats, line by line:
  tempo changes inside a beat split it; time signature changes restart the beats)."""
  tempo_times, qpms, signatures = tm.tempo_times, tm.qpms, tm.signatures
  beats = [start_time]
  tempo_idx = 0
  while tempo_idx < len(tempo_times) - 1 and beats[-1] > tempo_times[tempo_idx + 1]:
    tempo_idx += 1
  ts_idx = 0
  while ts_idx < len(signatures) - 1 and beats[-1] >= signatures[ts_idx + 1][0]:
    ts_idx += 1

  def current_bpm() -> float:
    if signatures:
      return _qpm_to_bpm(qpms[tempo_idx], signatures[ts_idx][1], signatures[ts_idx][2])
    return qpms[tempo_idx]

  def gt_or_close(a: float, b: float) -> bool:
    return a > b or bool(np.isclose(a, b))

  while beats[-1] < tm.end_time:
    bpm = current_bpm()
    next_beat = beats[-1] + 60.0 / bpm
    if tempo_idx < len(tempo_times) - 1 and next_beat > tempo_times[tempo_idx + 1]:
      next_beat = beats[-1]
      beat_remaining = 1.0
      while (tempo_idx < len(tempo_times) - 1 and
             next_beat + beat_remaining * 60.0 / bpm >= tempo_times[tempo_idx + 1]):
        overshot_ratio = (tempo_times[tempo_idx + 1] - next_beat) / (60.0 / bpm)
        next_beat += overshot_ratio * 60.0 / bpm
        beat_remaining -= overshot_ratio
        tempo_idx += 1
        bpm = current_bpm()
      next_beat += beat_remaining * 60.0 / bpm
    if signatures and ts_idx == 0:
      if signatures[0][0] > beats[-1] and gt_or_close(next_beat, signatures[0][0]):
        next_beat = signatures[0][0]
    if ts_idx < len(signatures) - 1:
      if gt_or_close(next_beat, signatures[ts_idx + 1][0]):
        next_beat = signatures[ts_idx + 1][0]
        ts_idx += 1
    beats.append(next_beat)
  return np.array(beats[:-1])


def _estimate_first_beat(seq: Any, tm: _TempoMap, candidates: int = 10,
                         tolerance: float = 0.025) -> float:
  """The onset among the first few whose beat grid best meets the onsets
  (pretty_midi.PrettyMIDI.estimate_beat_start, line by line)."""
  notes = sorted(seq.notes, key=lambda note: note.start_time)
  beat_candidates, start_times = [], []
  onset_index = 0
  while (len(beat_candidates) <= candidates and len(beat_candidates) <= len(notes) and
         onset_index < len(notes)):
    if onset_index == 0 or abs(notes[onset_index - 1].start_time -
                               notes[onset_index].start_time) > .001:
      beat_candidates.append(_beats(tm, notes[onset_index].start_time))
      start_times.append(notes[onset_index].start_time)
    onset_index += 1
  fs = 1000
  onset_signal = np.zeros(int(fs * (tm.end_time + 1)))
  for note in notes:
    onset_signal[int(note.start_time * fs)] += note.velocity
  scores = np.zeros(len(beat_candidates))
  for n, beats in enumerate(beat_candidates):
    beat_signal = np.zeros(int(fs * (tm.end_time + 1)))
    for beat in np.append(0, beats):
      if beat - tolerance < 0:
        beat_signal[:int((beat + tolerance) * fs)] = np.ones(
            int(fs * 2 * tolerance + (beat - tolerance) * fs))
      else:
        beat_start = int((beat - tolerance) * fs)
        beat_signal[beat_start:beat_start + int(fs * tolerance * 2)] = np.ones(
            int(fs * tolerance * 2))
    scores[n] = np.dot(beat_signal, onset_signal) / beats.shape[0]
  return start_times[int(np.argmax(scores))]


def _note_steps(seq: Any, notes: list, enc: Encoding, first_beat_at_zero: bool = False
                ) -> tuple[np.ndarray, np.ndarray, float, int]:
  """(start_N, end_N) steps of `notes` on the encoding's grid, the time of step 0 and the
  number of steps the grid has up to the end of the piece.

  'beats' is pypianoroll 0.5.0's parse_pretty_midi: step = (beat index + fraction of that beat)
  * steps_per_beat, a start rounded (half to even) and an end truncated ('floor').
  """
  times_N = np.array([[n.start_time for n in notes], [n.end_time for n in notes]], np.float64)
  first_beat = 0.0
  tm = _tempo_map(seq)
  if enc.time_grid == 'seconds':
    steps_2N = times_N * enc.steps_per_second
    num_steps = int(np.ceil(tm.end_time * enc.steps_per_second)) + 1
  else:
    if first_beat_at_zero:
      first_beat = 0.0
    elif tm.signatures:
      first_beat = tm.signatures[0][0]
    elif len(seq.notes):
      first_beat = _estimate_first_beat(seq, tm)
    beats = _beats(tm, first_beat)
    if len(beats) < 2:  # the original fails on pieces shorter than one beat; give them two
      beat_seconds = 60.0 / tm.qpms[-1]
      beats = np.array([first_beat, first_beat + beat_seconds])
    num_steps = enc.steps_per_beat * len(beats)
    one_more = np.append(beats, 2 * beats[-1] - beats[-2])
    index_2N = np.searchsorted(beats, times_N) - 1
    steps_2N = (index_2N + (times_N - beats[index_2N]) /
                (one_more[index_2N + 1] - beats[index_2N])) * enc.steps_per_beat
  start_N = np.round(steps_2N[0]).astype(np.int64)
  end_N = (steps_2N[1].astype(np.int64) if enc.note_end == 'floor'
           else np.round(steps_2N[1]).astype(np.int64))
  return start_N, end_N, first_beat, num_steps


def _draw_original(notes: list, start_N: np.ndarray, end_N: np.ndarray, num_steps: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """pypianoroll 0.5.0's drawing: per track in order, each note clears the step before its start
  if that step is down and stops one step early if the step at its end is down; tracks merged by
  union; a drum note marks its onset. Returns (roll (128, T) uint8, drew_N: the note drew a step).

  The grid has num_steps steps; the roll keeps only those up to just after the last note (the
  rest is silence), and a track keeps rows only for its pitches, so that memory follows the music
  rather than the number of tracks. Indices count from num_steps, negative ones from its end, as
  in the original's numpy indexing.
  """
  last = max([int(x) for x in end_N] + [int(x) for x in start_N] + [0])
  kept = max(1, min(num_steps, last + 2))
  merged_PT = np.zeros((128, kept), np.uint8)
  drew_N = np.zeros(len(notes), bool)

  def position(index: int) -> int | None:
    """Where grid step `index` (negative: from the end) is kept; None when it is not."""
    index = index + num_steps if index < 0 else index
    return index if 0 <= index < kept else None

  by_track: dict[tuple[int, bool], list[int]] = {}
  for i, note in enumerate(notes):
    by_track.setdefault((note.instrument, note.is_drum), []).append(i)
  for (_, is_drum), indices in sorted(by_track.items()):
    rows: dict[int, np.ndarray] = {}
    for i in indices:
      pitch, start, end = notes[i].pitch, int(start_N[i]), int(end_N[i])
      if pitch not in rows:
        rows[pitch] = np.zeros(kept, np.uint8)
      row_T = rows[pitch]
      if is_drum:
        at = position(start) if -num_steps <= start < num_steps else None
        if at is not None:
          row_T[at] = 1
          drew_N[i] = True
        continue
      if notes[i].velocity < 1:
        continue
      if 0 < start < num_steps and position(start - 1) is not None and row_T[start - 1]:
        row_T[start - 1] = 0
      if -num_steps <= end < num_steps - 1:
        at = position(end)
        if at is not None and row_T[at]:
          end -= 1
      lo, hi, _ = slice(start, end).indices(num_steps)
      hi = min(hi, kept)
      if hi > lo:
        row_T[lo:hi] = 1
        drew_N[i] = True
    for pitch, row_T in rows.items():
      np.maximum(merged_PT[pitch], row_T, out=merged_PT[pitch])
  return merged_PT, drew_N


def sequence_to_roll(seq: Any, enc: Encoding = Encoding(), *, trim: bool = True,
                     first_beat_at_zero: bool = False) -> tuple[np.ndarray, EncodeStats]:
  """NoteSequence -> (roll_TK uint8, stats) under the encoding's rules (see the module docstring).

  trim=False keeps the silence between the grid's step 0 and the first note (the roll still ends
  at the last sounding step). first_beat_at_zero: the beat grid starts at 0 s whatever the time
  signatures and onsets say, as the original's serving code reads a seed (its CustomMultitrack,
  custom_multitrack.py:664-665); its training data estimated the first beat.
  """
  if enc.sustain:
    import note_seq  # pylint: disable=g-import-not-at-top  (slow import; only encoders need it)
    seq = note_seq.apply_sustain_control_changes(seq)
  stats = EncodeStats(songs=1)
  original = enc.note_rules == 'original'
  notes = [n for n in seq.notes if original or not n.is_drum]
  start_N, end_N, first_beat, num_steps = _note_steps(seq, notes, enc, first_beat_at_zero)
  if original:
    # Notes that end by the first beat are left out (only a late first beat has any).
    keep = [i for i, n in enumerate(notes) if n.end_time > first_beat]
    notes, start_N, end_N = [notes[i] for i in keep], start_N[keep], end_N[keep]
  pitch_N = np.array([n.pitch for n in notes], np.int64)
  pitched_N = np.array([not n.is_drum for n in notes], bool)
  in_window_N = (pitch_N >= enc.lowest_key) & (pitch_N < enc.lowest_key + enc.num_keys)
  stats.notes_in = int(pitched_N.sum())
  stats.out_of_range = int((pitched_N & ~in_window_N).sum())
  if original:
    roll_PT, drew_N = _draw_original(notes, start_N, end_N, num_steps)
    stats.vanished = int((pitched_N & in_window_N & ~drew_N).sum())
    stats.notes_kept = int((pitched_N & in_window_N & drew_N).sum())
    roll_TP = roll_PT.T
  else:
    if enc.trim == 'window':
      pitch_N, start_N, end_N = pitch_N[in_window_N], start_N[in_window_N], end_N[in_window_N]
      in_window_N = in_window_N[in_window_N]
    # Merge notes that land on the same key and start step (doubled notes in some MIDI files).
    if len(pitch_N):
      order = np.lexsort((-end_N, start_N, pitch_N))
      pitch_N, start_N, end_N = pitch_N[order], start_N[order], end_N[order]
      in_window_N = in_window_N[order]
      first = np.ones(len(pitch_N), bool)
      first[1:] = (pitch_N[1:] != pitch_N[:-1]) | (start_N[1:] != start_N[:-1])
      stats.duplicates = int((~first & in_window_N).sum())
      pitch_N, start_N, end_N = pitch_N[first], start_N[first], end_N[first]
      stats.notes_kept = int(in_window_N[first].sum())
    # Steps before the grid's step 0 (a seed's notes never have any) are cut off.
    start_N, end_N = np.maximum(start_N, 0), np.maximum(end_N, 0)
    roll_TP, stats.shifted = render_notes((pitch_N, start_N, end_N), 128)
  window = slice(enc.lowest_key, enc.lowest_key + enc.num_keys)
  if trim and enc.trim == 'all_keys':
    roll_TK = _trim_rows(roll_TP, roll_TP)[:, window]
  elif trim:
    roll_TK = trim_silence(roll_TP[:, window])
  else:
    active_T = np.nonzero(roll_TP.any(axis=1))[0]
    roll_TK = roll_TP[:active_T[-1] + 1 if len(active_T) else 0, window]
  roll_TK = np.ascontiguousarray(roll_TK, np.uint8)
  stats.key_states = roll_TK.size
  stats.key_down = int(roll_TK.sum())
  return roll_TK, stats


def _trim_rows(roll_TK: np.ndarray, judge_TP: np.ndarray) -> np.ndarray:
  """roll_TK without the steps at both ends where judge_TP is silent."""
  active_T = np.nonzero(judge_TP.any(axis=1))[0]
  if not len(active_T):
    return roll_TK[:0]
  return roll_TK[active_T[0]:active_T[-1] + 1]


def roll_to_sequence(roll_TK: np.ndarray, enc: Encoding = Encoding(),
                     velocity: int = DEFAULT_VELOCITY) -> Any:
  """Inverse of `sequence_to_roll`: each run of 1s on a key becomes one note."""
  import note_seq  # pylint: disable=g-import-not-at-top
  seq = note_seq.NoteSequence()
  seq.ticks_per_quarter = note_seq.STANDARD_PPQ
  # 120 qpm in 4/4 from 0, as the original writes MIDI (pretty_midi adds the 4/4): a beat grid
  # then starts at 0 and has 24 steps per half second, so encoding inverts decoding.
  seq.tempos.add(qpm=120.0)
  seq.time_signatures.add(time=0.0, numerator=4, denominator=4)
  for k, s, e in zip(*roll_to_notes(roll_TK)):
    seq.notes.add(pitch=int(k) + enc.lowest_key, velocity=velocity, instrument=0, program=0,
                  start_time=float(s) / enc.steps_per_second,
                  end_time=float(e) / enc.steps_per_second)
  seq.total_time = roll_TK.shape[0] / enc.steps_per_second
  return seq


def flatten(roll_TK: np.ndarray) -> np.ndarray:
  """(T, K) -> (T * K,) uint8, index = t * K + k."""
  return np.ascontiguousarray(roll_TK, np.uint8).reshape(-1)


def unflatten(keys_N: np.ndarray, num_keys: int) -> np.ndarray:
  """(N,) -> (ceil(N / K), K); a partial last time step is padded with up states."""
  keys_N = np.asarray(keys_N, np.uint8).reshape(-1)
  pad = -len(keys_N) % num_keys
  return np.pad(keys_N, (0, pad)).reshape(-1, num_keys)


def sequence_to_keys(seq: Any, enc: Encoding = Encoding()) -> np.ndarray:
  """NoteSequence -> flattened key states (trimmed of silence)."""
  return flatten(sequence_to_roll(seq, enc)[0])


def keys_to_sequence(keys_N: np.ndarray, enc: Encoding = Encoding()) -> Any:
  """Flattened key states -> NoteSequence (write it with common.midi.write_midi)."""
  return roll_to_sequence(unflatten(keys_N, enc.num_keys), enc)


# --- Augmentation. ---

def stretch_factors(num_copies: int, rng: np.random.Generator, low: float = 0.85,
                    high: float = 1.2) -> np.ndarray:
  """One factor per copy, drawn uniformly inside each of num_copies equal strata of [low, high]."""
  edges = np.linspace(low, high, num_copies + 1)
  return edges[:-1] + (edges[1:] - edges[:-1]) * rng.random(num_copies)


STRETCH_METHODS = ('rows', 'notes')


def stretch_roll(roll_TK: np.ndarray, factor: float, method: str = 'rows') -> np.ndarray:
  """Time-stretches a roll by `factor` (> 1 is slower).

  'rows': the original's Pianoroll.stretch, nearest-neighbour resampling of the time steps
  (which can drop a one-step note or the up step between repeated notes); 'notes': note
  boundaries resampled (rounded) and the notes re-rendered, keeping every note.
  """
  if factor <= 0:
    raise ValueError(f'stretch factor must be positive, got {factor}.')
  if method not in STRETCH_METHODS:
    raise UserError(f'pianonet: stretch_method={method!r} is not one of '
                    f'{", ".join(STRETCH_METHODS)}')
  num_steps_in = roll_TK.shape[0]
  if method == 'rows':
    if factor == 1.0 or not num_steps_in:
      return roll_TK.copy()
    num_steps = round(num_steps_in * factor)
    fractions = np.arange(0.0, 1.0, 1.0 / max(num_steps, 1))
    rows = np.clip(np.round(fractions * num_steps_in).astype(int), None, num_steps_in - 1)
    return roll_TK[rows]
  key_N, start_N, end_N = roll_to_notes(roll_TK)
  new_start = np.rint(start_N * factor).astype(np.int64)
  new_end = np.rint(end_N * factor).astype(np.int64)
  num_steps = int(np.rint(num_steps_in * factor))
  return render_notes((key_N, new_start, new_end), roll_TK.shape[1], num_steps)[0]


# --- Concatenation into one sequence. ---

@dataclasses.dataclass
class SongSequence:
  """Songs concatenated with silence between them, flattened. keys_N may be a read-only memmap."""
  keys_N: np.ndarray
  song_starts: list[int]   # index (in key states) where each song (copy) begins
  num_keys: int
  stats: EncodeStats
  ids: list[str] = dataclasses.field(default_factory=list)  # what each song (copy) is
  key_down: int = 0        # key states down in keys_N

  @property
  def num_steps(self) -> int:
    return len(self.keys_N) // self.num_keys

  @property
  def key_down_rate(self) -> float:
    """The key-down rate of the whole sequence, silence between songs included: the rate a
    model that ignores the music should predict on windows drawn from it."""
    return self.key_down / max(len(self.keys_N), 1)


PADDINGS = ('after', 'around')


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """How a split's songs become copies and how silence separates them (see configs.py)."""
  stretch_copies: int = 0
  stretch_range: tuple[float, float] = (0.85, 1.2)
  stretch_method: str = 'rows'
  unstretched_copy: bool = False
  pad_seconds: tuple[float, float] = (4.0, 6.0)
  padding: str = 'after'

  def __post_init__(self):
    if self.padding not in PADDINGS:
      raise UserError(f'pianonet: padding={self.padding!r} is not one of {", ".join(PADDINGS)}')
    if self.stretch_copies < 0:
      raise UserError(f'pianonet: stretch_copies must be >= 0, got {self.stretch_copies}')


def augmentation_from_config(config: Any, split: str) -> Augmentation:
  """The Augmentation of a split: stretched copies for training, and for the held-out splits
  when config.stretch_validation (the original stretches its validation set too)."""
  stretched = split == 'train' or bool(config.get('stretch_validation', True))
  low, high = (float(x) for x in config.get('stretch_range', (0.85, 1.2)))
  return Augmentation(
      stretch_copies=int(config.get('stretch_copies', 0)) if stretched else 0,
      stretch_range=(low, high), stretch_method=config.get('stretch_method', 'rows'),
      unstretched_copy=bool(config.get('unstretched_copy', False)),
      pad_seconds=tuple(float(x) for x in config.pad_seconds),
      padding=config.get('padding', 'after'))


def _pad_steps(rng: np.random.Generator, enc: Encoding, aug: Augmentation) -> int:
  low, high = aug.pad_seconds[0], aug.pad_seconds[-1]
  if aug.padding == 'after':  # the original: int(uniform(low * 48, high * 48))
    return int(rng.uniform(low * enc.steps_per_second, high * enc.steps_per_second))
  return int(round(rng.uniform(low, high) * enc.steps_per_second))


def song_rolls(songs: Iterable[Any], enc: Encoding, rng: np.random.Generator,
               aug: Augmentation = Augmentation(), stats: EncodeStats | None = None, *,
               ids: Sequence[str] | None = None, copy_ids: list[str] | None = None
               ) -> Iterable[np.ndarray]:
  """Yields the copies of each song's roll: aug.stretch_copies stretched ones, after the song
  itself when aug.unstretched_copy (or when there are no stretched copies). Songs with no note
  in the key window are left out. copy_ids, when given, gets the id of each copy yielded
  (ids[i], or 'song <i>', then ' x<factor>' for a stretched copy)."""
  for i, seq in enumerate(songs):
    roll_TK, song_stats = sequence_to_roll(seq, enc)
    if stats is not None:
      stats.add(song_stats)
    if not roll_TK.shape[0]:
      continue
    song_id = ids[i] if ids is not None else f'song {i}'
    if aug.unstretched_copy or not aug.stretch_copies:
      if copy_ids is not None:
        copy_ids.append(song_id)
      yield roll_TK
    for factor in stretch_factors(aug.stretch_copies, rng, *aug.stretch_range):
      if copy_ids is not None:
        copy_ids.append(f'{song_id} x{factor:.4f}')
      yield stretch_roll(roll_TK, factor, aug.stretch_method)


def concatenate(rolls: Iterable[np.ndarray], enc: Encoding, rng: np.random.Generator,
                aug: Augmentation = Augmentation(), out: Any = None
                ) -> tuple[list[int], int, int]:
  """Writes [silence,] song, silence, song, ..., silence as flattened uint8 into `out`.

  out: a list (arrays are appended) or a binary file (bytes are written). Returns (song start
  indices, total length, number of key states down). Streaming keeps memory flat for data sets
  of many gigabytes. The original concatenates its copies in a shuffled order; here each song's
  copies follow it, which changes nothing for windows drawn at random or evenly spaced.
  """
  song_starts, length, key_down = [], 0, 0

  def emit(keys: np.ndarray) -> None:
    nonlocal length
    if isinstance(out, list):
      out.append(keys)
    else:
      out.write(keys.tobytes())
    length += len(keys)

  if aug.padding == 'around':
    emit(np.zeros(_pad_steps(rng, enc, aug) * enc.num_keys, np.uint8))
  for roll_TK in rolls:
    song_starts.append(length)
    emit(flatten(roll_TK))
    key_down += int(roll_TK.sum())
    emit(np.zeros(_pad_steps(rng, enc, aug) * enc.num_keys, np.uint8))
  return song_starts, length, key_down


def build_sequence(songs: Iterable[Any], enc: Encoding, aug: Augmentation = Augmentation(), *,
                   seed: int = 0, ids: Sequence[str] | None = None) -> SongSequence:
  """Encodes, augments and concatenates songs in memory."""
  rng = np.random.default_rng(seed)
  stats = EncodeStats()
  chunks: list[np.ndarray] = [np.zeros(0, np.uint8)]
  copy_ids: list[str] = []
  starts, _, key_down = concatenate(
      song_rolls(songs, enc, rng, aug, stats, ids=ids, copy_ids=copy_ids), enc, rng, aug, chunks)
  return SongSequence(np.concatenate(chunks), starts, enc.num_keys, stats, copy_ids, key_down)


# --- Synthetic data (the 'tiny' config and tests; no files needed). ---

def synthetic_songs(num_songs: int, enc: Encoding, seed: int = 0, seconds: float = 8.0) -> list:
  """Little piano pieces: a chord per beat under an arpeggiated scale walk, all on the grid."""
  import note_seq  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  step = 1.0 / enc.steps_per_second
  songs = []
  for _ in range(num_songs):
    seq = note_seq.NoteSequence(ticks_per_quarter=note_seq.STANDARD_PPQ)
    seq.tempos.add(qpm=120.0)
    seq.time_signatures.add(numerator=4, denominator=4)  # the first beat at 0 on a beat grid
    beat_steps = int(rng.integers(3, 6))
    num_beats = max(1, int(seconds * enc.steps_per_second) // beat_steps)
    root = int(rng.integers(0, max(1, enc.num_keys - 14)))
    for b in range(num_beats):
      t0 = b * beat_steps * step
      chord_root = root + [0, 5, 7, 0][b // 2 % 4]
      for interval in (0, 4, 7):
        seq.notes.add(pitch=enc.lowest_key + chord_root + interval, velocity=80, start_time=t0,
                      end_time=t0 + (beat_steps - 1) * step)
      # The melody may leave the key window at the top; encoding then drops (and counts) it.
      melody = enc.lowest_key + root + 15 + [0, 2, 4, 2][b % 4]
      seq.notes.add(pitch=melody, velocity=80, start_time=t0, end_time=t0 + step)
    seq.total_time = num_beats * beat_steps * step
    songs.append(seq)
  return songs


# --- Splits of a configured data set, with an on-disk cache. ---

def _folder_fingerprint(config: Any, split: str) -> Any:
  """What the split's files are (names, sizes, times), so that a changed data folder is encoded
  anew rather than read from a stale cache; None where the files cannot be listed cheaply."""
  from common import datasets  # pylint: disable=g-import-not-at-top
  from common import midi  # pylint: disable=g-import-not-at-top
  data_dir = config.get('data_dir') or None
  try:
    if config.dataset == 'midi_dir':
      root = os.path.abspath(os.path.expanduser(data_dir or '.'))
      paths = sorted(os.path.relpath(os.path.join(folder, f), root)
                     for folder, _, names in os.walk(root) for f in names
                     if os.path.splitext(f)[1].lower() in midi.MIDI_EXTENSIONS)
    else:
      root = data_dir or datasets.default_data_dir(config.dataset)
      paths = datasets.list_files(config.dataset, data_dir, split)
  except (UserError, OSError):
    return None
  entries = []
  for rel in paths:
    try:
      st = os.stat(os.path.join(root, rel))
      entries.append((rel, st.st_size, st.st_mtime_ns))
    except OSError:
      entries.append((rel, None, None))
  return hashlib.sha1(json.dumps(entries).encode()).hexdigest()


def split_settings(config: Any, split: str) -> dict[str, Any]:
  """Every setting the sequence of a split depends on (not the data files themselves)."""
  return dict(dataset=config.dataset, data_dir=os.path.abspath(config.data_dir)
              if config.get('data_dir') else None, split=split,
              enc=dataclasses.asdict(encoding_from_config(config)),
              aug=dataclasses.asdict(augmentation_from_config(config, split)),
              max_songs=config.get('max_pieces') or 0, num_synthetic=config.get('num_synthetic'),
              seed=config.seed)


def _cache_key(config: Any, split: str) -> str:
  fields = dict(split_settings(config, split), files=_folder_fingerprint(config, split),
                version=2)
  return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def load_songs(config: Any, split: str) -> tuple[list, list[str]]:
  """The split's NoteSequences and their ids: `num_synthetic` synthetic songs (a quarter of that
  for a held-out split), or common.datasets' split of the data set, the split every model of
  this codebase uses (its first config.max_pieces pieces when that is set)."""
  if config.dataset == 'synthetic':
    offset = {'train': 0, 'valid': 1, 'test': 2}.get(split, 0)
    num = int(config.get('num_synthetic') or 8)
    num = num if split == 'train' else max(2, num // 4)
    songs = synthetic_songs(num, encoding_from_config(config), seed=config.seed * 7 + offset)
    return songs, [f'synthetic/{split}/{i}' for i in range(num)]
  from common import datasets  # pylint: disable=g-import-not-at-top
  limit = {'limit': int(config.max_pieces)} if config.get('max_pieces') else {}
  dataset = datasets.get_dataset(config.dataset, config.get('data_dir') or None, split, **limit)
  if not dataset.examples:
    raise UserError(f'pianonet: data set {config.dataset!r} split {split!r} has no readable songs '
                    f'(data_dir={config.get("data_dir")!r}, skipped {len(dataset.skipped)}).')
  return list(dataset.examples), list(dataset.ids)


def load_split(config: Any, split: str) -> SongSequence:
  """The flattened sequence of a split, with the split's augmentation (augmentation_from_config).

  With config.cache_dir set, the result is written once (atomically) as <key>.bin + <key>.json and
  later runs memory-map it, so multi-gigabyte sequences cost no RAM and no re-parsing; the key
  covers the settings and the data folder's files.
  """
  enc = encoding_from_config(config)
  aug = augmentation_from_config(config, split)
  seed = config.seed + {'train': 0, 'valid': 1, 'test': 2}.get(split, 3)
  cache_dir = config.get('cache_dir')
  if not cache_dir:
    songs, ids = load_songs(config, split)
    return build_sequence(songs, enc, aug, seed=seed, ids=ids)
  cache_dir = os.path.expanduser(cache_dir)
  key = f'pianonet_{config.dataset}_{split}_{_cache_key(config, split)}'
  bin_path, meta_path = (os.path.join(cache_dir, key + ext) for ext in ('.bin', '.json'))
  if not (os.path.exists(bin_path) and os.path.exists(meta_path)):
    os.makedirs(cache_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    stats = EncodeStats()
    songs, ids = load_songs(config, split)
    copy_ids: list[str] = []
    rolls = song_rolls(songs, enc, rng, aug, stats, ids=ids, copy_ids=copy_ids)
    written = {}

    def write_keys(f):
      written['starts'], _, written['key_down'] = concatenate(rolls, enc, rng, aug, f)

    files.atomic_write(bin_path, write_keys)
    meta = dict(song_starts=written['starts'], ids=copy_ids, num_keys=enc.num_keys,
                stats=dataclasses.asdict(stats), key_down=written['key_down'])
    # The .json goes last: a reader that finds it finds a complete .bin.
    files.atomic_write(meta_path, lambda f: json.dump(meta, f), mode='w')
  with open(meta_path) as f:
    meta = json.load(f)
  keys_N = np.memmap(bin_path, dtype=np.uint8, mode='r')
  return SongSequence(keys_N, meta['song_starts'], meta['num_keys'], EncodeStats(**meta['stats']),
                      meta['ids'], meta['key_down'])


def window(keys_N: np.ndarray, end: int, length: int) -> np.ndarray:
  """keys_N[end - length : end] as a fresh uint8 array, zero (silence) where it starts before 0."""
  start = end - length
  out = np.asarray(keys_N[max(start, 0):end], np.uint8)
  if start < 0:
    out = np.concatenate([np.zeros(-start, np.uint8), out])
  return out
