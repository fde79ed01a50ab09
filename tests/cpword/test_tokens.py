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


# ------------------------------------------------------------------------------------------------
# The original's bins (CW:dataset/midi2corpus.py:19-27, 142-158), computed here as it does.

_ORIGINAL_VELOCITY_BINS = np.linspace(0, 128, 65).astype(int)
_ORIGINAL_BPM_BINS = np.linspace(32, 224, 65).astype(int)
DICTIONARY = os.path.join(os.path.dirname(POP1K7), 'representations', 'uncond', 'cp',
                          'ailab17k_from-scratch_cp', 'dictionary.pkl')


def _one_note_per_bar(values, **fields):
  """A piece at 119 qpm (a bin) with note i at bar i; kind: what `values` are (velocities or
  durations in ticks of 480 per beat); qpm: another tempo."""
  seq = midi.NoteSequence()
  seq.tempos.add(time=0.0, qpm=fields.get('qpm', 119.0))
  step = 15.0 / fields.get('qpm', 119.0)
  for i, value in enumerate(values):
    velocity = value if fields.get('kind') == 'velocity' else 64
    ticks = value if fields.get('kind') == 'duration' else 240
    seq.notes.add(pitch=60, velocity=velocity, start_time=16 * i * step,
                  end_time=16 * i * step + ticks / 120 * step)
  return seq


def test_velocities_are_binned_as_the_original():
  velocities = list(range(1, 128))
  back = tokens.decode_cp(tokens.encode_cp(_one_note_per_bar(velocities, kind='velocity'), VOCAB),
                          VOCAB)
  want = [max(40, int(_ORIGINAL_VELOCITY_BINS[np.argmin(abs(_ORIGINAL_VELOCITY_BINS - v))]))
          for v in velocities]
  assert [n.velocity for n in sorted(back.notes, key=lambda n: n.start_time)] == want
  assert VOCAB.family_sizes['velocity'] == 1 + 44  # 40, 42, .., 126


def test_durations_are_the_raw_durations_rounded_as_the_original():
  ticks = list(range(0, 2400, 7)) + [60, 180, 1920, 1980]  # ties at half a step round to even
  ticks = [t for t in ticks if t > 0]
  seq = _one_note_per_bar(ticks, kind='duration')
  words = tokens.encode_cp(seq, VOCAB)
  got = words[words[:, tokens.F['type']] == tokens.TYPE_NOTE, tokens.F['duration']]
  want = [int(np.round(min(t, 1920) / 120)) for t in ticks]  # in 16ths: 0..16
  assert (got - 1).tolist() == want
  back = tokens.decode_cp(words, VOCAB)
  lengths = [round((n.end_time - n.start_time) / (15.0 / 119.0), 6)
             for n in sorted(back.notes, key=lambda n: n.start_time)]
  assert lengths == [max(w, 0.5) for w in want]  # 0 is written as half a step, as the original
  np.testing.assert_array_equal(tokens.encode_cp(back, VOCAB), words)
  assert VOCAB.family_sizes['duration'] == 18  # IGNORE + 0..16 steps, the original's 18


def test_tempos_are_binned_as_the_original():
  for qpm in np.linspace(20.0, 240.0, 221):
    words = tokens.encode_cp(_one_note_per_bar([0], qpm=float(qpm)), VOCAB)
    want = _ORIGINAL_BPM_BINS[np.argmin(abs(_ORIGINAL_BPM_BINS - qpm))]
    assert VOCAB.tempo_values[words[1, tokens.F['tempo']] - 2] == want, qpm
  assert VOCAB.family_sizes['tempo'] == 2 + 65


def test_every_value_of_the_original_dictionary_has_its_own_value_here():
  if not os.path.exists(DICTIONARY):
    pytest.skip(f'the original dictionary is not at {DICTIONARY}')
  import pickle  # pylint: disable=g-import-not-at-top
  with open(DICTIONARY, 'rb') as f:
    event2word, _ = pickle.load(f)
  values = {family: sorted(int(str(e).rsplit('_', 1)[1]) for e in events if e not in (0, 'CONTI'))
            for family, events in event2word.items() if family in ('tempo', 'pitch', 'duration',
                                                                   'velocity')}
  assert set(values['tempo']) <= set(VOCAB.tempo_values.astype(int).tolist())
  assert set(values['velocity']) <= set(VOCAB.velocity_values.tolist())
  assert values['duration'] == [120 * s for s in range(17)]
  assert values['pitch'] == list(range(VOCAB.pitch_min, VOCAB.pitch_max + 1))
  sizes = VOCAB.family_sizes
  for ours, theirs in (('pitch', 'pitch'), ('duration', 'duration'), ('chord', 'chord'),
                       ('bar_beat', 'bar-beat')):
    assert sizes[ours] == len(event2word[theirs]), ours


def test_v1_tokens_are_the_first_tokenisation():
  from cpword import configs  # pylint: disable=g-import-not-at-top
  vocab = tokens.vocab_from_config(configs.get_config('small_v1tokens'))
  assert vocab.family_sizes == {'type': 5, 'bar_beat': 18, 'tempo': 66, 'chord': 135,
                                'pitch': 89, 'duration': 17, 'velocity': 33, 'emotion': 5}
  seq = _piece([(0, 4, 60, 1), (1, 40, 21, 127), (2, 1, 108, 64)], {0: 119.0})
  words = tokens.encode_cp(seq, vocab)
  notes = words[words[:, tokens.F['type']] == tokens.TYPE_NOTE]
  assert notes[:, tokens.F['duration']].tolist() == [4, 16, 1]  # offset - onset, clipped, >= 1
  assert sorted(notes[:, tokens.F['velocity']].tolist()) == [1, 16, 32]


def test_notes_outside_the_pitch_range_are_counted():
  seq = _piece([(0, 4, 21, V), (1, 4, 60, V), (2, 4, 108, V)], {0: 119.0})
  seq.notes.add(pitch=36, velocity=V, start_time=0.0, end_time=0.5, is_drum=True)
  assert tokens.count_out_of_range(seq, VOCAB) == (3, 2)
  assert len(tokens.decode_cp(tokens.encode_cp(seq, VOCAB), VOCAB).notes) == 1


def test_bad_bins_are_user_errors():
  from common.errors import UserError  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match='durations'):
    tokens.Vocab(durations='raw')
  with pytest.raises(UserError, match='velocity bins'):
    tokens.Vocab(num_velocity_bins=100)
