"""Dataset registry: a name -> a `Dataset` of examples for one split.

    ds = datasets.get_dataset('maestro', split='valid')   # data_dir defaults to ../shared/data/...
    ds.examples[0]  # note_seq NoteSequence;  ds.ids[0]: its path relative to the data folder

Chorale sets ('jsb', 'bach_music21') hold float32 arrays (T, 4): the MIDI pitch of soprano, alto,
tenor and bass on a 16th-note grid (a held note repeats its pitch every step), NaN = silent voice.
MIDI sets hold validated NoteSequences (common.midi); files that cannot be read are skipped and
listed in `Dataset.skipped` as (relative path, reason), never fatal; so are files that a csv lists
but the folder lacks (maestro-v2 lacks 4, see its REPAIR_MANIFEST.json: 'file not found').

Splits ('train', 'valid', 'test' or 'all'; 'validation' is accepted for 'valid'):
- jsb: the standard Boulanger-Lewandowski split stored in the npz (229 / 76 / 77).
- maestro, groove: the official split column of the csv ('validation' -> 'valid').
- bach_music21: the bach/*.mxl|*.xml files of music21's corpus sorted by file name; the chorale's
  group (the file stem up to the first '-', so 'bwv248.23-2' and 'bwv248.23-s', two versions of one
  chorale, share a split) decides: f = int(sha1(group)[:15], 16) / 16**15 is train if f < 0.70,
  valid if f < 0.85, else test. Of the 410 files, 365 have exactly 4 parts (the rest are skipped
  with their part count): 254 train / 58 valid / 53 test chorales (music21 10.5).
- every other MIDI set and midi_dir: the same rule on the file's path relative to the data folder
  with 80 / 10 / 10 (emopia: on the song, so all clips of one song share a split).

MIDI files and chorales are parsed in worker processes (num_workers, default os.cpu_count(); the
'forkserver' start method, safe next to JAX threads), so a script that loads data at import time
needs the usual `if __name__ == '__main__':` guard (absl's app.run scripts have it); without it the
workers die and the scan finishes in the calling process.

Caches (in `cache_dir`, else $MUSICGEN_CACHE_DIR, else ~/.cache/musicgen; all writes atomic):
- noteseq-v1/<sha1 of the file's bytes>.pb: each MIDI file's validated NoteSequence (or .err: why
  it was skipped), so a file is parsed once whatever its name or folder.
- bach_music21/chorales-m21_<music21 version>-v<BACH_CONVERTER_VERSION>.npz: all converted chorales.
  The cold conversion parses 410 MusicXML files with music21, about 27 s of CPU time (one idle
  core; 68 s wall on a 2-core machine shared at load 5-7); a cached load takes about 0.03 s.
"""

import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import re
import sys
import time
from typing import Any, Callable, Iterable, Sequence

from absl import logging
import numpy as np
import tqdm

from common import files as file_io
from common import midi
from common.errors import UserError

DATA_DIR_ENV = 'MUSICGEN_DATA_DIR'
CACHE_DIR_ENV = 'MUSICGEN_CACHE_DIR'
SPLITS = ('train', 'valid', 'test')
BACH_CONVERTER_VERSION = 1
NOTESEQ_CACHE_VERSION = 1
JSB_PITCH_RANGE = (36, 81)
_BACH_FRACTIONS = (0.70, 0.15, 0.15)
_MIDI_FRACTIONS = (0.80, 0.10, 0.10)
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(repr=False)
class Dataset:
  """Examples of one split; `ids[i]` names `examples[i]`."""
  name: str
  split: str
  examples: list
  ids: list[str]
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

  def __len__(self) -> int:
    return len(self.examples)

  def __repr__(self) -> str:
    return (f'Dataset(name={self.name!r}, split={self.split!r}, {len(self.examples)} examples, '
            f'{len(self.skipped)} skipped)')


# ---------------------------------------------------------------------------------------------
# Small shared pieces: splits, folders, caches, atomic writes, parallel map.


def hash_fraction(key: str) -> float:
  """A stable pseudo-random number in [0, 1) from a string (the same on every machine)."""
  return int(hashlib.sha1(key.encode('utf-8')).hexdigest()[:15], 16) / 16**15


