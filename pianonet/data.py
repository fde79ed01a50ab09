"""PianoNet's encoding: NoteSequence <-> binary key-state rolls <-> one flattened 1-D sequence.

A song becomes a roll (T, num_keys) of uint8 key states (1 = key down) at `steps_per_second`
(48 by default, ~0.02 s) over a window of keys [lowest_key, lowest_key + num_keys). Velocity is
dropped, the sustain pedal optionally lengthens notes first, and a note that restarts a key that
is still down gets one "up" step before it, so that every note is a separate run of 1s and the
inverse (runs -> notes) recovers it. Songs are trimmed of silence at both ends, separated by
4-6 s of silence, and flattened row-major (index = t * num_keys + k) into one long uint8 sequence.

Time-stretch augmentation (Angsten 2020) makes extra copies of each song at factors drawn
stratified-randomly in [0.85, 1.2]. The original resamples the roll by nearest neighbour, which
can drop a one-step note or the up-step between repeated notes; here the note boundaries are
resampled by nearest neighbour (rounded) and then re-rendered with the same rules as encoding,
so a stretched copy keeps every note.
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

# Default velocity of decoded notes (the encoding has none).
DEFAULT_VELOCITY = 80


@dataclasses.dataclass(frozen=True)
class Encoding:
  """Where and how finely key states are sampled."""
  steps_per_second: float = 48.0
  num_keys: int = 72
  lowest_key: int = 31
  sustain: bool = True

  @property
  def key_states_per_second(self) -> float:
    return self.steps_per_second * self.num_keys


def encoding_from_config(config: Any) -> Encoding:
  return Encoding(steps_per_second=float(config.steps_per_second), num_keys=int(config.num_keys),
                  lowest_key=int(config.lowest_key), sustain=bool(config.get('sustain', True)))


@dataclasses.dataclass
class EncodeStats:
  """What encoding did to the notes (summed over songs with `add`)."""
  songs: int = 0
  notes_in: int = 0
  notes_kept: int = 0
  out_of_range: int = 0   # outside the key window: dropped
  duplicates: int = 0     # same key and same start step as another note: merged
  shifted: int = 0        # restarted a key one step after its previous start: moved one step later
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


def sequence_to_roll(seq: Any, enc: Encoding = Encoding(), *, trim: bool = True
                     ) -> tuple[np.ndarray, EncodeStats]:
  """NoteSequence -> (roll_TK uint8, stats). Drums are ignored; notes outside the window dropped."""
  import note_seq  # pylint: disable=g-import-not-at-top  (slow import; only encoders need it)
  if enc.sustain:
    seq = note_seq.apply_sustain_control_changes(seq)
  stats = EncodeStats(songs=1)
  keys, starts, ends = [], [], []
  for note in seq.notes:
    if note.is_drum:
      continue
    stats.notes_in += 1
    k = note.pitch - enc.lowest_key
    if not 0 <= k < enc.num_keys:
      stats.out_of_range += 1
      continue
    keys.append(k)
    starts.append(int(np.rint(note.start_time * enc.steps_per_second)))
    ends.append(int(np.rint(note.end_time * enc.steps_per_second)))
  key_N, start_N, end_N = (np.asarray(a, np.int64) for a in (keys, starts, ends))
  # Merge notes that land on the same key and start step (doubled notes in some MIDI files).
  if len(key_N):
    order = np.lexsort((-end_N, start_N, key_N))
    key_N, start_N, end_N = key_N[order], start_N[order], end_N[order]
    first = np.ones(len(key_N), bool)
    first[1:] = (key_N[1:] != key_N[:-1]) | (start_N[1:] != start_N[:-1])
    stats.duplicates = int((~first).sum())
    key_N, start_N, end_N = key_N[first], start_N[first], end_N[first]
  roll_TK, stats.shifted = render_notes((key_N, start_N, end_N), enc.num_keys)
  if trim:
    roll_TK = trim_silence(roll_TK)
  stats.notes_kept = len(key_N)
  stats.key_states = roll_TK.size
  stats.key_down = int(roll_TK.sum())
  return roll_TK, stats


def roll_to_sequence(roll_TK: np.ndarray, enc: Encoding = Encoding(),
                     velocity: int = DEFAULT_VELOCITY) -> Any:
  """Inverse of `sequence_to_roll`: each run of 1s on a key becomes one note."""
  import note_seq  # pylint: disable=g-import-not-at-top
  seq = note_seq.NoteSequence()
  seq.ticks_per_quarter = note_seq.STANDARD_PPQ
  seq.tempos.add(qpm=120.0)
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


def stretch_roll(roll_TK: np.ndarray, factor: float) -> np.ndarray:
  """Time-stretches a roll by `factor` (> 1 is slower), keeping the number of notes."""
  if factor <= 0:
    raise ValueError(f'stretch factor must be positive, got {factor}.')
  key_N, start_N, end_N = roll_to_notes(roll_TK)
  new_start = np.rint(start_N * factor).astype(np.int64)
  new_end = np.rint(end_N * factor).astype(np.int64)
  num_steps = int(np.rint(roll_TK.shape[0] * factor))
  return render_notes((key_N, new_start, new_end), roll_TK.shape[1], num_steps)[0]


# --- Concatenation into one sequence. ---

@dataclasses.dataclass
class SongSequence:
  """Songs concatenated with silence between them, flattened. keys_N may be a read-only memmap."""
  keys_N: np.ndarray
  song_starts: list[int]   # index (in key states) where each song (copy) begins
  num_keys: int
  stats: EncodeStats

  @property
  def num_steps(self) -> int:
    return len(self.keys_N) // self.num_keys


def _pad_steps(rng: np.random.Generator, enc: Encoding, pad_seconds: Sequence[float]) -> int:
  low, high = float(pad_seconds[0]), float(pad_seconds[-1])
  return int(round(rng.uniform(low, high) * enc.steps_per_second))


def song_rolls(songs: Iterable[Any], enc: Encoding, rng: np.random.Generator,
               stretch_copies: int = 0, stretch_range: Sequence[float] = (0.85, 1.2),
               stats: EncodeStats | None = None) -> Iterable[np.ndarray]:
  """Yields the roll of each song, each followed by its stretched copies."""
  for seq in songs:
    roll_TK, song_stats = sequence_to_roll(seq, enc)
    if stats is not None:
      stats.add(song_stats)
    if not roll_TK.shape[0]:
      continue
    yield roll_TK
    for factor in stretch_factors(stretch_copies, rng, *stretch_range):
      yield stretch_roll(roll_TK, factor)


def concatenate(rolls: Iterable[np.ndarray], enc: Encoding, rng: np.random.Generator,
                pad_seconds: Sequence[float] = (4.0, 6.0), out: Any = None
                ) -> tuple[list[int], int]:
  """Writes silence, song, silence, song, ..., silence as flattened uint8 into `out`.

  out: a list (arrays are appended) or a binary file (bytes are written). Returns (song start
  indices, total length). Streaming keeps memory flat for data sets of many gigabytes.
  """
  song_starts, length = [], 0

  def emit(keys: np.ndarray) -> None:
    nonlocal length
    if isinstance(out, list):
      out.append(keys)
    else:
      out.write(keys.tobytes())
    length += len(keys)

  emit(np.zeros(_pad_steps(rng, enc, pad_seconds) * enc.num_keys, np.uint8))
  for roll_TK in rolls:
    song_starts.append(length)
    emit(flatten(roll_TK))
    emit(np.zeros(_pad_steps(rng, enc, pad_seconds) * enc.num_keys, np.uint8))
  return song_starts, length


def build_sequence(songs: Iterable[Any], enc: Encoding, *, seed: int = 0, stretch_copies: int = 0,
                   stretch_range: Sequence[float] = (0.85, 1.2),
                   pad_seconds: Sequence[float] = (4.0, 6.0)) -> SongSequence:
  """Encodes, augments and concatenates songs in memory."""
  rng = np.random.default_rng(seed)
  stats = EncodeStats()
  chunks: list[np.ndarray] = []
  starts, _ = concatenate(song_rolls(songs, enc, rng, stretch_copies, stretch_range, stats),
                          enc, rng, pad_seconds, chunks)
  return SongSequence(np.concatenate(chunks), starts, enc.num_keys, stats)


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

def _cache_key(config: Any, split: str, stretch_copies: int) -> str:
  fields = dict(dataset=config.dataset, data_dir=os.path.abspath(config.data_dir)
                if config.get('data_dir') else None, split=split,
                enc=dataclasses.asdict(encoding_from_config(config)), stretch=stretch_copies,
                stretch_range=list(config.get('stretch_range', (0.85, 1.2))),
                pad=list(config.pad_seconds), max_songs=config.get('max_pieces') or 0,
                seed=config.seed, version=1)
  return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def load_songs(config: Any, split: str) -> list:
  """The split's NoteSequences (synthetic or through common.datasets)."""
  enc = encoding_from_config(config)
  if config.dataset == 'synthetic':
    offset = {'train': 0, 'valid': 1, 'test': 2}.get(split, 0)
    num = config.get('max_pieces') or 8
    return synthetic_songs(num if split == 'train' else max(2, num // 4), enc,
                           seed=config.seed * 7 + offset)
  from common import datasets  # pylint: disable=g-import-not-at-top
  limit = {'limit': int(config.max_pieces)} if config.get('max_pieces') else {}
  dataset = datasets.get_dataset(config.dataset, config.get('data_dir') or None, split, **limit)
  songs = list(dataset.examples)
  if not songs:
    raise UserError(f'pianonet: data set {config.dataset!r} split {split!r} has no readable songs '
                    f'(data_dir={config.get("data_dir")!r}, skipped {len(dataset.skipped)}).')
  return songs


def load_split(config: Any, split: str) -> SongSequence:
  """The flattened sequence of a split; training data gets config.stretch_copies stretched copies.

  With config.cache_dir set, the result is written once (atomically) as <key>.bin + <key>.json and
  later runs memory-map it, so multi-gigabyte sequences cost no RAM and no re-parsing.
  """
  enc = encoding_from_config(config)
  stretch_copies = int(config.get('stretch_copies', 0)) if split == 'train' else 0
  stretch_range = tuple(config.get('stretch_range', (0.85, 1.2)))
  seed = config.seed + {'train': 0, 'valid': 1, 'test': 2}.get(split, 3)
  cache_dir = config.get('cache_dir')
  if not cache_dir:
    return build_sequence(load_songs(config, split), enc, seed=seed,
                          stretch_copies=stretch_copies, stretch_range=stretch_range,
                          pad_seconds=config.pad_seconds)
  cache_dir = os.path.expanduser(cache_dir)
  key = f'pianonet_{config.dataset}_{split}_{_cache_key(config, split, stretch_copies)}'
  bin_path, meta_path = (os.path.join(cache_dir, key + ext) for ext in ('.bin', '.json'))
  if not (os.path.exists(bin_path) and os.path.exists(meta_path)):
    os.makedirs(cache_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    stats = EncodeStats()
    rolls = song_rolls(load_songs(config, split), enc, rng, stretch_copies, stretch_range, stats)
    written = {}

    def write_keys(f):
      written['starts'], _ = concatenate(rolls, enc, rng, config.pad_seconds, f)

    files.atomic_write(bin_path, write_keys)
    meta = dict(song_starts=written['starts'], num_keys=enc.num_keys,
                stats=dataclasses.asdict(stats))
    # The .json goes last: a reader that finds it finds a complete .bin.
    files.atomic_write(meta_path, lambda f: json.dump(meta, f), mode='w')
  with open(meta_path) as f:
    meta = json.load(f)
  keys_N = np.memmap(bin_path, dtype=np.uint8, mode='r')
  return SongSequence(keys_N, meta['song_starts'], meta['num_keys'], EncodeStats(**meta['stats']))


def window(keys_N: np.ndarray, end: int, length: int) -> np.ndarray:
  """keys_N[end - length : end] as a fresh uint8 array, zero (silence) where it starts before 0."""
  start = end - length
  out = np.asarray(keys_N[max(start, 0):end], np.uint8)
  if start < 0:
    out = np.concatenate([np.zeros(-start, np.uint8), out])
  return out
