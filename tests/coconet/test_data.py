"""Tests for coconet/data.py: rolls, NoteSequences, melodies and the quarter grid."""

import numpy as np
import pytest
from note_seq import music_pb2

from common import midi
from common.errors import UserError
from coconet import data
from tests.coconet.helpers import make_piece


def test_roll_round_trip_with_silence():
  pitches = make_piece(10)
  pitches[3, 1] = np.nan
  pitches[0, 3] = data.MIN_PITCH
  pitches[1, 0] = data.MAX_PITCH
  roll = data.pitches_to_roll(pitches)
  assert roll.shape == (10, 46, 4) and roll.dtype == np.float32
  np.testing.assert_array_equal(roll.sum(axis=1), ~np.isnan(pitches))  # one-hot or all-zero
  assert roll[0, 0, 3] == 1 and roll[1, 45, 0] == 1
  np.testing.assert_array_equal(data.roll_to_pitches(roll), pitches)


def test_indices_round_trip_and_range_errors():
  pitches = make_piece(6)
  pitches[2, 2] = np.nan
  idx = data.pitches_to_indices(pitches)
  assert idx[2, 2] == -1 and idx.dtype == np.int32
  np.testing.assert_array_equal(data.indices_to_pitches(idx), pitches)
  np.testing.assert_array_equal(data.indices_to_roll(idx), data.pitches_to_roll(pitches))
  with pytest.raises(UserError, match='35'):
    data.pitches_to_roll(np.array([[35.0, 60, 60, 60]]))


def test_sequence_round_trip_merges_held_notes():
  pitches = np.array([[72, 64, 55, 48]] * 4 + [[72, 65, np.nan, 50]] * 2 + [[74, 65, 57, 50]] * 2,
                     np.float32)
  seq = data.pitches_to_sequence(pitches, qpm=120, programs='choir')
  soprano = sorted((n.quantized_start_step, n.quantized_end_step, n.pitch)
                   for n in seq.notes if n.instrument == 0)
  assert soprano == [(0, 6, 72), (6, 8, 74)]  # the held C5 is one note, not six
  tenor = sorted((n.quantized_start_step, n.quantized_end_step) for n in seq.notes
                 if n.instrument == 2)
  assert tenor == [(0, 4), (6, 8)]  # the rest splits the tenor
  assert {n.program for n in seq.notes if n.instrument < 2} == {52}
  assert {n.program for n in seq.notes if n.instrument >= 2} == {53}
  assert seq.notes[0].end_time == pytest.approx(seq.notes[0].quantized_end_step * 0.125)
  np.testing.assert_array_equal(data.sequence_to_pitches(seq), pitches)


def test_sequence_round_trip_through_a_midi_file(tmp_path):
  pitches = make_piece(16, seed=3)
  path = str(tmp_path / 'piece.mid')
  midi.write_midi(data.pitches_to_sequence(pitches, qpm=100, programs='strings'), path)
  back = data.sequence_to_pitches(midi.read_midi(path), name=path)
  # Repeated notes merge into held ones, which the pitch grid cannot tell apart anyway.
  np.testing.assert_array_equal(back, pitches)


def test_programs():
  assert data.resolve_programs('piano') == (0, 0, 0, 0)
  assert data.resolve_programs([1, 2, 3, 4]) == (1, 2, 3, 4)
  seq = data.pitches_to_sequence(make_piece(4), programs='piano')
  assert {n.program for n in seq.notes} == {0}
  with pytest.raises(UserError, match='kazoo'):
    data.resolve_programs('kazoo')
  with pytest.raises(UserError):
    data.resolve_programs([0, 1, 2])


def test_sequence_to_pitches_needs_four_parts():
  seq = data.pitches_to_sequence(make_piece(4))
  del seq.notes[-1]
  three = music_pb2.NoteSequence()
  three.CopyFrom(seq)
  del three.notes[:]
  three.notes.extend(n for n in seq.notes if n.instrument != 3)
  with pytest.raises(UserError, match='expected 4 parts'):
    data.sequence_to_pitches(three, name='x.mid')


def test_quarter_grid():
  pitches = make_piece(16)
  quarter = data.to_quarter_grid(pitches)
  assert quarter.shape == (4, 4)
  np.testing.assert_array_equal(data.to_quarter_grid(data.upsample_to_16th(quarter)), quarter)
  np.testing.assert_array_equal(np.flatnonzero(data.quarter_frames_mask(10)), [0, 4, 8])


def test_melody_from_pitches_and_range():
  soprano = data.soprano_from_melody([60, 62, None, 81], steps_per_note=2)
  np.testing.assert_array_equal(soprano, [60, 60, 62, 62, np.nan, np.nan, 81, 81])
  with pytest.raises(UserError, match=r'G3 \(55\) at step 2.*--transpose'):
    data.soprano_from_melody([60, 55, 55, 84], steps_per_note=2)
  low = data.soprano_from_melody([48, 50, 52], steps_per_note=1, transpose=True)
  np.testing.assert_array_equal(low, [60, 62, 64])  # up one octave
  high = data.soprano_from_melody([84, 86], steps_per_note=1, transpose=True)
  np.testing.assert_array_equal(high, [72, 74])
  with pytest.raises(UserError, match='fits no octave'):
    data.soprano_from_melody([48, 80], transpose=True)


def test_soprano_from_melody_crops_before_the_range_check():
  soprano = data.soprano_from_melody([60, 62, 40], steps_per_note=2, num_steps=3)
  np.testing.assert_array_equal(soprano, [60, 60, 62])  # the E2 after the crop does not count


def test_melody_from_unquantized_sequence_takes_the_top_line():
  seq = music_pb2.NoteSequence()
  seq.tempos.add(qpm=120)
  seq.ticks_per_quarter = 220
  seq.notes.add(pitch=67, start_time=0.0, end_time=0.5, velocity=80)  # a quarter
  seq.notes.add(pitch=72, start_time=0.5, end_time=0.75, velocity=80)  # an 8th
  bass = seq.notes.add(pitch=48, start_time=0.0, end_time=0.75, velocity=80)  # a lower voice
  seq.total_time = 0.75
  soprano = data.soprano_from_melody(seq)
  np.testing.assert_array_equal(soprano, [67, 67, 67, 67, 72, 72])
  bass.end_time = seq.total_time = 1.0
  with pytest.raises(UserError, match=r'tune.mid: .*C3 \(48\) at step 6'):
    data.soprano_from_melody(seq, name='tune.mid')  # the bass shows through at the end