def hash_split(key: str, fractions: Sequence[float] = _MIDI_FRACTIONS) -> str:
  """'train' / 'valid' / 'test' for `key` with the given fractions (which sum to 1)."""
  f = hash_fraction(key)
  if f < fractions[0]:
    return 'train'
  return 'valid' if f < fractions[0] + fractions[1] else 'test'


def _normalize_split(split: str) -> str:
  split = {'validation': 'valid', 'eval': 'valid'}.get(split, split)
  if split not in SPLITS + ('all',):
    raise UserError(f'unknown split {split!r}; use one of train, valid, test, all')
  return split


def _in_split(piece_split: str | None, split: str) -> bool:
  return piece_split is not None and (split == 'all' or piece_split == split)


def _cache_root(cache_dir: str | None) -> str:
  return os.path.expanduser(cache_dir or os.environ.get(CACHE_DIR_ENV) or '~/.cache/musicgen')


def _try_atomic_write(path: str, write: Callable[[Any], None]) -> None:
  """A cache write that cannot fail the load: a read-only cache only costs speed."""
  try:
    file_io.atomic_write(path, write)
  except OSError as e:
    logging.log_first_n(logging.WARNING, 'cannot write cache %s (%s); continuing without it', 1,
                        path, e)


def _mp_context():
  # Not 'fork': the caller may already run JAX threads. The forkserver imports this module once and
  # forks workers from that clean process, so workers start in milliseconds.
  if 'forkserver' in multiprocessing.get_all_start_methods():
    ctx = multiprocessing.get_context('forkserver')
    ctx.set_forkserver_preload(['common.datasets'])
    return ctx
  return multiprocessing.get_context('spawn')


def _parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], *, num_workers: int | None,
                  desc: str) -> list[Any]:
  """[fn(item) for item in items] in worker processes with a progress bar (stderr, ttys only)."""
  num_workers = min(num_workers or os.cpu_count() or 1, len(items))
  results = [None] * len(items)
  with tqdm.tqdm(total=len(items), desc=desc, unit='file', file=sys.stderr, disable=None,
                 leave=False) as bar:
    if num_workers <= 1:
      for i, item in enumerate(items):
        results[i] = fn(item)
        bar.update()
      return results
    done = [False] * len(items)
    executor = concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=_mp_context())
    try:
      futures = {executor.submit(fn, item): i for i, item in enumerate(items)}
      for future in concurrent.futures.as_completed(futures):
        i = futures[future]
        results[i], done[i] = future.result(), True
        bar.update()
    except concurrent.futures.process.BrokenProcessPool:
      # A worker died (out of memory, or a script without `if __name__ == '__main__':` that
      # workers re-run on import): finish here rather than lose the scan.
      logging.warning('%s: a worker process died; finishing %d files in this process', desc,
                      done.count(False))
      for i, item in enumerate(items):
        if not done[i]:
          results[i] = fn(item)
          bar.update()
    finally:
      executor.shutdown(cancel_futures=True)
  return results


def _count_phrase(kinds: Iterable[str]) -> str:
  counts = collections.Counter(kinds)
  return ', '.join(f'{n:,} {kind}' for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1],
                                                                                        kv[0])))


# Files skipped by the loads of this process, by data set: what a run's skipped_files.tsv lists.
_SKIPPED: dict[str, list[tuple[str, str]]] = {}
SHOWN_SKIPPED_NAMES = 5  # per kind, in the log line; the report file has them all


def _named_skips(skipped: Sequence[tuple[str, str]], kinds: Sequence[str]) -> str:
  """'1 corrupt MIDI: a.mid; 2 empty file: b.mid, c.mid' (at most SHOWN_SKIPPED_NAMES each)."""
  by_kind: dict[str, list[str]] = collections.defaultdict(list)
  for (rel, _), kind in zip(skipped, kinds):
    by_kind[kind].append(rel)
  parts = []
  for kind, rels in sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0])):
    shown = ', '.join(rels[:SHOWN_SKIPPED_NAMES])
    more = f' and {len(rels) - SHOWN_SKIPPED_NAMES:,} more' if len(rels) > SHOWN_SKIPPED_NAMES else ''
    parts.append(f'{len(rels):,} {kind}: {shown}{more}')
  return '; '.join(parts)


