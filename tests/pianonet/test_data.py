"""PianoNet encoding: rolls round-trip, repeated notes stay apart, stretching, splits, caches.

The original's rules are tested against its own rolls in test_original_encoding.py; most tests
here use this codebase's earlier rules ('separate' notes on a seconds grid), which keep every
note and so round-trip exactly.
"""

import os

from hypothesis import given, settings, strategies as st
import note_seq
import numpy as np
import pytest

from pianonet import configs
from pianonet import data

# The earlier encoding (pretrained/pianonet_small's), on a coarse grid.
SEPARATE = dict(time_grid='seconds', note_rules='separate', note_end='round', trim='window')
ENC = data.Encoding(steps_per_second=4.0, num_keys=12, lowest_key=60, sustain=False, **SEPARATE)
LEGACY_AUG = dict(stretch_method='notes', unstretched_copy=True, padding='around')


def make_sequence(notes, pedal=()):
  """notes: (pitch, start_s, end_s); pedal: (time_s, value) of CC 64."""
  seq = note_seq.NoteSequence(ticks_per_quarter=note_seq.STANDARD_PPQ)
  for pitch, start, end in notes:
    seq.notes.add(pitch=pitch, start_time=start, end_time=end, velocity=90)
  for time, value in pedal:
    seq.control_changes.add(time=time, control_number=64, control_value=value)
  seq.total_time = max([n[2] for n in notes] + [0.0])
  return seq


def note_set(seq):
  return sorted((n.pitch, round(n.start_time, 6), round(n.end_time, 6)) for n in seq.notes)


def random_grid_piece(rng, num_notes=40):
  """Notes on the 0.25 s grid, with at least one free step between notes on the same key."""
  notes, free_from = [], {}
  t = 1
  for _ in range(num_notes):
    t += int(rng.integers(0, 3))
    pitch = 60 + int(rng.integers(0, 12))
    if free_from.get(pitch, 0) > t:
      continue
    length = int(rng.integers(1, 6))
    notes.append((pitch, t / 4, (t + length) / 4))
    free_from[pitch] = t + length + 1
  return notes


def test_round_trip_on_a_quantized_piece():
  notes = random_grid_piece(np.random.default_rng(0))
  seq = make_sequence(notes)
  roll_TK, stats = data.sequence_to_roll(seq, ENC)
  assert roll_TK.dtype == np.uint8 and roll_TK.shape[1] == 12
  assert stats.notes_kept == len(notes) and stats.shifted == 0 and stats.out_of_range == 0
  back = data.roll_to_sequence(roll_TK, ENC)
  # Trimming moved the piece to start at 0.
  offset = min(n[1] for n in notes)
  assert note_set(back) == sorted((p, s - offset, e - offset) for p, s, e in notes)
  # The flattened form is row-major: index t * num_keys + k.
  keys_N = data.flatten(roll_TK)
  t, k = np.argwhere(roll_TK)[3]
  assert keys_N[t * 12 + k] == 1 and keys_N.sum() == roll_TK.sum()
  assert note_set(data.keys_to_sequence(keys_N, ENC)) == note_set(back)


def test_restarted_key_gets_one_up_step():
  # 62 is struck again while still down (overlap) and 64 right as it ends (touching).
  seq = make_sequence([(62, 0.0, 1.0), (62, 0.5, 1.5), (64, 0.0, 0.5), (64, 0.5, 1.0)])
  roll_TK, stats = data.sequence_to_roll(seq, ENC)
  np.testing.assert_array_equal(roll_TK[:, 2], [1, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(roll_TK[:, 4], [1, 0, 1, 1, 0, 0])
  assert stats.notes_kept == 4
  assert note_set(data.roll_to_sequence(roll_TK, ENC)) == [
      (62, 0.0, 0.25), (62, 0.5, 1.5), (64, 0.0, 0.25), (64, 0.5, 1.0)]


def test_one_step_notes_restarted_at_once_are_moved_not_lost():
  seq = make_sequence([(60, 0.0, 0.25), (60, 0.25, 0.5), (60, 0.25, 0.5), (61, 0.0, 0.5)])
  roll_TK, stats = data.sequence_to_roll(seq, ENC)
  assert stats.duplicates == 1 and stats.shifted == 1
  np.testing.assert_array_equal(roll_TK[:, 0], [1, 0, 1])
  assert len(data.roll_to_notes(roll_TK)[0]) == 3


def test_notes_outside_the_window_are_dropped_and_counted():
  seq = make_sequence([(59, 0, 1), (60, 0, 1), (71, 0, 1), (72, 0, 1)])
  seq.notes.add(pitch=65, start_time=0, end_time=1, is_drum=True)
  roll_TK, stats = data.sequence_to_roll(seq, ENC)
  assert stats.out_of_range == 2 and stats.notes_kept == 2 and stats.notes_in == 4
  assert roll_TK[:, 0].all() and roll_TK[:, 11].all() and roll_TK.sum() == 8


def test_sustain_pedal_lengthens_notes_when_asked():
  seq = make_sequence([(60, 0.0, 0.5)], pedal=[(0.25, 127), (1.5, 0)])
  with_pedal = data.sequence_to_roll(seq, data.Encoding(4.0, 12, 60, sustain=True,
                                                        **SEPARATE))[0]
  without = data.sequence_to_roll(seq, ENC)[0]
  assert without.shape[0] == 2 and with_pedal.shape[0] == 6


def test_silence_is_trimmed_at_both_ends():
  roll_TK, _ = data.sequence_to_roll(make_sequence([(60, 2.0, 2.5), (61, 3.0, 3.25)]), ENC)
  assert roll_TK.shape[0] == 5 and roll_TK[0].any() and roll_TK[-1].any()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), factor=st.floats(0.85, 1.2))
