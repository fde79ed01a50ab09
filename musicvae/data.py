"""MusicVAE encodings: quantized NoteSequences <-> per-16th-step token streams.

Every stream has one token per 16th-note step, 16 steps per bar (4/4 as in the paper;
2/4 pieces are read as 4/4, other meters are dropped):
- melody (90 classes): 0 no event (hold the sounding note, or stay silent), 1 note-off,
  2..89 note-on of MIDI pitch 21..108. Monophonic: of notes starting together the highest wins and
  a new onset ends the sounding note.
- drums (512 classes): the bit set of the 9 drum classes (kick, snare, closed hi-hat, open hi-hat,
  low/mid/high tom, crash, ride; GM pitches mapped as note_seq's DEFAULT_DRUM_TYPE_PITCHES) that
  start at the step. Decoding writes each class's first (canonical) pitch, one step long.
- trio: melody (programs 0-31), bass (programs 32-39), drums (is_drum): three streams, tokens
  (T, 3). As Magenta's TrioConverter does, each instrument is encoded on its own and every
  combination of one melody, one bass and one drum instrument gives its own examples
  (`trio_combinations`; False merges the instruments of each range into one line).

A model example is a slice of `num_bars` bars of tokens (T, K) with K tracks, cut every bar. With
extraction 'magenta' (melody, drums) slices lie inside the melodies and drum tracks that Magenta's
converters extract, which end at `max_silence_bars` of silence (`magenta_slices`); with 'grid'
they are cut over the whole piece and slices with more than `max_silence_bars` of silence in any
track, or pitches outside 21..108, are dropped (trio combinations: Magenta's coverage rule, see
`trio_combination_slices`).
`extract_slices` returns the kept slices and a Counter of what happened to the others;
`describe_extraction` says it in words.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Any, Iterable, Sequence

import numpy as np

from common import midi
from common.errors import UserError

with midi.warnings.catch_warnings():
  midi.warnings.filterwarnings('ignore', message='.*ffmpeg.*', category=RuntimeWarning)
  from note_seq import drums_encoder_decoder
  from note_seq import sequences_lib

NoteSequence = midi.NoteSequence

STEPS_PER_QUARTER = 4
STEPS_PER_BAR = 16
NO_EVENT = 0
NOTE_OFF = 1
MIN_PITCH = 21
MAX_PITCH = 108
MELODY_CLASSES = 2 + MAX_PITCH - MIN_PITCH + 1  # 90
DRUM_PITCH_CLASSES: tuple[tuple[int, ...], ...] = tuple(
    tuple(p) for p in drums_encoder_decoder.DEFAULT_DRUM_TYPE_PITCHES)
NUM_DRUM_CLASSES = len(DRUM_PITCH_CLASSES)  # 9
DRUM_CLASSES = 2**NUM_DRUM_CLASSES  # 512
_DRUM_CLASS_OF_PITCH = {p: i for i, ps in enumerate(DRUM_PITCH_CLASSES) for p in ps}
MELODY_PROGRAMS = (0, 31)
BASS_PROGRAMS = (32, 39)
DEFAULT_QPM = 120.0

TRACK_VOCAB = {'melody': MELODY_CLASSES, 'bass': MELODY_CLASSES, 'drums': DRUM_CLASSES}
EXTRACTIONS = ('magenta', 'grid')
# Magenta's converters truncate each extracted melody or drum track to 100 bars before slicing.
MAX_TRACK_BARS = 100


@dataclasses.dataclass(frozen=True)
class Encoding:
  """What one model example is.

  kind: 'melody', 'drums' or 'trio'.
  num_bars: bars per example (2 or 16 in the paper).
  max_silence_bars: longest silence (in bars) a kept slice may hold, in each track.
  melody_track: which notes form the melody (see `select_notes`); trio ignores it.
  trio_combinations: trio only: each instrument on its own, one example per combination of a
    melody, a bass and a drum instrument (Magenta); False: every instrument of a program range
    merged into one line.
  extraction: melody and drums: 'magenta' cuts slices inside the melodies (per instrument) and
    drum tracks that note_seq extracts, which end at max_silence_bars of silence (see
    `magenta_slices`); 'grid' cuts the selected notes as one line on a one-bar grid and drops
    slices with more than max_silence_bars of silence.
  """
  kind: str = 'melody'
  num_bars: int = 2
  max_silence_bars: float = 1.0
  melody_track: str = 'all'
  trio_combinations: bool = True
  extraction: str = 'magenta'

  def __post_init__(self):
    if self.kind not in ('melody', 'drums', 'trio'):
      raise UserError(f'unknown MusicVAE encoding {self.kind!r}; use melody, drums or trio')
    if self.extraction not in EXTRACTIONS:
      raise UserError(f'unknown extraction {self.extraction!r}; use {" or ".join(EXTRACTIONS)}')
    if self.num_bars < 1:
      raise UserError(f'num_bars must be >= 1, got {self.num_bars}')

  @property
  def tracks(self) -> tuple[str, ...]:
    return {'melody': ('melody',), 'drums': ('drums',),
            'trio': ('melody', 'bass', 'drums')}[self.kind]

  @property
  def vocab_sizes(self) -> tuple[int, ...]:
    return tuple(TRACK_VOCAB[t] for t in self.tracks)

  @property
  def num_steps(self) -> int:
    return self.num_bars * STEPS_PER_BAR


# ------------------------------------------------------------------------------------------------
# Single streams.


# Which track holds the melody in each data set, when the config does not say.
DEFAULT_MELODY_TRACK = {'pop909': 'name:MELODY', 'nottingham': 'first'}


def encoding_from_config(config: Any) -> Encoding:
  """The Encoding a MusicVAE config describes (config.encoding, config.dataset)."""
  enc = config.encoding
  track = enc.get('melody_track') or DEFAULT_MELODY_TRACK.get(config.dataset, 'all')
  return Encoding(kind=enc.kind, num_bars=enc.num_bars,
                  max_silence_bars=enc.get('max_silence_bars', 1.0), melody_track=track,
                  trio_combinations=bool(enc.get('trio_combinations', True)),
                  extraction=enc.get('extraction', 'magenta'))


def melody_events(notes: Iterable[tuple[int, int, int]], num_steps: int) -> np.ndarray:
  """(start_step, end_step, pitch) notes -> int16 (num_steps,) raw events.

  Raw events are -2 no event, -1 note-off, else the MIDI pitch (any 0..127, so range checks can
  happen per slice and after transposition).
  """
  onsets: dict[int, tuple[int, int]] = {}
  for start, end, pitch in notes:
    if 0 <= start < num_steps and (start not in onsets or pitch > onsets[start][0]):
      onsets[start] = (pitch, max(end, start + 1))
  events = np.full(num_steps, -2, np.int16)
  starts = sorted(onsets)
  for i, start in enumerate(starts):
    pitch, end = onsets[start]
    events[start] = pitch
    following = starts[i + 1] if i + 1 < len(starts) else num_steps
    if end < following:
      events[end] = -1
  return events


def events_to_tokens(events: np.ndarray) -> np.ndarray:
  """Raw melody events -> class ids; pitches must lie in MIN_PITCH..MAX_PITCH."""
  events = np.asarray(events)
  pitched = events >= 0
  if np.any(pitched & ((events < MIN_PITCH) | (events > MAX_PITCH))):
    raise ValueError(f'melody pitch outside {MIN_PITCH}..{MAX_PITCH}')
  return np.where(pitched, events - MIN_PITCH + 2, events + 2).astype(np.int16)


def melody_notes(tokens_T: np.ndarray) -> list[tuple[int, int, int]]:
  """Melody class ids -> (start_step, end_step, pitch) notes; stray note-offs are ignored."""
  notes, current = [], None
  for t, token in enumerate(np.asarray(tokens_T).tolist()):
    if token == NO_EVENT:
      continue
    if current is not None:
      notes.append((current[0], t, current[1]))
      current = None
    if token >= 2:
      current = (t, token - 2 + MIN_PITCH)
  if current is not None:
    notes.append((current[0], len(tokens_T), current[1]))
  return notes


def drum_class(pitch: int) -> int | None:
  """The 9-class index of a GM drum pitch (None for pitches outside the mapping)."""
  return _DRUM_CLASS_OF_PITCH.get(pitch)


def drum_tokens(notes: Iterable[tuple[int, int]], num_steps: int) -> np.ndarray:
  """(start_step, pitch) drum hits -> int16 (num_steps,) bit sets over the 9 classes."""
  tokens = np.zeros(num_steps, np.int16)
  for start, pitch in notes:
    cls = drum_class(pitch)
    if cls is not None and 0 <= start < num_steps:
      tokens[start] |= 1 << cls
  return tokens


def drum_notes(tokens_T: np.ndarray) -> list[tuple[int, int]]:
  """Drum bit sets -> (step, canonical pitch) hits, in step then class order."""
  return [(t, DRUM_PITCH_CLASSES[c][0]) for t, token in enumerate(np.asarray(tokens_T).tolist())
          for c in range(NUM_DRUM_CLASSES) if token >> c & 1]


def _sounding(events: np.ndarray) -> np.ndarray:
  """Per step: is a melody note sounding (raw events; a slice's first note starts the sound)."""
  idx = np.where(events != -2, np.arange(len(events)), -1)
  last = np.maximum.accumulate(idx)
  return (last >= 0) & (events[np.maximum(last, 0)] >= 0)


def _longest_run(mask: np.ndarray) -> int:
  """Length of the longest run of True."""
  if not mask.any():
    return 0
  padded = np.concatenate([[0], mask.astype(np.int8), [0]])
  edges = np.flatnonzero(np.diff(padded))
  return int((edges[1::2] - edges[::2]).max())


# ------------------------------------------------------------------------------------------------
# NoteSequences.


def select_notes(seq: NoteSequence, selector: str) -> list:
  """The notes of `seq` that form one track.

  selector: 'all' (every pitched note), 'first' (the lowest instrument number with pitched notes:
  nottingham's melody), 'name:MELODY' (instruments with that name, case-insensitive: POP909),
  'programs:32-39' (pitched notes with programs in the range) or 'drums'.
  """
  if selector == 'drums':
    return [n for n in seq.notes if n.is_drum]
  pitched = [n for n in seq.notes if not n.is_drum]
  if selector == 'all':
    return pitched
  if selector == 'first':
    if not pitched:
      return []
    first = min(n.instrument for n in pitched)
    return [n for n in pitched if n.instrument == first]
  kind, _, value = selector.partition(':')
  if kind == 'name' and value:
    wanted = {i.instrument for i in seq.instrument_infos if i.name.strip().lower() ==
              value.strip().lower()}
    return [n for n in pitched if n.instrument in wanted]
  if kind == 'programs' and value:
    lo, _, hi = value.partition('-')
    lo, hi = int(lo), int(hi or lo)
    return [n for n in pitched if lo <= n.program <= hi]
  raise UserError(f'unknown track selector {selector!r}; use all, first, drums, name:<instrument '
                  'name> or programs:<lo>-<hi>')


def quantized_pieces(seq: NoteSequence, stats: collections.Counter | None = None
                     ) -> list[NoteSequence]:
  """`seq` quantized at 4 steps per quarter, split at tempo/time-signature changes.

  Keeps 4/4 and 2/2 pieces, and 2/4 and 1/4 ones read as 4/4 (16-step bars; POP909 labels its
  4/4 songs 2/4 or 1/4: 486 of its 726 training songs say 1/4); drops other meters.
  """
  stats = stats if stats is not None else collections.Counter()
  if seq.quantization_info.steps_per_quarter == STEPS_PER_QUARTER:
    pieces = [seq]
  elif sequences_lib.is_quantized_sequence(seq):
    stats['sequences_other_quantization'] += 1
    return []
  else:
    pieces = []
    for part in sequences_lib.split_note_sequence_on_time_changes(seq):
      try:
        pieces.append(midi.quantize(part, STEPS_PER_QUARTER))
      except midi.MidiError:
        stats['pieces_not_quantizable'] += 1
  kept = []
  for piece in pieces:
    try:
      steps_per_bar = sequences_lib.steps_per_bar_in_quantized_sequence(piece)
    except sequences_lib.BadTimeSignatureError:
      steps_per_bar = None
    if steps_per_bar in (STEPS_PER_BAR // 2, STEPS_PER_BAR // 4):
      # 2/4 or 1/4 (POP909 labels its 4/4 songs so): bars of four quarter beats from the start.
      stats[f'pieces_{int(steps_per_bar) // STEPS_PER_QUARTER}_4_as_4_4'] += 1
    elif steps_per_bar != STEPS_PER_BAR:
      stats['pieces_not_4_4'] += 1
      continue
    kept.append(piece)
  return kept


def _raw_tracks(seq_q: NoteSequence, enc: Encoding) -> np.ndarray:
  """A quantized sequence -> raw int16 (T, K) streams (melody pitches raw; drums as bit sets)."""
  end = max([n.quantized_end_step for n in seq_q.notes] + [0])
  num_steps = -(-end // STEPS_PER_BAR) * STEPS_PER_BAR
  selectors = {'melody': enc.melody_track if enc.kind == 'melody' else
                         f'programs:{MELODY_PROGRAMS[0]}-{MELODY_PROGRAMS[1]}',
               'bass': f'programs:{BASS_PROGRAMS[0]}-{BASS_PROGRAMS[1]}',
               'drums': 'drums'}
  streams = []
  for track in enc.tracks:
    notes = select_notes(seq_q, selectors[track])
    if track == 'drums':
      streams.append(drum_tokens(((n.quantized_start_step, n.pitch) for n in notes), num_steps))
    else:
      streams.append(melody_events(
          ((n.quantized_start_step, n.quantized_end_step, n.pitch) for n in notes), num_steps))
  return np.stack(streams, axis=1)


def slices_from_raw(raw_TK: np.ndarray, enc: Encoding,
                    stats: collections.Counter | None = None) -> list[np.ndarray]:
  """Cuts raw streams into every-bar slices of enc.num_bars; returns class tokens int16 (T, K)."""
  stats = stats if stats is not None else collections.Counter()
  num_steps, max_silence = enc.num_steps, int(round(enc.max_silence_bars * STEPS_PER_BAR))
  if raw_TK.shape[0] < num_steps:
    stats['pieces_shorter_than_a_slice'] += 1  # e.g. Groove's one-bar fills
  kept = []
  for start in range(0, raw_TK.shape[0] - num_steps + 1, STEPS_PER_BAR):
    stats['slices_considered'] += 1
    raw = raw_TK[start:start + num_steps]
    why = None
    streams = []
    for k, track in enumerate(enc.tracks):
      stream = raw[:, k]
      if track == 'drums':
        silent = stream == 0
      else:
        # A note held into the slice is not part of it: the slice starts silent until its first
        # event, exactly as its tokens decode.
        silent = ~_sounding(stream)
      if silent.all():
        why = why or f'dropped_empty_{track}'
      elif _longest_run(silent) > max_silence:
        why = why or f'dropped_silence_{track}'
      if track == 'drums':
        streams.append(stream)
      else:
        if np.any((stream >= 0) & ((stream < MIN_PITCH) | (stream > MAX_PITCH))):
          why = why or 'dropped_pitch_out_of_range'
          continue
        streams.append(events_to_tokens(stream))
    if why:
      stats[why] += 1
      continue
    stats['slices_kept'] += 1
    kept.append(np.stack(streams, axis=1).astype(np.int16))
  return kept


def _trio_part(note) -> str:
  """What a note makes its instrument in a trio (Magenta's TrioConverter: by program)."""
  if note.is_drum:
    return 'drums'
  if MELODY_PROGRAMS[0] <= note.program <= MELODY_PROGRAMS[1]:
    return 'melody'
  if BASS_PROGRAMS[0] <= note.program <= BASS_PROGRAMS[1]:
    return 'bass'
  return 'other'


def trio_combination_slices(seq_q: NoteSequence, enc: Encoding,
                            stats: collections.Counter | None = None) -> list[np.ndarray]:
  """Trio slices of a quantized piece as Magenta's TrioConverter cuts them.

  Each instrument number is typed by its notes (drums, melody programs 0-31, bass 32-39; other
  programs or mixed types leave it out) and encoded on its own: melody and bass keep the notes
  in 21..108 (the highest of simultaneous onsets), drums the 9 classes. Every (melody, bass,
  drums) combination of instruments, in ascending instrument numbers, gives a slice at each bar
  where all three are covered for num_bars bars: a bar is covered by an instrument with a note
  sounding within max_silence_bars bars of it (Magenta's gap_bars), and the first and last
  max_silence_bars bars count as covered when any of the three plays there.
  """
  stats = stats if stats is not None else collections.Counter()
  end = max([n.quantized_end_step for n in seq_q.notes] + [0])
  total_steps = max(int(seq_q.total_quantized_steps), end)
  total_bars = -(-total_steps // STEPS_PER_BAR)
  num_steps, gap = total_bars * STEPS_PER_BAR, int(enc.max_silence_bars)
  parts: dict[int, str] = {}
  coverage: dict[int, np.ndarray] = {}
  for note in seq_q.notes:
    part = _trio_part(note)
    parts[note.instrument] = part if parts.get(note.instrument, part) == part else 'other'
    covered = coverage.setdefault(note.instrument, np.zeros(total_bars, bool))
    start_bar = note.quantized_start_step // STEPS_PER_BAR
    covered[start_bar:-(-note.quantized_end_step // STEPS_PER_BAR)] = True
  by_part = {part: sorted(i for i, p in parts.items() if p == part)
             for part in ('melody', 'bass', 'drums')}
  missing = [part for part, instruments in by_part.items() if not instruments]
  if missing:
    stats[f'pieces_without_{missing[0]}'] += 1
    return []
  streams: dict[int, np.ndarray] = {}
  for part, instruments in by_part.items():
    for i in instruments:
      notes = [n for n in seq_q.notes if n.instrument == i and n.velocity > 0]
      if part == 'drums':
        hits = [(n.quantized_start_step, n.pitch) for n in notes if drum_class(n.pitch) is not None]
        if hits:
          streams[i] = drum_tokens(hits, num_steps)
      else:
        spans = [(n.quantized_start_step, n.quantized_end_step, n.pitch) for n in notes
                 if MIN_PITCH <= n.pitch <= MAX_PITCH]
        if spans:
          streams[i] = events_to_tokens(melody_events(spans, num_steps))
      if i not in streams:
        coverage[i][:] = False
  filled = {i: np.array([covered[max(0, j - gap):j + gap + 1].any() for j in range(total_bars)])
            for i, covered in coverage.items()}
  kept = []
  for group in itertools.product(by_part['melody'], by_part['bass'], by_part['drums']):
    group_coverage = np.all([filled[i] for i in group], axis=0)
    if gap:
      group_coverage[:gap] = any(filled[i][:gap].any() for i in group)
      group_coverage[-gap:] = any(filled[i][-gap:].any() for i in group)
    for j in range(total_bars - enc.num_bars + 1):
      stats['slices_considered'] += 1
      if not all(i in streams for i in group):
        stats['dropped_empty_part'] += 1
      elif not group_coverage[j:j + enc.num_bars].all():
        stats['dropped_silence_trio'] += 1
      else:
        stats['slices_kept'] += 1
        window = slice(j * STEPS_PER_BAR, j * STEPS_PER_BAR + enc.num_steps)
        kept.append(np.stack([streams[i][window] for i in group], axis=1).astype(np.int16))
  return kept


def melody_segments(notes: Iterable[tuple[int, int, int]], gap_steps: int
                    ) -> list[tuple[int, np.ndarray]]:
  """note_seq's Melody extraction (Magenta's extract_melodies) over one instrument's
  (start_step, end_step, pitch) notes -> [(first step, raw events (bars * 16,))].

  A melody starts at the bar of its first note; of notes starting together the highest is kept,
  a later onset cuts the sounding note; the melody ends before a note that starts gap_steps or
  more after the last note-off, and is padded to a whole bar (the last note-off stays when it
  falls inside); the next melody is searched from the next bar on. Melodies are truncated to
  MAX_TRACK_BARS bars.
  """
  notes = sorted(notes, key=lambda n: (n[0], -n[2]))
  segments, search = [], 0
  while True:
    pending = [n for n in notes if n[0] >= search]
    if not pending:
      return segments
    start = pending[0][0] - (pending[0][0] - search) % STEPS_PER_BAR
    kept: list[tuple[int, int, int]] = []
    for note in pending:
      if kept and note[0] == kept[-1][0]:
        continue  # a lower note of the same onset
      if kept and note[0] - kept[-1][1] >= gap_steps:
        break
      kept.append(note)
    last_off = kept[-1][1] - start
    length = -(-last_off // STEPS_PER_BAR) * STEPS_PER_BAR
    events = melody_events(((s - start, e - start, p) for s, e, p in kept), length)
    segments.append((start, events[:MAX_TRACK_BARS * STEPS_PER_BAR]))
    search = start + length


def drum_segments(hits: Iterable[tuple[int, int]], gap_steps: int
                  ) -> list[tuple[int, np.ndarray]]:
  """note_seq's DrumTrack extraction (Magenta's extract_drum_tracks) over (start_step, pitch) drum
  hits -> [(first step, bit sets (bars * 16,))]: a track starts at the bar of its first hit and
  ends before a hit that follows gap_steps or more empty steps; padded to a whole bar, truncated
  to MAX_TRACK_BARS bars."""
  steps = sorted({start for start, pitch in hits if drum_class(pitch) is not None})
  hits = [(start, pitch) for start, pitch in hits if drum_class(pitch) is not None]
  segments, search = [], 0
  while True:
    pending = [t for t in steps if t >= search]
    if not pending:
      return segments
    start = pending[0] - (pending[0] - search) % STEPS_PER_BAR
    last = pending[0]
    for t in pending[1:]:
      if t - (last + 1) >= gap_steps:
        break
      last = t
    length = -(-(last - start + 1) // STEPS_PER_BAR) * STEPS_PER_BAR
    tokens = drum_tokens(((t - start, p) for t, p in hits if start <= t <= last), length)
    segments.append((start, tokens[:MAX_TRACK_BARS * STEPS_PER_BAR]))
    search = start + length


def magenta_slices(seq_q: NoteSequence, enc: Encoding,
                   stats: collections.Counter | None = None) -> list[np.ndarray]:
  """Melody or drum slices of a quantized piece as Magenta's converters cut them.

  Melody: the notes of enc.melody_track with pitches in 21..108 (others are left out, as
  Magenta's converter filters them), each instrument on its own (`melody_segments`); drums: every
  drum hit of the 9 classes (`drum_segments`). Slices of num_bars bars start at every bar of each
  melody or drum track that holds them whole; a melody or track ends at max_silence_bars bars of
  silence (Magenta's gap_bars), so no slice spans such a silence.
  """
  stats = stats if stats is not None else collections.Counter()
  gap_steps = int(round(enc.max_silence_bars * STEPS_PER_BAR))
  if enc.kind == 'drums':
    hits = [(n.quantized_start_step, n.pitch) for n in select_notes(seq_q, 'drums') if n.velocity]
    segments = drum_segments(hits, gap_steps)
  else:
    notes = [n for n in select_notes(seq_q, enc.melody_track) if n.velocity]
    in_range = [n for n in notes if MIN_PITCH <= n.pitch <= MAX_PITCH]
    if len(in_range) < len(notes):
      stats['notes_out_of_range'] += len(notes) - len(in_range)
    segments = []
    for instrument in sorted({n.instrument for n in in_range}):
      segments += melody_segments(
          ((n.quantized_start_step, n.quantized_end_step, n.pitch) for n in in_range
           if n.instrument == instrument), gap_steps)
  if not segments:
    stats['pieces_without_notes'] += 1
  kept = []
  for _, events in segments:
    stats[f'{enc.kind}_tracks'] += 1
    if len(events) < enc.num_steps:
      stats[f'{enc.kind}_tracks_shorter_than_a_slice'] += 1
    for end in range(enc.num_steps, len(events) + 1, STEPS_PER_BAR):
      window = events[end - enc.num_steps:end]
      stats['slices_considered'] += 1
      stats['slices_kept'] += 1
      kept.append((window if enc.kind == 'drums' else events_to_tokens(window))[:, None]
                  .astype(np.int16))
  return kept


def sequence_slices(seq: NoteSequence, enc: Encoding,
                    stats: collections.Counter | None = None) -> list[np.ndarray]:
  """All kept slices (int16 (T, K) class tokens) of one NoteSequence."""
  stats = stats if stats is not None else collections.Counter()
  out = []
  for piece in quantized_pieces(seq, stats):
    if enc.kind == 'trio' and enc.trio_combinations:
      if not piece.notes:
        stats['pieces_without_notes'] += 1
        continue
      out += trio_combination_slices(piece, enc, stats)
      continue
    if enc.kind != 'trio' and enc.extraction == 'magenta':
      out += magenta_slices(piece, enc, stats)
      continue
    raw = _raw_tracks(piece, enc)
    if raw.shape[0] == 0:
      stats['pieces_without_notes'] += 1
      continue
    out += slices_from_raw(raw, enc, stats)
  return out


def chorale_soprano_slices(x_TV: np.ndarray, enc: Encoding,
                           stats: collections.Counter | None = None) -> list[np.ndarray]:
  """Melody slices from a chorale array (T, 4) (common.datasets 'jsb'/'bach_music21'): soprano.

  The array cannot tell a repeated note from a held one; repeats become one longer note.
  """
  soprano = np.asarray(x_TV)[:, 0]
  num_steps = -(-len(soprano) // STEPS_PER_BAR) * STEPS_PER_BAR
  notes, start = [], None
  for t in range(len(soprano) + 1):
    pitch = soprano[t] if t < len(soprano) else np.nan
    previous = soprano[t - 1] if t > 0 else np.nan
    if start is not None and not pitch == previous:
      notes.append((start, t, int(previous)))
      start = None
    if start is None and not np.isnan(pitch):
      start = t
  if enc.extraction == 'magenta':
    seq = tokens_to_sequence(np.zeros(num_steps, np.int16), enc)
    for start, end, pitch in notes:
      seq.notes.add(pitch=pitch, velocity=80, quantized_start_step=start, quantized_end_step=end)
    return magenta_slices(seq, dataclasses.replace(enc, melody_track='all'), stats)
  raw = melody_events(notes, num_steps)[:, None]
  return slices_from_raw(raw, enc, stats)


DEDUPE = ('sequence', 'all', 'none')


def _first_unique(slices_NTK: np.ndarray) -> np.ndarray:
  """The slices without repeats, each kept where it first occurs."""
  _, first = np.unique(slices_NTK.reshape(len(slices_NTK), -1), axis=0, return_index=True)
  return slices_NTK[np.sort(first)]


def extract_slices(examples: Sequence, enc: Encoding, *, dedupe: str | bool = 'none'
                   ) -> tuple[np.ndarray, collections.Counter]:
  """Slices of every example -> (int16 (N, T, K) tokens, Counter of kept/dropped and why).

  examples: NoteSequences, or chorale arrays (T, 4) (their soprano line; melody only).
  dedupe: 'sequence' keeps one copy of identical slices of one example (repeated choruses,
  loops), as Magenta's melody and drum converters do; 'all' one copy across every example;
  'none' keeps them all (True and False, as older configs record it, are 'all' and 'none').
  """
  dedupe = {True: 'all', False: 'none'}.get(dedupe, dedupe)
  if dedupe not in DEDUPE:
    raise UserError(f'encoding.dedupe must be one of {", ".join(DEDUPE)}, got {dedupe!r}')
  stats = collections.Counter()
  slices = []
  for example in examples:
    stats['sequences'] += 1
    if isinstance(example, np.ndarray):
      if enc.kind != 'melody':
        raise UserError(f'{enc.kind} slices need NoteSequences, not chorale arrays')
      got = chorale_soprano_slices(example, enc, stats)
    else:
      got = sequence_slices(example, enc, stats)
    if not got:
      stats['sequences_without_slices'] += 1
    elif dedupe == 'sequence':
      unique = _first_unique(np.stack(got))
      stats['dropped_duplicate'] += len(got) - len(unique)
      got = list(unique)
    slices += got
  out = (np.stack(slices) if slices else
         np.zeros((0, enc.num_steps, len(enc.tracks)), np.int16))
  if dedupe == 'all' and len(out):
    unique = _first_unique(out)
    stats['dropped_duplicate'] += len(out) - len(unique)
    out = unique
  if stats['dropped_duplicate']:
    stats['slices_kept'] -= stats['dropped_duplicate']
  else:
    del stats['dropped_duplicate']
  return out, stats


def _count(n: int, one: str, many: str | None = None) -> str:
  return f'{n} {one if n == 1 else (many or one + "s")}'


def describe_extraction(stats: collections.Counter, enc: Encoding) -> str:
  """Why slices were dropped, in words (from extract_slices' Counter), e.g. '3 slices with more
  than 1 bar of silence in the melody, 1 piece not in 4/4'; 'no notes' when nothing was there."""
  bars = f'{enc.max_silence_bars:g} bar{"" if enc.max_silence_bars == 1 else "s"}'
  slice_reasons = {
      'dropped_pitch_out_of_range': f'with pitches outside {MIN_PITCH}..{MAX_PITCH}',
      'dropped_empty_part': 'where an instrument of the combination has no notes',
      'dropped_silence_trio': f'where a part is silent for more than {bars}',
      'dropped_duplicate': 'repeating an earlier slice',
  }
  for track in ('melody', 'bass', 'drums'):
    slice_reasons[f'dropped_empty_{track}'] = f'without {track} notes'
    slice_reasons[f'dropped_silence_{track}'] = f'with more than {bars} of silence in the {track}'
  track_reasons = {
      'melody_tracks_shorter_than_a_slice': ('melody', 'melodies', (
          f'shorter than {enc.num_bars} bars (a melody ends at {bars} of silence)')),
      'drums_tracks_shorter_than_a_slice': ('drum track', None, (
          f'shorter than {enc.num_bars} bars (a track ends at {bars} of silence)')),
  }
  piece_reasons = {
      'sequences_other_quantization': 'quantized at another resolution than 16th notes',
      'pieces_not_quantizable': 'that could not be quantized to 16th notes',
      'pieces_not_4_4': 'not in 4/4',
      'pieces_without_notes': 'without notes',
      'pieces_shorter_than_a_slice': f'shorter than {enc.num_bars} bars',
      'pieces_without_melody': 'without a melody instrument (programs 0-31)',
      'pieces_without_bass': 'without a bass instrument (programs 32-39)',
      'pieces_without_drums': 'without drums',
  }
  reasons = [f'{_count(stats[key], "slice")} {text}' for key, text in slice_reasons.items()
             if stats.get(key)]
  reasons += [f'{_count(stats[key], one, many)} {text}'
              for key, (one, many, text) in track_reasons.items() if stats.get(key)]
  reasons += [f'{_count(stats[key], "piece")} {text}' for key, text in piece_reasons.items()
              if stats.get(key)]
  if not reasons:
    return 'no notes' if not stats.get('slices_considered') else 'every slice was kept'
  return ', '.join(reasons)


def tokens_to_sequence(tokens_TK: np.ndarray, enc: Encoding, qpm: float = DEFAULT_QPM
                       ) -> NoteSequence:
  """Class tokens (T, K) (or (T,) for one track) -> a quantized NoteSequence with times set."""
  tokens_TK = np.asarray(tokens_TK)
  if tokens_TK.ndim == 1:
    tokens_TK = tokens_TK[:, None]
  if tokens_TK.shape[1] != len(enc.tracks):
    raise ValueError(f'tokens have {tokens_TK.shape[1]} tracks; {enc.kind} has {len(enc.tracks)}')
  seq = NoteSequence()
  seq.tempos.add(qpm=qpm)
  seq.time_signatures.add(numerator=4, denominator=4)
  seq.ticks_per_quarter = 220
  seq.quantization_info.steps_per_quarter = STEPS_PER_QUARTER
  seconds_per_step = 60.0 / qpm / STEPS_PER_QUARTER
  programs = {'melody': 0, 'bass': 33, 'drums': 0}
  for k, track in enumerate(enc.tracks):
    is_drum = track == 'drums'
    instrument = 9 if is_drum else k
    info = seq.instrument_infos.add(instrument=instrument, name=track.upper())
    del info
    if is_drum:
      spans = [(t, t + 1, p) for t, p in drum_notes(tokens_TK[:, k])]
    else:
      spans = melody_notes(tokens_TK[:, k])
    for start, end, pitch in spans:
      seq.notes.add(pitch=pitch, velocity=80, instrument=instrument, program=programs[track],
                    is_drum=is_drum, quantized_start_step=start, quantized_end_step=end,
                    start_time=start * seconds_per_step, end_time=end * seconds_per_step)
  seq.total_quantized_steps = len(tokens_TK)
  seq.total_time = len(tokens_TK) * seconds_per_step
  return seq


# ------------------------------------------------------------------------------------------------
# Augmentation and fixtures.


def valid_transpositions(tokens_TK: np.ndarray, enc: Encoding, max_shift: int) -> list[int]:
  """Shifts in [-max_shift, max_shift] that keep every pitched track inside 21..108."""
  pitched = [k for k, t in enumerate(enc.tracks) if t != 'drums']
  notes = tokens_TK[:, pitched]
  notes = notes[notes >= 2]
  if notes.size == 0:
    return [0]
  lo, hi = int(notes.min()), int(notes.max())
  return [s for s in range(-max_shift, max_shift + 1) if lo + s >= 2 and hi + s < MELODY_CLASSES]


def transpose(tokens_TK: np.ndarray, enc: Encoding, shift: int) -> np.ndarray:
  """Transposes the pitched tracks by `shift` semitones (the caller checks the range)."""
  out = np.array(tokens_TK, copy=True)
  for k, track in enumerate(enc.tracks):
    if track != 'drums':
      col = out[:, k]
      out[:, k] = np.where(col >= 2, col + shift, col)
  return out


def synthetic_melodies(num: int, num_bars: int = 4, seed: int = 0) -> list[NoteSequence]:
  """Small quantized C-major melodies made in code (fixtures for the 'tiny' config and tests)."""
  rng = np.random.default_rng(seed)
  scale = np.array([0, 2, 4, 5, 7, 9, 11])
  seqs = []
  for _ in range(num):
    tokens = np.zeros(num_bars * STEPS_PER_BAR, np.int16)
    t, degree = 0, int(rng.integers(7, 14))
    while t < len(tokens):
      length = int(rng.choice([1, 2, 2, 4, 4, 8]))
      degree = int(np.clip(degree + rng.integers(-2, 3), 0, 20))
      pitch = 48 + 12 * (degree // 7) + scale[degree % 7]
      tokens[t] = pitch - MIN_PITCH + 2
      if rng.random() < 0.2 and t + length < len(tokens) and length > 1:
        tokens[t + length - 1] = NOTE_OFF
      t += length
    seqs.append(tokens_to_sequence(tokens, Encoding('melody', num_bars)))
  return seqs