def skipped_files() -> dict[str, list[tuple[str, str]]]:
  """{'<set>[<split>] <root>': [(relative path, reason), ...]} of every load in this process."""
  return {key: list(files) for key, files in _SKIPPED.items()}


def write_skip_report(path: str) -> int:
  """Writes every file this process's loads skipped as TSV (set, file, reason), atomically;
  returns how many (nothing is written when none was skipped)."""
  rows = [(key, rel, reason) for key, files in sorted(_SKIPPED.items()) for rel, reason in files]
  if rows:
    text = 'data set\tfile\treason\n' + ''.join(
        '\t'.join(field.replace('\t', ' ').replace('\n', ' ') for field in row) + '\n'
        for row in rows)
    file_io.atomic_write(path, lambda f: f.write(text), mode='w')
  return len(rows)


# ---------------------------------------------------------------------------------------------
# Folders of MIDI files: parallel, cached by content, skip-and-count.


def _noteseq_cache_paths(cache_root: str, sha1: str) -> tuple[str, str]:
  base = os.path.join(cache_root, f'noteseq-v{NOTESEQ_CACHE_VERSION}', sha1[:2], sha1)
  return base + '.pb', base + '.err'


def _cache_lookup(cache_root: str, sha1: str) -> tuple[str, Any] | None:
  """('ok', NoteSequence) or ('err', (kind, reason)) from the cache, None on a miss."""
  pb_path, err_path = _noteseq_cache_paths(cache_root, sha1)
  try:
    with open(pb_path, 'rb') as f:
      return 'ok', midi.NoteSequence.FromString(f.read())
  except FileNotFoundError:
    pass
  except Exception:  # pylint: disable=broad-except  (a damaged cache entry is just a miss)
    return None
  try:
    with open(err_path) as f:
      err = json.load(f)
    return 'err', (err['kind'], err['reason'])
  except (OSError, ValueError, KeyError):
    return None


def _parse_and_cache(job: tuple[str, str, str]) -> tuple[str, Any]:
  """Worker: ('ok', serialized NoteSequence) or ('err', (kind, reason)); caches either."""
  path, sha1, cache_root = job
  try:
    with open(path, 'rb') as f:
      data = f.read()
    seq = midi.midi_bytes_to_sequence(data, path)
    result = ('ok', seq.SerializeToString())
  except midi.MidiError as e:
    result = ('err', (e.kind, e.reason))
  except OSError as e:
    return 'err', ('unreadable', f'cannot read file ({e.strerror or e})')
  except Exception as e:  # pylint: disable=broad-except  (one odd file must not end the scan)
    result = ('err', ('parser crashed', f'the MIDI parser crashed ({type(e).__name__}: {e})'))
  pb_path, err_path = _noteseq_cache_paths(cache_root, sha1)
  if result[0] == 'ok':
    _try_atomic_write(pb_path, lambda f: f.write(result[1]))
  else:
    payload = json.dumps({'kind': result[1][0], 'reason': result[1][1]}).encode()
    _try_atomic_write(err_path, lambda f: f.write(payload))
  return result


def _read_midi_files(name: str, root: str, relpaths: Sequence[str], *, cache_dir: str | None,
                     num_workers: int | None) -> tuple[list[Any], list[str], list[tuple[str, str]]]:
  """Reads root/relpath for each relpath -> (NoteSequences, their relpaths, [(relpath, why)])."""
  start = time.time()
  cache_root = _cache_root(cache_dir)
  outcomes: list[tuple[str, Any] | None] = [None] * len(relpaths)
  jobs, job_index = [], []
  from_cache = 0
  for i, rel in enumerate(relpaths):
    path = os.path.join(root, rel)
    try:
      with open(path, 'rb') as f:
        sha1 = hashlib.sha1(f.read()).hexdigest()
    except FileNotFoundError:
      outcomes[i] = ('err', ('file not found', 'file not found'))
      continue
    except OSError as e:
      outcomes[i] = ('err', ('unreadable', f'cannot read file ({e.strerror or e})'))
      continue
    outcomes[i] = _cache_lookup(cache_root, sha1)
    if outcomes[i] is None:
      jobs.append((path, sha1, cache_root))
      job_index.append(i)
    else:
      from_cache += 1
  parsed = _parallel_map(_parse_and_cache, jobs, num_workers=num_workers,
                         desc=f'{name}: reading MIDI')
  for i, (status, value) in zip(job_index, parsed):
    outcomes[i] = (status, midi.NoteSequence.FromString(value)) if status == 'ok' else (status,
                                                                                       value)
  examples, ids, skipped, skip_kinds = [], [], [], []
  for rel, (status, value) in zip(relpaths, outcomes):
    if status == 'ok':
      value.filename = rel  # the cache is shared by identical files under other names
      examples.append(value)
      ids.append(rel)
    else:
      kind, reason = value
      skipped.append((rel, reason))
      skip_kinds.append(kind)
  summary = f' ({_named_skips(skipped, skip_kinds)})' if skipped else ''
  _SKIPPED[f'{name} {root}'] = list(skipped)
  logging.info('%s %s: %s read, %s skipped%s; %s parsed, %s from cache, %.1f s', name, root,
               f'{len(examples):,}', f'{len(skipped):,}', summary, f'{len(jobs):,}',
               f'{from_cache:,}', time.time() - start)
  return examples, ids, skipped