def test_stretch_keeps_the_number_of_notes(seed, factor):
  rng = np.random.default_rng(seed)
  starts = rng.integers(0, 80, 60)
  roll_TK = data.render_notes((rng.integers(0, 5, 60), starts, starts + rng.integers(1, 4, 60)),
                              5)[0]
  num_notes = len(data.roll_to_notes(roll_TK)[0])
  stretched = data.stretch_roll(roll_TK, factor, 'notes')
  assert len(data.roll_to_notes(stretched)[0]) == num_notes
  assert abs(stretched.shape[0] - roll_TK.shape[0] * factor) <= num_notes + 1


def test_stretch_changes_the_timing():
  roll_TK = data.sequence_to_roll(make_sequence(random_grid_piece(np.random.default_rng(1))),
                                  ENC)[0]
  for method in data.STRETCH_METHODS:
    assert data.stretch_roll(roll_TK, 1.2, method).shape[0] > roll_TK.shape[0]
    assert data.stretch_roll(roll_TK, 0.85, method).shape[0] < roll_TK.shape[0]
    np.testing.assert_array_equal(data.stretch_roll(roll_TK, 1.0, method), roll_TK)


def test_stretch_factors_are_stratified():
  factors = data.stretch_factors(7, np.random.default_rng(0))
  edges = np.linspace(0.85, 1.2, 8)
  assert np.all((factors >= edges[:-1]) & (factors < edges[1:]))


