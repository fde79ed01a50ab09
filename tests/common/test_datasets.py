"""Tests for common/datasets.py: MIDI folders (skips, cache, splits), chorale arrays, real data."""

import collections
import csv
import glob
import json
import logging
import os

import numpy as np
import pytest

from common import datasets
from common import midi
from common.errors import UserError

SHARED_DATA = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'data')
BACH_FULL_SPLITS = {'train': 254, 'valid': 58, 'test': 53}  # as the module docstring says


def _write_song(path, pitches, program=0):
  seq = midi.NoteSequence(ticks_per_quarter=220)
  seq.tempos.add(qpm=120)
  for i, p in enumerate(pitches):
    seq.notes.add(pitch=p, start_time=0.5 * i, end_time=0.5 * i + 0.4, velocity=70,
                  program=program)
  midi.write_midi(seq, str(path))


@pytest.fixture
def messy_folder(tmp_path):
  """3 good MIDIs (one in a subfolder, one .MIDI), 3 broken .mid files and 2 non-MIDI files."""
  root = tmp_path / 'songs'
  (root / 'sub').mkdir(parents=True)
  _write_song(root / 'a.mid', [60, 62, 64])
  _write_song(root / 'sub' / 'b.MIDI', [48, 50])
  _write_song(root / 'sub' / 'c.midi', [72], program=40)
  good = (root / 'a.mid').read_bytes()
  rng = np.random.default_rng(0)
  (root / 'corrupt.mid').write_bytes(good[:14] + rng.integers(0, 256, 300, np.uint8).tobytes())
  (root / 'empty.mid').write_bytes(b'')
  (root / 'notes.mid').write_text('a text file with a .mid name\n')
  (root / 'readme.txt').write_text('not music')
  (root / 'sub' / 'cover.png').write_bytes(b'\x89PNG')
  return root


GOOD_IDS = ['a.mid', 'sub/b.MIDI', 'sub/c.midi']
GOOD_PITCHES = [[60, 62, 64], [48, 50], [72]]


def _all_split(rel):
  del rel
  return 'train'


def test_midi_dir_reads_good_files_and_reports_each_skip(messy_folder, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='absl')  # absl flag parsing elsewhere may have raised its level
  ds = datasets.get_dataset('midi_dir', str(messy_folder), split='all',
                            cache_dir=str(tmp_path / 'cache'), num_workers=1)
  assert ds.ids == GOOD_IDS
  assert [[n.pitch for n in seq.notes] for seq in ds.examples] == GOOD_PITCHES
  assert [seq.filename for seq in ds.examples] == GOOD_IDS
  assert ds.examples[2].notes[0].program == 40
  skipped = dict(ds.skipped)
  assert sorted(skipped) == ['corrupt.mid', 'empty.mid', 'notes.mid']
  assert skipped['empty.mid'] == 'empty file (0 bytes)'
  assert skipped['notes.mid'].startswith('not a MIDI file')
  assert skipped['corrupt.mid'].startswith('corrupt MIDI file')
  summary = [r.getMessage() for r in caplog.records if f'{messy_folder}:' in r.getMessage()]
  assert len(summary) == 1
  assert (': 3 read, 3 skipped (1 corrupt MIDI: corrupt.mid; 1 empty file: empty.mid; 1 not a '
          'MIDI file: notes.mid); 6 parsed, 0 from cache') in summary[0]
  report = tmp_path / 'skipped_files.tsv'
  assert datasets.write_skip_report(str(report)) >= 3
  rows = [line.split('\t') for line in report.read_text().splitlines()]
  assert rows[0] == ['data set', 'file', 'reason']
  ours = {row[1]: row[2] for row in rows[1:] if row[0] == f'midi_dir[all] {messy_folder}'}
  assert ours == skipped


def test_the_log_names_a_few_skipped_files_per_kind():
  skipped = [(f'bad{i}.mid', 'empty file (0 bytes)') for i in range(7)] + [('x.mid', 'corrupt')]
  kinds = ['empty file'] * 7 + ['corrupt MIDI']
  assert datasets._named_skips(skipped, kinds) == (  # pylint: disable=protected-access
      '7 empty file: bad0.mid, bad1.mid, bad2.mid, bad3.mid, bad4.mid and 2 more; '
      '1 corrupt MIDI: x.mid')