def _scan_midi(root: str, subdir: str = '', recursive: bool = True) -> list[str]:
  """Sorted paths (relative to root, '/'-separated) of .mid/.midi files under root/subdir."""
  top = os.path.join(root, subdir)
  found = []
  for folder, dirs, files in os.walk(top):
    dirs.sort()
    for f in files:
      if os.path.splitext(f)[1].lower() in midi.MIDI_EXTENSIONS:
        found.append(os.path.relpath(os.path.join(folder, f), root).replace(os.sep, '/'))
    if not recursive:
      break
  return sorted(found)


def _midi_dataset(name: str, root: str, pieces: Sequence[tuple[str, str | None]], split: str, *,
                  limit: int | None, cache_dir: str | None, num_workers: int | None) -> Dataset:
  """pieces: (relpath, its split or None to leave out), sorted by relpath."""
  relpaths = [rel for rel, s in pieces if _in_split(s, split)]
  if limit is not None:
    relpaths = relpaths[:limit]
  examples, ids, skipped = _read_midi_files(f'{name}[{split}]', root, relpaths,
                                            cache_dir=cache_dir, num_workers=num_workers)
  return Dataset(name, split, examples, ids, skipped)


def _load_midi_dir(data_dir: str | None, split: str, *,
                   split_fn: Callable[[str], str | None] | None = None, limit: int | None = None,
                   cache_dir: str | None = None, num_workers: int | None = None) -> Dataset:
  """Any folder tree of .mid/.midi files; split_fn(relpath) -> 'train'|'valid'|'test'|None."""
  if data_dir is None:
    raise UserError('midi_dir needs a folder of MIDI files: pass --data_dir=<folder> '
                    '(data_dir=... in Python)')
  root = os.path.abspath(os.path.expanduser(data_dir))
  if not os.path.isdir(root):
    raise UserError(f'midi_dir: {root} is not a folder; pass --data_dir=<folder of MIDI files>')
  relpaths = _scan_midi(root)
  if not relpaths:
    raise UserError(f'midi_dir: no .mid or .midi files under {root}')
  split_fn = split_fn or (lambda rel: hash_split(rel, _MIDI_FRACTIONS))
  pieces = [(rel, _normalize_split(s) if s is not None else None)
            for rel, s in ((rel, split_fn(rel)) for rel in relpaths)]
  return _midi_dataset('midi_dir', root, pieces, split, limit=limit, cache_dir=cache_dir,
                       num_workers=num_workers)


# ---------------------------------------------------------------------------------------------
# The shared data folders.


@dataclasses.dataclass(frozen=True)
class _Folder:
  folder: str  # name under the data root
  marker: str  # a path that must exist inside it
  pieces: Callable[[str], list[tuple[str, str | None]]]  # root -> sorted (relpath, split)


def _csv_pieces(csv_name: str) -> Callable[[str], list[tuple[str, str | None]]]:
  def pieces(root: str) -> list[tuple[str, str | None]]:
    with open(os.path.join(root, csv_name), newline='') as f:
      rows = list(csv.DictReader(f))
    return sorted((row['midi_filename'], _normalize_split(row['split'])) for row in rows)
  return pieces


