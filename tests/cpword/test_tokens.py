"""CP / REMI tokens: exact round trips on on-grid pieces, real Pop1K7 files, invalid prefixes."""

import glob
import os
import warnings

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from common import midi
from cpword import tokens
from cpword import train

VOCAB = tokens.Vocab()
V = int(VOCAB.velocity_values[16])  # a velocity at a bin value
POP1K7 = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'data', 'pop1k7',
                      'midi_analyzed')
CHORD = midi.music_pb2.NoteSequence.TextAnnotation.CHORD_SYMBOL


def _seconds(step: int, tempo_changes: dict[int, float]) -> float:
  """Seconds of a 16th step under piecewise-constant tempos (independent of cpword.tokens)."""
  total, changes = 0.0, sorted(tempo_changes.items())
  for i, (start, qpm) in enumerate(changes):
    end = changes[i + 1][0] if i + 1 < len(changes) else None
    if end is None or step < end:
      return total + (step - start) * 15.0 / qpm
    total += (end - start) * 15.0 / qpm
  raise AssertionError


def _piece(notes, tempo_changes, chords=()) -> midi.NoteSequence:
  seq = midi.NoteSequence()
  for step, qpm in sorted(tempo_changes.items()):
    seq.tempos.add(time=_seconds(step, tempo_changes), qpm=qpm)
  for onset, dur, pitch, vel in notes:
    seq.notes.add(pitch=pitch, velocity=vel, start_time=_seconds(onset, tempo_changes),
                  end_time=_seconds(onset + dur, tempo_changes))
  for step, name in chords:
    seq.text_annotations.add(time=_seconds(step, tempo_changes), text=name, annotation_type=CHORD)
  return seq


def _notes(seq):
  return sorted((round(n.start_time, 6), round(n.end_time, 6), n.pitch, n.velocity)
                for n in seq.notes)


def _tempos(seq):
  out, last = [], None
  for t in sorted(seq.tempos, key=lambda t: t.time):
    if t.qpm != last:
      out.append((round(t.time, 6), t.qpm))
      last = t.qpm
  return out


notes_strategy = st.lists(
    st.tuples(st.integers(0, 80), st.integers(1, VOCAB.steps_per_bar),
              st.integers(VOCAB.pitch_min, VOCAB.pitch_max),
              st.sampled_from(VOCAB.velocity_values.tolist())), min_size=1, max_size=30)
tempo_strategy = st.dictionaries(st.integers(1, 80), st.sampled_from(VOCAB.tempo_values.tolist()),
                                 max_size=4)


@settings(max_examples=60, deadline=None)
@given(notes=notes_strategy, first_tempo=st.sampled_from(VOCAB.tempo_values.tolist()),
       tempo_changes=tempo_strategy)
def test_cp_round_trip_is_exact_on_grid(notes, first_tempo, tempo_changes):
  seq = _piece(notes, {0: first_tempo, **tempo_changes})
  words = tokens.encode_cp(seq, VOCAB)
  back = tokens.decode_cp(words, VOCAB)
  assert _notes(back) == _notes(seq)
  assert _tempos(back) == _tempos(seq)
  assert words[-1, tokens.F['type']] == tokens.TYPE_EOS
  np.testing.assert_array_equal(tokens.encode_cp(back, VOCAB), words)
  # REMI carries the same information.
  events = tokens.encode_remi(seq, VOCAB)
  np.testing.assert_array_equal(tokens.remi_to_cp(events, VOCAB), words)
  assert _notes(tokens.decode_remi(events, VOCAB)) == _notes(seq)