def test_midi_dir_second_load_comes_from_the_cache(messy_folder, tmp_path, monkeypatch, caplog):
  cache = tmp_path / 'cache'
  first = datasets.get_dataset('midi_dir', str(messy_folder), split='all', cache_dir=str(cache),
                               num_workers=1)
  assert len(glob.glob(str(cache / 'noteseq-v*' / '*' / '*.pb'))) == 3
  assert len(glob.glob(str(cache / 'noteseq-v*' / '*' / '*.err'))) == 3

  def no_parsing(*args, **kwargs):
    raise AssertionError('parsed again instead of using the cache')
  monkeypatch.setattr(datasets.midi, 'midi_bytes_to_sequence', no_parsing)
  caplog.set_level(logging.INFO, logger='absl')  # absl flag parsing elsewhere may have raised its level
  second = datasets.get_dataset('midi_dir', str(messy_folder), split='all', cache_dir=str(cache),
                                num_workers=1)
  assert any('0 parsed, 6 from cache' in r.getMessage() for r in caplog.records)
  assert second.ids == first.ids and second.skipped == first.skipped
  assert [s.SerializeToString() for s in second.examples] == [
      s.SerializeToString() for s in first.examples]


def test_midi_dir_cache_follows_content_not_name(messy_folder, tmp_path, monkeypatch):
  cache = str(tmp_path / 'cache')
  datasets.get_dataset('midi_dir', str(messy_folder), split='all', cache_dir=cache, num_workers=1)
  calls = []
  real = datasets.midi.midi_bytes_to_sequence
  monkeypatch.setattr(datasets.midi, 'midi_bytes_to_sequence',
                      lambda data, name: calls.append(name) or real(data, name))
  os.rename(messy_folder / 'a.mid', messy_folder / 'renamed.mid')  # same bytes: a cache hit
  _write_song(messy_folder / 'a.mid', [61])  # new bytes under an old name: parsed
  ds = datasets.get_dataset('midi_dir', str(messy_folder), split='all', cache_dir=cache,
                            num_workers=1)
  assert [os.path.basename(c) for c in calls] == ['a.mid']
  by_id = dict(zip(ds.ids, ds.examples))
  assert [n.pitch for n in by_id['a.mid'].notes] == [61]
  assert [n.pitch for n in by_id['renamed.mid'].notes] == [60, 62, 64]
  assert by_id['renamed.mid'].filename == 'renamed.mid'