def _hashed_pieces(subdir: str, recursive: bool = True, pattern: str | None = None,
                   key: Callable[[str], str] = lambda rel: rel):
  def pieces(root: str) -> list[tuple[str, str | None]]:
    rels = _scan_midi(root, subdir, recursive)
    if pattern is not None:
      rels = [rel for rel in rels if re.fullmatch(pattern, rel)]
    return [(rel, hash_split(key(rel), _MIDI_FRACTIONS)) for rel in rels]
  return pieces


def _emopia_song(rel: str) -> str:
  # midis/Q1_<youtube id>_<clip>.mid: clips of one song may carry different quadrants.
  stem = os.path.splitext(os.path.basename(rel))[0]
  return re.sub(r'^Q\d_', '', stem).rsplit('_', 1)[0]


_FOLDERS = {
    'maestro': _Folder('maestro-v2', 'maestro-v2.0.0.csv', _csv_pieces('maestro-v2.0.0.csv')),
    'groove': _Folder('groove', 'info.csv', _csv_pieces('info.csv')),
    'piano_midi_de': _Folder('piano-midi-de', 'midis', _hashed_pieces('midis')),
    'nottingham': _Folder('nottingham', 'MIDI', _hashed_pieces('MIDI', recursive=False)),
    'pop909': _Folder('pop909', 'POP909',
                      _hashed_pieces('POP909', pattern=r'POP909/(\d+)/\1\.mid')),
    'pop1k7': _Folder('pop1k7', 'midi_analyzed', _hashed_pieces('midi_analyzed')),
    'emopia': _Folder('emopia', 'midis', _hashed_pieces('midis', key=_emopia_song)),
    'jsb': _Folder('jsb', 'Jsb16thSeparated.npz', lambda root: []),
}


def default_data_dir(name: str) -> str:
  """$MUSICGEN_DATA_DIR/<folder> if set, else <repo>/../shared/data/<folder>."""
  if name not in _FOLDERS:
    raise UserError(f'{name!r} has no data folder of its own (known: {", ".join(_FOLDERS)})')
  base = os.environ.get(DATA_DIR_ENV) or os.path.join(_REPO_DIR, '..', 'shared', 'data')
  return os.path.normpath(os.path.join(base, _FOLDERS[name].folder))


def _resolve_root(name: str, data_dir: str | None) -> str:
  """The dataset's folder: data_dir itself or data_dir/<folder> (a data root also works)."""
  spec = _FOLDERS[name]
  root = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else default_data_dir(name)
  for candidate in (root, os.path.join(root, spec.folder)):
    if os.path.exists(os.path.join(candidate, spec.marker)):
      return candidate
  raise UserError(f'{name}: no data at {root} (looked for {spec.marker}); pass '
                  f'--data_dir=<the {spec.folder} folder> or set ${DATA_DIR_ENV} to the folder '
                  f'that holds {spec.folder}/')


def list_files(name: str, data_dir: str | None = None, split: str = 'train') -> list[str]:
  """Paths (relative to the data folder) of a MIDI set's pieces in `split`, without parsing."""
  if name not in _FOLDERS or name == 'jsb':
    raise UserError(f'list_files: {name!r} is not a MIDI data folder')
  split = _normalize_split(split)
  root = _resolve_root(name, data_dir)
  return [rel for rel, s in _FOLDERS[name].pieces(root) if _in_split(s, split)]


def _folder_loader(name: str):
  def load(data_dir: str | None, split: str, *, limit: int | None = None,
           cache_dir: str | None = None, num_workers: int | None = None) -> Dataset:
    root = _resolve_root(name, data_dir)
    return _midi_dataset(name, root, _FOLDERS[name].pieces(root), split, limit=limit,
                         cache_dir=cache_dir, num_workers=num_workers)
  load.__doc__ = f'MIDI files of {_FOLDERS[name].folder}/ as NoteSequences.'
  return load


# ---------------------------------------------------------------------------------------------
# Chorales as (T, 4) arrays.