def test_unused_fields_hold_ignore():
  seq = _piece([(0, 4, 60, V), (5, 2, 64, V)], {0: 119.0})
  words = tokens.encode_cp(seq, VOCAB, emotion='Q3')
  used = {tokens.TYPE_EMOTION: {'emotion'}, tokens.TYPE_NOTE: {'pitch', 'duration', 'velocity'},
          tokens.TYPE_EOS: set()}
  for w in words:
    t = w[tokens.F['type']]
    if t == tokens.TYPE_METRICAL:
      fields = {'bar_beat'} if w[tokens.F['bar_beat']] == tokens.BAR else {
          'bar_beat', 'tempo', 'chord'}
    else:
      fields = used[t]
    for family in tokens.FAMILIES[1:]:
      assert (w[tokens.F[family]] != tokens.IGNORE) == (family in fields), tokens.describe(w)
  assert tokens.emotion_of(words) == 'Q3'
  assert [tokens.describe(w) for w in words[:3]] == [
      'Emotion(emotion=3)', 'Metrical(bar_beat=1)',
      f'Metrical(bar_beat=2, tempo={2 + 29}, chord={words[2, tokens.F["chord"]]})']


def test_chord_annotations_round_trip_and_recogniser():
  notes = [(0, 4, 60, V), (0, 4, 64, V), (0, 4, 67, V), (4, 4, 57, V), (4, 4, 60, V),
           (4, 4, 64, V)]
  seq = _piece(notes, {0: 119.0}, chords=[(0, 'C_M_C'), (4, 'A_m7'), (8, 'N_N_N')])
  back = tokens.decode_cp(tokens.encode_cp(seq, VOCAB), VOCAB)
  # 'N' at step 8 lies after the last onset, so it is not encoded.
  assert [(round(a.time, 6), a.text) for a in back.text_annotations] == [
      (0.0, 'C_M'), (round(_seconds(4, {0: 119.0}), 6), 'A_m7')]
  recognised = tokens.encode_cp(seq, VOCAB, chords='recognize')
  chords = [tokens.chord_name(c) for c in recognised[:, tokens.F['chord']] if c > tokens.CONTI]
  assert chords == ['C_M', 'A_m']


def test_durations_clip_to_one_bar_and_pitches_outside_range_are_dropped():
  seq = _piece([(0, 40, 60, V), (2, 3, 10, V)], {0: 119.0})
  back = tokens.decode_cp(tokens.encode_cp(seq, VOCAB), VOCAB)
  assert [(n.pitch, round(n.end_time - n.start_time, 6)) for n in back.notes] == [
      (60, round(16 * 15.0 / 119.0, 6))]


@pytest.mark.parametrize('bad_word, reason', [
    (tokens.make_word(type=tokens.TYPE_NOTE, pitch=40, duration=2, velocity=3), 'before any beat'),
    (tokens.make_word(type=tokens.TYPE_METRICAL, bar_beat=2, tempo=1, chord=1),
     'does not come after'),
    (tokens.make_word(type=tokens.TYPE_NOTE, pitch=40, duration=0, velocity=3), 'needs a pitch'),
    (tokens.make_word(type=tokens.TYPE_EMOTION, emotion=1), 'only come first'),
    ([tokens.TYPE_METRICAL, 99, 0, 0, 0, 0, 0, 0], 'out of range'),
])
def test_invalid_words_decode_to_the_valid_prefix(bad_word, reason):
  seq = _piece([(0, 4, 60, V), (4, 4, 62, V), (20, 4, 64, V)], {0: 119.0})
  words = tokens.encode_cp(seq, VOCAB, eos=False)
  # Cut after the first note of the second bar's beat ... then insert the bad word.
  cut = int(np.nonzero(words[:, tokens.F['pitch']] == 62 - VOCAB.pitch_min + 1)[0][0]) + 1
  bad = np.concatenate([words[:cut], np.array([bad_word], np.int32), words[cut:]])
  if 'before any beat' in reason:  # a note right after a Bar
    bad = np.concatenate([words[:cut], [tokens.make_word(type=tokens.TYPE_METRICAL, bar_beat=1)],
                          np.array([bad_word], np.int32), words[cut:]])
  with pytest.warns(tokens.TokenWarning, match=reason):
    back = tokens.decode_cp(bad, VOCAB)
  assert [n.pitch for n in back.notes] == [60, 62]