def test_csv_split_and_listed_files_that_are_missing(tmp_path):
  root = tmp_path / 'maestro-v2'
  _write_song(root / '2004' / 'a.midi', [60])
  _write_song(root / '2004' / 'c.midi', [62])
  with open(root / 'maestro-v2.0.0.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['canonical_title', 'split', 'midi_filename'])
    w.writerows([['A', 'validation', '2004/a.midi'], ['B', 'validation', '2004/b.midi'],
                 ['C', 'train', '2004/c.midi']])
  ds = datasets.get_dataset('maestro', str(root), split='valid', cache_dir=str(tmp_path / 'cache'),
                            num_workers=1)
  assert (ds.split, ds.ids, ds.skipped) == ('valid', ['2004/a.midi'],
                                            [('2004/b.midi', 'file not found')])
  assert datasets.list_files('maestro', str(tmp_path), split='train') == ['2004/c.midi']


def test_midi_dir_parallel_workers_match_serial(messy_folder, tmp_path):
  serial = datasets.get_dataset('midi_dir', str(messy_folder), split='all',
                                cache_dir=str(tmp_path / 'c1'), num_workers=1)
  parallel = datasets.get_dataset('midi_dir', str(messy_folder), split='all',
                                  cache_dir=str(tmp_path / 'c2'), num_workers=2)
  assert parallel.ids == serial.ids and parallel.skipped == serial.skipped
  assert [s.SerializeToString() for s in parallel.examples] == [
      s.SerializeToString() for s in serial.examples]


def test_midi_dir_splits_partition_the_pieces(messy_folder, tmp_path):
  kwargs = dict(cache_dir=str(tmp_path / 'cache'), num_workers=1)
  by_split = {s: datasets.get_dataset('midi_dir', str(messy_folder), split=s, **kwargs)
              for s in ('train', 'valid', 'test')}
  ids = sorted(i for ds in by_split.values() for i in ds.ids)
  assert ids == GOOD_IDS
  for s, ds in by_split.items():
    assert all(datasets.hash_split(i) == s for i in ds.ids)
  custom = datasets.get_dataset('midi_dir', str(messy_folder), split='validation',
                                split_fn=lambda rel: 'valid' if rel.startswith('sub/') else None,
                                **kwargs)
  assert (custom.split, custom.ids, custom.skipped) == ('valid', GOOD_IDS[1:], [])


def test_hash_split_is_stable_and_proportional():
  assert datasets.hash_split('POP909/001/001.mid') == datasets.hash_split('POP909/001/001.mid')
  counts = collections.Counter(datasets.hash_split(f'piece_{i}.mid') for i in range(5000))
  assert 0.77 < counts['train'] / 5000 < 0.83
  assert 0.08 < counts['valid'] / 5000 < 0.12 and 0.08 < counts['test'] / 5000 < 0.12
  # Pinned values: a change of the rule would silently reshuffle every split.
  # sha1('abc') is the FIPS 180 test vector a9993e36 4706816a ...
  assert datasets.hash_fraction('abc') == int('a9993e364706816', 16) / 16**15


def test_bach_versions_of_one_chorale_share_a_split():
  versions = [('bwv248.23-2', 'bwv248.23-s'), ('bwv248.42-4', 'bwv248.42-s'),
              ('bwv248.64-6', 'bwv248.64-s'), ('bwv248.9-1', 'bwv248.9-s'),
              ('bwv18.5-lz', 'bwv18.5-w'), ('bwv112.5', 'bwv112.5-sc'),
              ('bwv248.35-3', 'bwv248.35-3c')]
  for a, b in versions:
    assert datasets.bach_split(a) == datasets.bach_split(b) == datasets.hash_split(
        a.split('-')[0], (0.70, 0.15, 0.15))


def test_missing_data_raises_user_error_saying_where_and_how(tmp_path):
  with pytest.raises(UserError, match=f'maestro: no data at {tmp_path / "nope"}.*--data_dir'):
    datasets.get_dataset('maestro', str(tmp_path / 'nope'))
  with pytest.raises(UserError, match='midi_dir needs a folder.*--data_dir'):
    datasets.get_dataset('midi_dir')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='no .mid or .midi files'):
    datasets.get_dataset('midi_dir', str(tmp_path / 'empty'))
  with pytest.raises(UserError, match="unknown dataset 'mnist'"):
    datasets.get_dataset('mnist')
  with pytest.raises(UserError, match="unknown split 'dev'"):
    datasets.get_dataset('jsb', split='dev')


def test_default_data_dir_and_parent_folder(tmp_path, monkeypatch):
  monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
  assert datasets.default_data_dir('maestro') == str(tmp_path / 'maestro-v2')
  assert datasets.default_data_dir('piano_midi_de') == str(tmp_path / 'piano-midi-de')
  folder = tmp_path / 'nottingham' / 'MIDI'
  folder.mkdir(parents=True)
  _write_song(folder / 'tune1.mid', [67, 69])
  _write_song(folder / 'melody' / 'tune1.mid', [67])  # sub-versions are not separate tunes
  for data_dir in (None, str(tmp_path), str(tmp_path / 'nottingham')):
    ds = datasets.get_dataset('nottingham', data_dir, split='all',
                              cache_dir=str(tmp_path / 'cache'), num_workers=1)
    assert ds.ids == ['MIDI/tune1.mid']
  assert set(datasets.list_datasets()) == {
      'jsb', 'bach_music21', 'midi_dir', 'maestro', 'piano_midi_de', 'nottingham', 'pop909',
      'pop1k7', 'emopia', 'groove'}


