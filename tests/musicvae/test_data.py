"""MusicVAE encodings: exact round trips, slicing rules, extraction statistics."""

import collections
import dataclasses

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from common import midi
from common.errors import UserError
from musicvae import data

MEL2 = data.Encoding('melody', num_bars=2)
MEL2_GRID = data.Encoding('melody', num_bars=2, extraction='grid')
DRUMS2 = data.Encoding('drums', num_bars=2)


def _melody_seq(notes, num_steps=32, **note_kw):
  """A quantized sequence from (start, end, pitch) on the 16th grid."""
  seq = data.tokens_to_sequence(np.zeros(num_steps, np.int16), MEL2)
  for start, end, pitch in notes:
    seq.notes.add(pitch=pitch, velocity=80, quantized_start_step=start, quantized_end_step=end,
                  start_time=start * 0.125, end_time=end * 0.125, **note_kw)
  return seq


@st.composite
def monophonic_melodies(draw, num_steps=32):
  """Non-overlapping notes in 21..108 covering a slice (rests of at most 16 steps)."""
  notes, t = [], draw(st.integers(0, 8))
  while t < num_steps:
    length = draw(st.integers(1, 8))
    end = min(t + length, num_steps)
    notes.append((t, end, draw(st.integers(data.MIN_PITCH, data.MAX_PITCH))))
    t = end + draw(st.integers(0, 8))
  return notes


@settings(max_examples=60, deadline=None)
@given(monophonic_melodies())
def test_melody_round_trip(notes):
  tokens = data.events_to_tokens(data.melody_events(notes, 32))
  assert data.melody_notes(tokens) == notes
  # Through a NoteSequence and back to tokens.
  seq = data.tokens_to_sequence(tokens, MEL2)
  assert [(n.quantized_start_step, n.quantized_end_step, n.pitch) for n in seq.notes] == notes
  slices = data.sequence_slices(seq, MEL2)
  assert len(slices) == 1 and np.array_equal(slices[0][:, 0], tokens)


def test_melody_classes_and_highest_pitch():
  notes = [(0, 4, 60), (0, 2, 64), (4, 6, 21), (8, 10, 108)]
  tokens = data.events_to_tokens(data.melody_events(notes, 16))
  assert tokens.tolist() == [2 + 64 - 21, 0, 1, 0, 2, 0, 1, 0, 89, 0, 1, 0, 0, 0, 0, 0]
  with pytest.raises(ValueError):
    data.events_to_tokens(data.melody_events([(0, 1, 20)], 4))


def test_new_onset_ends_sounding_note():
  tokens = data.events_to_tokens(data.melody_events([(0, 8, 60), (4, 6, 62)], 8))
  assert data.melody_notes(tokens) == [(0, 4, 60), (4, 6, 62)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 511), min_size=32, max_size=32))
def test_drum_round_trip(tokens):
  tokens = np.array(tokens, np.int16)
  seq = data.tokens_to_sequence(tokens, DRUMS2)
  hits = [(n.quantized_start_step, n.pitch) for n in seq.notes]
  assert np.array_equal(data.drum_tokens(hits, 32), tokens)
  assert all(n.is_drum for n in seq.notes)


def test_drum_mapping_folds_gm_pitches():
  # 35 acoustic bass drum -> kick, 40 electric snare -> snare, 44 pedal hi-hat -> closed hi-hat,
  # 57 crash 2 -> crash, 59 ride 2 -> ride; 13 is no drum.
  tokens = data.drum_tokens([(0, 35), (0, 40), (1, 44), (2, 57), (3, 59), (3, 13)], 4)
  assert tokens.tolist() == [0b11, 0b100, 1 << 7, 1 << 8]


def test_grid_slicing_every_bar_with_silence_rule_and_stats():
  # Bars 0-1 notes, bars 2-3 silent, bar 4 notes: 5 bars -> 4 two-bar slices; the slice over
  # bars 2-3 is empty, the others hold at most 1 bar of silence.
  notes = [(0, 4, 60), (16, 20, 62), (64, 80, 64)]
  seq = _melody_seq(notes, num_steps=80)
  slices, stats = data.extract_slices([seq], MEL2_GRID)
  assert stats['slices_considered'] == 4
  assert stats['dropped_empty_melody'] == 1
  # Bars 1-2: note 16-20 then 28 silent steps > 16 -> dropped; bars 0-1: 12 + 12 silent: kept;
  # bars 3-4: 16 silent then a note: kept (exactly 1 bar).
  assert stats['dropped_silence_melody'] == 1
  assert stats['slices_kept'] == len(slices) == 2