def _load_jsb(data_dir: str | None, split: str, *, limit: int | None = None) -> Dataset:
  """JSB chorales from Jsb16thSeparated.npz (float16 in the file, float32 here)."""
  path = os.path.join(_resolve_root('jsb', data_dir), 'Jsb16thSeparated.npz')
  try:
    with np.load(path, allow_pickle=True, encoding='latin1') as npz:  # object arrays of pieces
      pieces = {s: list(npz[s]) for s in SPLITS}
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f'{path}: cannot read the JSB npz ({e})') from None
  examples, ids = [], []
  for s in SPLITS if split == 'all' else (split,):
    chosen = pieces[s][:limit] if limit is not None else pieces[s]
    examples += [np.asarray(x, np.float32) for x in chosen]
    ids += [f'{s}/{i:03d}' for i in range(len(chosen))]
  return Dataset('jsb', split, examples, ids, [])


def _bach_files() -> list[tuple[str, str]]:
  """(stem, path) of the Bach MusicXML files in music21's corpus, sorted by file name."""
  from music21 import corpus  # pylint: disable=g-import-not-at-top  (slow import)
  paths = [p for p in corpus.getComposer('bach')
           if p.parent.name == 'bach' and p.suffix.lower() in ('.mxl', '.xml', '.musicxml')]
  return [(p.stem, str(p)) for p in sorted(paths, key=lambda p: p.name)]


def bach_split(stem: str) -> str:
  """The split of a music21 Bach chorale (see the module docstring)."""
  return hash_split(stem.split('-')[0], _BACH_FRACTIONS)


def chorale_to_array(path: str) -> np.ndarray:
  """A four-part chorale (MusicXML) -> float32 (T, 4) SATB pitches on a 16th grid, NaN = rest.

  Parts are taken in score order. Notes are snapped to the nearest 16th (a handful of chorales
  have 32nds or triplets); grace notes and notes shorter than the grid are dropped. Raises
  ValueError with the reason when the score is not four parts of single notes within 36..81.
  """
  from music21 import chord, converter  # pylint: disable=g-import-not-at-top
  score = converter.parse(path, forceSource=True)
  parts = list(score.parts)
  if len(parts) != 4:
    raise ValueError(f'not 4 parts: {len(parts)} parts')
  num_steps = math.ceil(max(float(p.highestTime) for p in parts) * 4 - 1e-6)
  x_TV = np.full((num_steps, 4), np.nan, np.float32)
  lo, hi = JSB_PITCH_RANGE
  for v, part in enumerate(parts):
    for n in part.flatten().notes:
      if isinstance(n, chord.Chord):
        raise ValueError(f'chord in a voice: part {v} at quarter {float(n.offset):g}')
      if n.duration.isGrace:
        continue
      start = round(float(n.offset) * 4)
      stop = round(float(n.offset + n.quarterLength) * 4)
      if stop <= start:
        continue
      if not lo <= n.pitch.midi <= hi:
        raise ValueError(f'pitch out of range: {n.pitch.midi} (not {lo}..{hi}) in part {v}')
      x_TV[start:stop, v] = n.pitch.midi
  if np.isnan(x_TV).all():
    raise ValueError('no notes')
  return x_TV


def _convert_chorale(job: tuple[str, str]) -> tuple[str, Any]:
  """Worker: ('ok', array) or ('err', reason)."""
  _, path = job
  try:
    return 'ok', chorale_to_array(path)
  except ValueError as e:
    return 'err', str(e)
  except Exception as e:  # pylint: disable=broad-except  (music21 raises many types on bad files)
    return 'err', f'cannot parse: {type(e).__name__}: {e}'


def _bach_cache_path(cache_dir: str | None) -> str:
  import music21  # pylint: disable=g-import-not-at-top
  return os.path.join(_cache_root(cache_dir), 'bach_music21',
                      f'chorales-m21_{music21.__version__}-v{BACH_CONVERTER_VERSION}.npz')