def _assert_chorale_format(x_TV):
  assert x_TV.dtype == np.float32 and x_TV.ndim == 2 and x_TV.shape[1] == 4 and len(x_TV) > 0
  pitches = x_TV[~np.isnan(x_TV)]
  assert pitches.size > 0
  assert np.all((pitches >= 36) & (pitches <= 81)) and np.all(pitches == np.round(pitches))


def test_chorale_to_array_on_a_small_score(tmp_path):
  from music21 import note, stream, tie  # pylint: disable=g-import-not-at-top
  score = stream.Score()
  voices = {  # (pitch or None for a rest, quarters); the alto has a tie and an eighth
      'S': [(72, 1.0), (74, 0.5), (76, 0.5), (77, 2.0)],
      'A': [(67, 1.0), (67, 1.0), (None, 1.0), (65, 1.0)],
      'T': [(60, 2.0), (62, 0.25), (64, 1.75)],
      'B': [(48, 4.0)],
  }
  for name, notes in voices.items():
    part = stream.Part(id=name)
    for pitch, quarters in notes:
      part.append(note.Rest(quarterLength=quarters) if pitch is None
                  else note.Note(pitch, quarterLength=quarters))
    score.insert(0, part)
  alto = list(score.parts[1].notes)
  alto[0].tie, alto[1].tie = tie.Tie('start'), tie.Tie('stop')
  path = str(tmp_path / 'tiny.musicxml')
  score.write('musicxml', fp=path)

  x_TV = datasets.chorale_to_array(path)
  nan = np.nan
  want = np.array([[72] * 4 + [74, 74, 76, 76] + [77] * 8,
                   [67] * 8 + [nan] * 4 + [65] * 4,
                   [60] * 8 + [62] + [64] * 7,
                   [48] * 16], np.float32).T
  np.testing.assert_array_equal(x_TV, want)

  three_parts = stream.Score([score.parts[0], score.parts[1], score.parts[2]])
  three_parts.write('musicxml', fp=str(tmp_path / 'three.musicxml'))
  with pytest.raises(ValueError, match='not 4 parts: 3'):
    datasets.chorale_to_array(str(tmp_path / 'three.musicxml'))


def test_bach_music21_limited_has_the_jsb_format_and_every_split(tmp_path):
  ds = datasets.get_dataset('bach_music21', split='all', limit=6, cache_dir=str(tmp_path))
  assert len(ds.examples) == len(ds.ids) == 6
  for x_TV in ds.examples:
    _assert_chorale_format(x_TV)
  splits = collections.Counter(datasets.bach_split(i) for i in ds.ids)
  assert set(splits) == {'train', 'valid', 'test'}
  assert all('not 4 parts' in reason for _, reason in ds.skipped)
  # The same chorales, split by split: a limited set is a small copy of the full one.
  by_split = {s: datasets.get_dataset('bach_music21', split=s, limit=6, cache_dir=str(tmp_path))
              for s in datasets.SPLITS}
  assert {s: len(d) for s, d in by_split.items()} == dict(splits)
  assert sorted(i for d in by_split.values() for i in d.ids) == sorted(ds.ids)


def test_bach_music21_steps_follow_the_score(tmp_path):
  """Every note of the first chorale covers exactly its 16th steps in its voice's column."""
  from music21 import converter, corpus  # pylint: disable=g-import-not-at-top
  ds = datasets.get_dataset('bach_music21', split='train', limit=3, cache_dir=str(tmp_path))
  stem, x_TV = ds.ids[0], ds.examples[0]
  score = converter.parse(str(corpus.getWork(f'bach/{stem}')))
  assert len(x_TV) == round(float(score.highestTime) * 4)
  for v, part in enumerate(score.parts):
    covered = np.zeros(len(x_TV), bool)
    for n in part.flatten().notes:
      start, stop = round(float(n.offset) * 4), round(float(n.offset + n.quarterLength) * 4)
      assert np.all(x_TV[start:stop, v] == n.pitch.midi), (stem, v, float(n.offset))
      covered[start:stop] = True
    assert np.all(np.isnan(x_TV[~covered, v]))