def test_build_sequence_pads_songs_with_silence():
  songs = [make_sequence(random_grid_piece(np.random.default_rng(i))) for i in range(3)]
  aug = data.Augmentation(stretch_copies=2, pad_seconds=(4.0, 6.0), **LEGACY_AUG)
  seq = data.build_sequence(songs, ENC, aug, seed=0, ids=['a', 'b', 'c'])
  assert len(seq.song_starts) == 9 and seq.keys_N.dtype == np.uint8
  assert seq.ids[:2] == ['a', 'a x' + seq.ids[1].split(' x')[1]] and seq.ids[3] == 'b'
  assert seq.key_down == int(seq.keys_N.sum())
  assert len(seq.keys_N) % 12 == 0
  roll_TK = data.unflatten(seq.keys_N, 12)
  for start in seq.song_starts:
    before = roll_TK[:start // 12]
    assert not before[-16:].any()  # >= 4 s x 4 steps of silence before each song
    assert roll_TK[start // 12].any()  # a trimmed song starts with a note
  assert not roll_TK[-16:].any()
  # Stretched copies keep the notes: 3 songs x 3 versions.
  num_notes = sum(data.sequence_to_roll(s, ENC)[1].notes_kept for s in songs)
  assert len(data.roll_to_notes(roll_TK)[0]) == 3 * num_notes


def test_load_split_caches_and_memory_maps(tmp_path):
  c = configs.get_config('tiny')
  c.cache_dir = str(tmp_path)
  first = data.load_split(c, 'train')
  files = sorted(os.listdir(tmp_path))
  assert len(files) == 2 and files[0].endswith('.bin')
  second = data.load_split(c, 'train')
  assert isinstance(second.keys_N, np.memmap)
  np.testing.assert_array_equal(first.keys_N, second.keys_N)
  assert first.song_starts == second.song_starts and second.stats.notes_kept > 0
  uncached = configs.get_config('tiny')
  np.testing.assert_array_equal(data.load_split(uncached, 'train').keys_N, first.keys_N)
  valid = data.load_split(uncached, 'valid')
  assert 0 < len(valid.keys_N) < len(first.keys_N)


def test_window_pads_with_silence_in_front():
  keys_N = np.arange(1, 11, dtype=np.uint8)
  np.testing.assert_array_equal(data.window(keys_N, 4, 6), [0, 0, 1, 2, 3, 4])
  np.testing.assert_array_equal(data.window(keys_N, 10, 3), [8, 9, 10])


def test_original_augmentation_stretches_every_copy_and_pads_after_each():
  songs = [make_sequence(random_grid_piece(np.random.default_rng(i))) for i in range(2)]
  enc = data.Encoding(steps_per_second=4.0, num_keys=12, lowest_key=60, time_grid='seconds')
  seq = data.build_sequence(songs, enc, data.Augmentation(stretch_copies=3), seed=0,
                            ids=['a', 'b'])
  assert len(seq.song_starts) == 6 and seq.song_starts[0] == 0  # no silence before the first
  assert all(' x' in song_id for song_id in seq.ids)             # no unstretched copy
  roll_TK = data.unflatten(seq.keys_N, 12)
  assert not roll_TK[-16:].any()  # >= 4 s x 4 steps of silence after the last copy
  # Without stretched copies the songs themselves are used.
  plain = data.build_sequence(songs, enc, data.Augmentation(stretch_copies=0), seed=0)
  assert len(plain.song_starts) == 2


def test_validation_is_stretched_as_the_original_does_unless_asked_not_to():
  c = configs.get_config('tiny')
  c.stretch_copies = 3
  assert data.augmentation_from_config(c, 'valid').stretch_copies == 3
  c.stretch_validation = False
  assert data.augmentation_from_config(c, 'valid').stretch_copies == 0
  assert data.augmentation_from_config(c, 'train').stretch_copies == 3


@pytest.mark.parametrize('setting,value', [('time_grid', 'bars'), ('note_rules', 'merge'),
                                           ('note_end', 'ceil'), ('trim', 'none')])
def test_a_bad_encoding_setting_is_one_user_error(setting, value):
  c = configs.get_config('tiny')
  c[setting] = value
  with pytest.raises(data.UserError, match=f'{setting}={value!r} is not one of'):
    data.encoding_from_config(c)


def _write_folder(folder, num_files):
  from common import midi
  folder.mkdir()
  for i in range(num_files):
    notes = [(60 + (i + j) % 12, 0.25 * j, 0.25 * j + 0.2) for j in range(8)]
    midi.write_midi(make_sequence(notes), str(folder / f'piece_{i:02d}.mid'))


def test_a_midi_folder_splits_as_in_common_datasets_for_every_variant(tmp_path):
  """Every model splits a folder by common.datasets' rule; PianoNet's tiny config once took only
  the first 8 training files (its max_pieces doubled as the synthetic song count)."""
  from common import datasets
  folder = tmp_path / 'music'
  _write_folder(folder, 30)
  sizes = {}
  for split in ('train', 'valid', 'test'):
    want = datasets.get_dataset('midi_dir', str(folder), split).ids
    for variant in ('tiny', 'paper'):
      c = configs.get_config(variant)
      c.dataset, c.data_dir = 'midi_dir', str(folder)
      assert data.load_songs(c, split)[1] == want, (variant, split)
    sizes[split] = len(want)
  assert sum(sizes.values()) == 30 and sizes['train'] > 8
  c = configs.get_config('tiny')
  c.dataset, c.data_dir, c.cache_dir = 'midi_dir', str(folder), str(tmp_path / 'cache')
  seq = data.load_split(c, 'train')
  assert seq.stats.songs == sizes['train']
  assert [i.split(' x')[0] for i in seq.ids[::c.stretch_copies]] == data.load_songs(c, 'train')[1]


def test_the_split_cache_follows_the_data_folder(tmp_path):
  folder = tmp_path / 'music'
  _write_folder(folder, 12)
  c = configs.get_config('tiny')
  c.dataset, c.data_dir, c.cache_dir = 'midi_dir', str(folder), str(tmp_path / 'cache')
  before = data.load_split(c, 'train').stats.songs + data.load_split(c, 'valid').stats.songs
  from common import midi
  for i in range(12, 24):  # new files land in some split: its cache must not be reused
    midi.write_midi(make_sequence([(62, 0.0, 1.0)]), str(folder / f'piece_{i:02d}.mid'))
  after = data.load_split(c, 'train').stats.songs + data.load_split(c, 'valid').stats.songs
  assert after > before