def test_out_of_range_pitch_dropped():
  seq = _melody_seq([(0, 16, 110), (16, 32, 60)])
  slices, stats = data.extract_slices([seq], MEL2_GRID)
  assert len(slices) == 0 and stats['dropped_pitch_out_of_range'] == 1
  # Magenta's converter leaves the note out instead of the slice.
  seq = _melody_seq([(0, 8, 60), (8, 16, 110), (16, 32, 62)])
  slices, stats = data.extract_slices([seq], MEL2)
  assert stats['notes_out_of_range'] == 1 and len(slices) == 1
  assert data.melody_notes(slices[0][:, 0]) == [(0, 8, 60), (16, 32, 62)]


def test_track_selectors():
  seq = _melody_seq([(0, 32, 60)], instrument=0)
  seq.notes.add(pitch=72, velocity=80, instrument=1, quantized_start_step=0, quantized_end_step=32)
  seq.instrument_infos.add(instrument=1, name='Melody')
  first = data.Encoding('melody', 2, melody_track='first', extraction='grid')
  by_name = data.Encoding('melody', 2, melody_track='name:MELODY', extraction='grid')
  assert data.extract_slices([seq], first)[0][0, 0, 0] == 60 - 21 + 2
  assert data.extract_slices([seq], by_name)[0][0, 0, 0] == 72 - 21 + 2
  assert data.extract_slices([seq], MEL2_GRID)[0][0, 0, 0] == 72 - 21 + 2  # highest pitch wins
  # Magenta: each instrument's melody on its own, in instrument order.
  assert data.extract_slices([seq], MEL2)[0][:, 0, 0].tolist() == [60 - 21 + 2, 72 - 21 + 2]


def test_not_4_4_is_counted():
  seq = _melody_seq([(0, 32, 60)])
  seq.time_signatures[0].numerator = 3
  slices, stats = data.extract_slices([seq], MEL2)
  assert len(slices) == 0 and stats['pieces_not_4_4'] == 1


def test_piece_shorter_than_a_slice_is_counted():
  seq = _melody_seq([(0, 8, 60)])  # half a bar: no 2-bar slice
  slices, stats = data.extract_slices([seq], MEL2_GRID)
  assert len(slices) == 0 and stats['pieces_shorter_than_a_slice'] == 1
  assert stats['sequences_without_slices'] == 1
  slices, stats = data.extract_slices([seq], MEL2)
  assert len(slices) == 0 and stats['melody_tracks_shorter_than_a_slice'] == 1
  assert data.describe_extraction(stats, MEL2) == (
      '1 melody shorter than 2 bars (a melody ends at 1 bar of silence)')


def test_magenta_melodies_end_at_a_bar_of_silence():
  """note_seq's extraction: a melody ends before a note that starts 16 or more steps after the
  last note-off; it starts at the bar of its first note and is padded to a whole bar; slices lie
  inside one melody (the grid keeps a slice with exactly one silent bar)."""
  notes = [(0, 4, 60), (16, 20, 62), (64, 80, 64)]  # 12 then 44 silent steps
  slices, stats = data.extract_slices([_melody_seq(notes, num_steps=80)], MEL2)
  assert len(slices) == 1 and stats['melody_tracks'] == 2
  assert data.melody_notes(slices[0][:, 0]) == [(0, 4, 60), (16, 20, 62)]
  assert slices[0][20, 0] == data.NOTE_OFF  # the last note-off inside the padded bar stays
  exactly_a_bar = [(0, 4, 60), (20, 24, 62), (24, 40, 64)]  # 16 silent steps
  assert len(data.extract_slices([_melody_seq(exactly_a_bar, 48)], MEL2_GRID)[0]) == 2
  slices, stats = data.extract_slices([_melody_seq(exactly_a_bar, 48)], MEL2)
  assert stats['melody_tracks'] == 2 and len(slices) == 1  # the second melody: bars 1-2
  assert data.melody_notes(slices[0][:, 0]) == [(4, 8, 62), (8, 24, 64)]
  segments = data.melody_segments([(3, 5, 60), (40, 44, 62), (56, 60, 64)], 16)
  assert [(start, len(events)) for start, events in segments] == [(0, 16), (32, 32)]
  long_melody = data.melody_segments([(t, t + 4, 60) for t in range(0, 16 * 120, 8)], 16)
  assert len(long_melody) == 1 and len(long_melody[0][1]) == 100 * 16  # truncated to 100 bars