@pytest.mark.slow
def test_bach_music21_full_split_sizes_match_the_docstring():
  sizes = {s: len(datasets.get_dataset('bach_music21', split=s)) for s in datasets.SPLITS}
  assert sizes == BACH_FULL_SPLITS
  for s, n in BACH_FULL_SPLITS.items():
    assert f'{n} {s}' in datasets.__doc__


def _shared(folder):
  path = os.path.join(SHARED_DATA, folder)
  if not os.path.isdir(path):
    pytest.skip(f'{path} is absent (the shared data folder is not part of a clone)')
  return path


def test_jsb_agrees_with_bach_music21_format():
  root = _shared('jsb')
  sizes = {s: len(datasets.get_dataset('jsb', root, split=s)) for s in datasets.SPLITS}
  assert sizes == {'train': 229, 'valid': 76, 'test': 77}
  ds = datasets.get_dataset('jsb', root, split='all')
  assert len(ds.ids) == len(set(ds.ids)) == 382
  for x_TV in ds.examples:
    _assert_chorale_format(x_TV)
  assert sum(len(x) for x in datasets.get_dataset('jsb', root, split='train').examples) == 55228


def _csv_splits(path, column='midi_filename'):
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  out = collections.defaultdict(set)
  for row in rows:
    out[{'validation': 'valid'}.get(row['split'], row['split'])].add(row[column])
  return out


def test_maestro_split_counts_match_the_csv_less_the_removed_files():
  root = _shared('maestro-v2')
  listed = _csv_splits(os.path.join(root, 'maestro-v2.0.0.csv'))
  with open(os.path.join(root, 'REPAIR_MANIFEST.json')) as f:
    removed = set(json.load(f)['unrepairable'])
  present = {}
  for s in datasets.SPLITS:
    files = datasets.list_files('maestro', root, split=s)
    assert set(files) == listed[s]
    present[s] = [r for r in files if os.path.exists(os.path.join(root, r))]
    assert set(files) - set(present[s]) == removed & listed[s]
  assert {s: len(p) for s, p in present.items()} == {'train': 965, 'valid': 135, 'test': 178}


def test_groove_uses_the_official_split():
  root = _shared('groove')
  listed = _csv_splits(os.path.join(root, 'info.csv'))
  for s in datasets.SPLITS:
    assert set(datasets.list_files('groove', root, split=s)) == listed[s]
  assert {s: len(listed[s]) for s in datasets.SPLITS} == {'train': 897, 'valid': 124, 'test': 129}


@pytest.mark.parametrize('name, folder, total', [
    ('maestro', 'maestro-v2', 1282), ('groove', 'groove', 1150),
    ('piano_midi_de', 'piano-midi-de', 337), ('nottingham', 'nottingham', 1034),
    ('pop909', 'pop909', 909), ('pop1k7', 'pop1k7', 1747), ('emopia', 'emopia', 1078)])
def test_shared_midi_set_smoke(name, folder, total, tmp_path):
  root = _shared(folder)
  files = {s: datasets.list_files(name, root, split=s) for s in datasets.SPLITS}
  assert sum(len(f) for f in files.values()) == total
  assert len(set().union(*files.values())) == total  # the splits do not overlap
  ds = datasets.get_dataset(name, root, split='test', limit=2, cache_dir=str(tmp_path),
                            num_workers=1)
  assert ds.ids == files['test'][:2] and not ds.skipped
  for seq in ds.examples:
    assert isinstance(seq, midi.NoteSequence) and len(seq.notes) > 10
  if name == 'groove':
    assert all(n.is_drum for seq in ds.examples for n in seq.notes)
  if name == 'pop909':
    assert all(f.count('/') == 2 for s in files.values() for f in s)  # POP909/NNN/NNN.mid only
  if name == 'emopia':  # all clips of a song land in one split
    songs = {s: {datasets._emopia_song(f) for f in fs} for s, fs in files.items()}
    assert not (songs['train'] & songs['valid'] or songs['train'] & songs['test']
                or songs['valid'] & songs['test'])