def test_padding_and_eos_end_decoding_silently():
  seq = _piece([(0, 4, 60, V)], {0: 119.0})
  words = tokens.encode_cp(seq, VOCAB)
  padded = np.concatenate([words, np.zeros((5, tokens.NUM_FAMILIES), np.int32)])
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert _notes(tokens.decode_cp(padded, VOCAB)) == _notes(seq)
    assert not tokens.decode_cp(np.zeros((0, tokens.NUM_FAMILIES), np.int32), VOCAB).notes


def test_remi_out_of_grammar_decodes_prefix():
  seq = _piece([(0, 4, 60, V), (4, 4, 62, V)], {0: 119.0})
  events = tokens.encode_remi(seq, VOCAB, eos=False)
  dangling_pitch = tokens.cp_to_remi(
      np.array([tokens.make_word(type=tokens.TYPE_NOTE, pitch=5, duration=1, velocity=1)]),
      VOCAB)[:1]
  with pytest.warns(tokens.TokenWarning, match='out of grammar'):
    back = tokens.decode_remi(np.concatenate([events, dangling_pitch, events]), VOCAB)
  assert _notes(back) == _notes(seq)


def test_vocab_json_round_trip(tmp_path):
  vocab = tokens.Vocab(num_velocity_bins=16, num_tempo_bins=32)
  path = str(tmp_path / 'vocab.json')
  vocab.save(path)
  assert tokens.Vocab.load(path) == vocab
  assert vocab.family_sizes['velocity'] == 17
  # PAD, EOS, then every family but type less its IGNORE (and CONTI for tempo and chord).
  assert vocab.remi_size == 2 + sum(vocab.family_sizes.values()) - 5 - 9


def _pop1k7_files(count):
  files = sorted(glob.glob(os.path.join(POP1K7, 'src_001', '*.mid')))[:count]
  if not files:
    pytest.skip(f'Pop1K7 not found at {POP1K7} (only on the development machine)')
  return files


def test_real_pop1k7_files_round_trip():
  for path in _pop1k7_files(3):
    seq = tokens.add_chord_markers(midi.read_midi(path), path)
    assert seq.text_annotations, path
    words = tokens.encode_cp(seq, VOCAB)
    back = tokens.decode_cp(words, VOCAB)
    assert len(back.notes) == sum(VOCAB.pitch_min <= n.pitch <= VOCAB.pitch_max
                                  for n in seq.notes)
    np.testing.assert_array_equal(tokens.encode_cp(back, VOCAB), words)
    np.testing.assert_array_equal(tokens.remi_to_cp(tokens.cp_to_remi(words, VOCAB), VOCAB), words)
    # REMI is longer than CP (the paper's point).
    assert len(tokens.cp_to_remi(words, VOCAB)) > 1.5 * len(words)


def test_remi_grammar_accepts_real_event_streams_and_forbids_broken_notes():
  vocab = tokens.Vocab()
  allowed = tokens.remi_grammar(vocab)
  events = tokens.encode_remi(train.synthetic_pieces(1, seed=4)[0], vocab, emotion='Q1')
  assert all(allowed[a, b] for a, b in zip(events[:-1], events[1:]))
  pitch = vocab.remi_ranges['pitch'][0]
  duration = vocab.remi_ranges['duration'][0]
  velocity = vocab.remi_ranges['velocity'][0]
  assert allowed[pitch].sum() == vocab.remi_ranges['duration'][2]  # a Pitch: only a Duration
  assert not allowed[pitch, velocity] and not allowed[duration, pitch]
  bar = vocab.remi_ranges['bar_beat'][0]
  tempo = vocab.remi_ranges['tempo'][0]
  assert not allowed[bar, tempo] and allowed[bar + 1, tempo]  # Tempo only after a Position