def test_magenta_drum_tracks_end_at_a_bar_without_hits():
  hits = [(0, 36), (15, 38), (31, 36), (48, 42)]  # 16 empty steps between 31 and 48
  segments = data.drum_segments(hits, 16)
  assert [(start, len(tokens)) for start, tokens in segments] == [(0, 32), (48, 16)]
  assert segments[0][1][[0, 15, 31]].tolist() == [1, 2, 1]
  seq = data.tokens_to_sequence(np.zeros(64, np.int16), DRUMS2)
  for start, pitch in hits:
    seq.notes.add(pitch=pitch, velocity=80, instrument=9, is_drum=True,
                  quantized_start_step=start, quantized_end_step=start + 1)
  slices, stats = data.extract_slices([seq], DRUMS2)
  assert len(slices) == 1 and stats['drums_tracks'] == 2


@pytest.mark.parametrize('numerator', [1, 2])
def test_1_4_and_2_4_read_as_4_4(numerator):
  # POP909 labels most of its 4/4 songs 1/4 or 2/4; their melodies must not be dropped.
  seq = _melody_seq([(0, 32, 60)])
  seq.time_signatures[0].numerator = numerator
  slices, stats = data.extract_slices([seq], MEL2)
  assert len(slices) == 1 and stats[f'pieces_{numerator}_4_as_4_4'] == 1


def test_unquantized_midi_file_round_trip(tmp_path):
  tokens = data.synthetic_melodies(1, num_bars=2, seed=3)[0]
  path = str(tmp_path / 'm.mid')
  midi.write_midi(tokens, path)
  slices = data.sequence_slices(midi.read_midi(path), MEL2)
  assert np.array_equal(slices[0], data.sequence_slices(tokens, MEL2)[0])


def test_trio_round_trip():
  rng = np.random.default_rng(0)
  enc = data.Encoding('trio', num_bars=2, max_silence_bars=2)
  mel = data.events_to_tokens(data.melody_events([(t, t + 2, 60 + t % 7) for t in range(0, 32, 4)],
                                                 32))
  bass = data.events_to_tokens(data.melody_events([(t, t + 8, 36) for t in range(0, 32, 8)], 32))
  drums = rng.integers(1, 512, 32).astype(np.int16)
  tokens = np.stack([mel, bass, drums], axis=1)
  seq = data.tokens_to_sequence(tokens, enc)
  assert {n.program for n in seq.notes if not n.is_drum} == {0, 33}
  slices, _ = data.extract_slices([seq], enc)
  assert len(slices) == 1 and np.array_equal(slices[0], tokens)


def test_transpose_keeps_range():
  tokens = data.events_to_tokens(data.melody_events([(0, 4, 23), (4, 8, 60)], 8))[:, None]
  shifts = data.valid_transpositions(tokens, MEL2, 5)
  assert shifts == [-2, -1, 0, 1, 2, 3, 4, 5]
  up = data.transpose(tokens, MEL2, 5)
  assert [p for _, _, p in data.melody_notes(up[:, 0])] == [28, 65]
  assert np.array_equal(data.transpose(up, MEL2, -5), tokens)


def test_chorale_soprano():
  x = np.full((32, 4), np.nan, np.float32)
  x[0:8, 0], x[8:16, 0], x[16:32, 0] = 67, 69, 67
  slices, _ = data.extract_slices([x], MEL2)
  assert data.melody_notes(slices[0][:, 0]) == [(0, 8, 67), (8, 16, 69), (16, 32, 67)]


def _trio_seq(parts, num_steps=32):
  """A quantized sequence from {instrument: (program, is_drum, [(start, end, pitch)])}."""
  seq = data.tokens_to_sequence(np.zeros((num_steps, 3), np.int16), data.Encoding('trio', 2))
  for instrument, (program, is_drum, notes) in parts.items():
    for start, end, pitch in notes:
      seq.notes.add(pitch=pitch, velocity=80, instrument=instrument, program=program,
                    is_drum=is_drum, quantized_start_step=start, quantized_end_step=end,
                    start_time=start * 0.125, end_time=end * 0.125)
  return seq