def _all_bach_chorales(cache_dir: str | None, num_workers: int | None
                       ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """All converted chorales {stem: x_TV} and skips {stem: reason}, from the cache if possible."""
  cache_path = _bach_cache_path(cache_dir)
  try:
    with np.load(cache_path, allow_pickle=False) as npz:
      bounds = np.cumsum(np.concatenate([[0], npz['lengths']]))
      frames = npz['frames']
      arrays = {str(s): frames[a:b] for s, a, b in zip(npz['ids'], bounds[:-1], bounds[1:])}
      skips = dict(zip(map(str, npz['skipped_ids']), map(str, npz['skipped_reasons'])))
    return arrays, skips
  except (OSError, ValueError, KeyError):
    pass  # no cache yet (or a damaged one): convert
  start = time.time()
  files = _bach_files()
  results = _parallel_map(_convert_chorale, files, num_workers=num_workers,
                          desc='bach_music21: converting chorales')
  arrays = {stem: r for (stem, _), (status, r) in zip(files, results) if status == 'ok'}
  skips = {stem: r for (stem, _), (status, r) in zip(files, results) if status != 'ok'}
  logging.info('bach_music21: converted %d chorales, skipped %d (%s) in %.1f s; caching in %s',
               len(arrays), len(skips), _count_phrase(r.split(':')[0] for r in skips.values()),
               time.time() - start,
               cache_path)
  ids = list(arrays)

  def write(f):
    np.savez(f, frames=np.concatenate([arrays[s] for s in ids]) if ids else np.zeros((0, 4)),
             lengths=np.array([len(arrays[s]) for s in ids], np.int64), ids=np.array(ids, str),
             skipped_ids=np.array(list(skips), str), skipped_reasons=np.array(list(skips.values()),
                                                                              str))
  _try_atomic_write(cache_path, write)
  return arrays, skips


def _limited_counts(limit: int) -> dict[str, int]:
  """How many chorales of each split a `limit`ed set takes: at least one each."""
  if limit < len(SPLITS):
    raise UserError(f'bach_music21: limit must be at least {len(SPLITS)} (one chorale per split), '
                    f'got {limit}')
  n_valid = max(1, round(limit * _BACH_FRACTIONS[1]))
  n_test = max(1, round(limit * _BACH_FRACTIONS[2]))
  return {'train': limit - n_valid - n_test, 'valid': n_valid, 'test': n_test}


def _load_bach_music21(data_dir: str | None, split: str, *, limit: int | None = None,
                       cache_dir: str | None = None, num_workers: int | None = None) -> Dataset:
  """music21's Bach chorales as jsb-style arrays.

  limit: the first chorales (by file name) of each split, `limit` in all and at least one per
  split, so a limited set is a small copy of the full one; converted on the spot when the full
  conversion is not cached yet.
  """
  if data_dir:
    raise UserError('bach_music21 reads the chorales that music21 ships; it takes no data_dir')
  files = _bach_files()
  wanted = _limited_counts(limit) if limit is not None else None
  cache_exists = os.path.exists(_bach_cache_path(cache_dir))
  if wanted is None or cache_exists:
    arrays, skips = _all_bach_chorales(cache_dir, num_workers)

    def convert(stem, path):
      del path
      return ('ok', arrays[stem]) if stem in arrays else ('err', skips.get(stem, 'not cached'))
  else:
    def convert(stem, path):
      return _convert_chorale((stem, path))
  taken = collections.Counter()
  examples, ids, skipped = [], [], []
  for stem, path in files:
    s = bach_split(stem)
    if not _in_split(s, split) or (wanted is not None and taken[s] >= wanted[s]):
      continue
    status, value = convert(stem, path)
    if status == 'ok':
      examples.append(value)
      ids.append(stem)
      taken[s] += 1
    else:
      skipped.append((stem, value))
  return Dataset('bach_music21', split, examples, ids, skipped)


# ---------------------------------------------------------------------------------------------
# The registry.

_LOADERS: dict[str, Callable[..., Dataset]] = {
    'jsb': _load_jsb,
    'bach_music21': _load_bach_music21,
    'midi_dir': _load_midi_dir,
    **{name: _folder_loader(name) for name in _FOLDERS if name != 'jsb'},
}


def list_datasets() -> list[str]:
  return sorted(_LOADERS)


def get_dataset(name: str, data_dir: str | None = None, split: str = 'train',
                **kwargs) -> Dataset:
  """The examples of `split` of dataset `name`; kwargs go to its loader.

  kwargs: limit (int: a few pieces, for tests) on every set; cache_dir and num_workers on the MIDI
  sets and bach_music21; split_fn (relpath -> split or None) on midi_dir.
  """
  if name not in _LOADERS:
    raise UserError(f'unknown dataset {name!r}; known: {", ".join(list_datasets())}')
  return _LOADERS[name](data_dir, _normalize_split(split), **kwargs)