def test_trio_every_instrument_combination_is_an_example():
  """As Magenta's TrioConverter: two melody-range instruments give two examples (in instrument
  order), each line on its own; an instrument with notes of two kinds is left out; the legacy
  setting merges the melody-range instruments into one line."""
  beat = [(t, t + 4, 60) for t in range(0, 32, 4)]
  seq = _trio_seq({
      0: (0, False, [(t, t + 2, 72) for t in range(0, 32, 4)]),   # piano: melody
      1: (25, False, [(t, t + 4, 67) for t in range(0, 32, 8)]),  # guitar: melody
      2: (33, False, [(t, t + 8, 40) for t in range(0, 32, 8)]),  # bass
      3: (0, True, [(t, t + 1, 36) for t in range(0, 32, 4)]),    # drums
      4: (0, False, beat), 5: (0, True, []),
  })
  for n in seq.notes:
    if n.instrument == 4 and n.quantized_start_step >= 16:
      n.program = 33  # melody and bass notes in one instrument: not a part
  enc = data.Encoding('trio', 2, max_silence_bars=2)
  slices, stats = data.extract_slices([seq], enc)
  assert len(slices) == 2 and stats['slices_kept'] == 2
  assert [p for _, _, p in data.melody_notes(slices[0][:, 0])] == [72] * 8
  assert [p for _, _, p in data.melody_notes(slices[1][:, 0])] == [67] * 4
  assert np.array_equal(slices[0][:, 1:], slices[1][:, 1:])
  merged, _ = data.extract_slices([seq], dataclasses.replace(enc, trio_combinations=False))
  assert len(merged) == 1


def test_trio_without_a_part_is_counted():
  seq = _trio_seq({0: (0, False, [(0, 32, 72)]), 3: (0, True, [(0, 1, 36)])})
  slices, stats = data.extract_slices([seq], data.Encoding('trio', 2, max_silence_bars=2))
  assert len(slices) == 0 and stats['pieces_without_bass'] == 1


def test_describe_extraction_in_words():
  stats = collections.Counter(sequences=3, slices_considered=6, dropped_silence_melody=3,
                              dropped_empty_melody=1, dropped_pitch_out_of_range=1,
                              pieces_not_4_4=2, pieces_shorter_than_a_slice=1,
                              pieces_1_4_as_4_4=4)
  assert data.describe_extraction(stats, MEL2) == (
      '1 slice with pitches outside 21..108, 1 slice without melody notes, 3 slices with more '
      'than 1 bar of silence in the melody, 2 pieces not in 4/4, 1 piece shorter than 2 bars')
  assert data.describe_extraction(collections.Counter(sequences=1), MEL2) == 'no notes'
  trio = data.Encoding('trio', 16, max_silence_bars=2)
  assert data.describe_extraction(collections.Counter(pieces_without_bass=1), trio) == (
      '1 piece without a bass instrument (programs 32-39)')
  assert data.describe_extraction(collections.Counter(dropped_silence_trio=2), trio) == (
      '2 slices where a part is silent for more than 2 bars')


def test_dedupe_per_sequence_across_all_or_none():
  """'sequence' (Magenta's converters) keeps one copy of a slice repeated within a piece; 'all'
  also drops a slice that another piece repeats; True and False (older configs) are all / none."""
  riff = [(t, t + 2, 60 + (t // 2) % 5) for t in range(0, 32, 2)]
  looped = _melody_seq(riff + [(s + 32, e + 32, p) for s, e, p in riff], num_steps=64)
  other = _melody_seq(riff)
  examples = [looped, other]
  counts = {}
  for dedupe in ('none', 'sequence', 'all', True, False):
    slices, stats = data.extract_slices(examples, MEL2, dedupe=dedupe)
    counts[dedupe] = (len(slices), stats['dropped_duplicate'], stats['slices_kept'])
  # looped: slices at bars 0 and 2 are equal, bar 1 differs (the riff across its seam).
  assert counts == {'none': (4, 0, 4), 'sequence': (3, 1, 3), 'all': (2, 2, 2), True: (2, 2, 2),
                    False: (4, 0, 4)}
  with pytest.raises(UserError, match='dedupe'):
    data.extract_slices(examples, MEL2, dedupe='some')
