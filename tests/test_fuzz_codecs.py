"""Hypothesis fuzzing of every encoder and decoder, across the four models.

Two properties per codec: what the encoding can represent survives a round trip exactly, and any
token array a model could emit (in range but otherwise arbitrary, as a sampler may produce)
decodes to a NoteSequence without raising. The per-model test files hold the hand-made cases;
the MusicVAE melody/drum and CP round trips are fuzzed in tests/musicvae and tests/cpword.
"""

import warnings

from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np

from coconet import data as coconet_data
from cpword import tokens as cp_tokens
from musicvae import data as mvae_data
from pianonet import data as pianonet_data

_FUZZ = settings(max_examples=40, deadline=None)


# --- Coconet: SATB pitch arrays <-> rolls <-> NoteSequences. -------------------------------------

@st.composite
def satb_pitches(draw):
  """(T, 4) float32 pitches or NaN. Each voice keeps to its own 11-semitone band of 36..81 and
  sounds at least once (NoteSequence parts are told apart by mean pitch), and the last step
  sounds (a sequence ends with its last note)."""
  num_steps = draw(st.integers(1, 24))
  offsets_TI = draw(hnp.arrays(np.int8, (num_steps, 4), elements=st.integers(0, 10)))
  silent_TI = draw(hnp.arrays(np.bool_, (num_steps, 4)))
  top_I = coconet_data.MAX_PITCH - 10 - 11 * np.arange(4)
  pitches_TI = (top_I + offsets_TI).astype(np.float32)
  silent_TI[draw(st.integers(0, num_steps - 1)), :] = False  # every voice sounds somewhere
  silent_TI[-1, draw(st.integers(0, 3))] = False
  pitches_TI[silent_TI] = np.nan
  return pitches_TI


@_FUZZ
@given(satb_pitches())
def test_coconet_pitches_roll_and_sequence_round_trips(pitches_TI):
  roll_TPI = coconet_data.pitches_to_roll(pitches_TI)
  assert roll_TPI.shape == (len(pitches_TI), coconet_data.NUM_PITCHES, 4)
  np.testing.assert_array_equal(coconet_data.roll_to_pitches(roll_TPI), pitches_TI)
  seq = coconet_data.pitches_to_sequence(pitches_TI)
  np.testing.assert_array_equal(coconet_data.sequence_to_pitches(seq), pitches_TI)


@_FUZZ
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=16),
                  elements=st.one_of(st.just(np.nan), st.integers(0, 127).map(float))))
def test_coconet_any_pitch_array_writes_a_sequence(pitches_TI):
  """Out-of-range pitches and any voice count still make a NoteSequence (the checks are for
  inputs to the model, not for writing)."""
  seq = coconet_data.pitches_to_sequence(pitches_TI)
  assert len(seq.notes) <= np.isfinite(pitches_TI).sum()


# --- MusicVAE: trio tokens <-> NoteSequences, and any tokens decode. -----------------------------

@st.composite
def monophonic_tokens(draw, low: int, high: int, num_steps: int = 32):
  notes, t = [], draw(st.integers(0, 4))
  while t < num_steps:
    end = min(t + draw(st.integers(1, 8)), num_steps)
    notes.append((t, end, draw(st.integers(low, high))))
    t = end + draw(st.integers(0, 4))
  return mvae_data.events_to_tokens(mvae_data.melody_events(notes, num_steps))


@_FUZZ
@given(melody=monophonic_tokens(48, 96), bass=monophonic_tokens(28, 55),
       drums=hnp.arrays(np.int16, 32, elements=st.integers(1, 511)))
def test_musicvae_trio_round_trip(melody, bass, drums):
  enc = mvae_data.Encoding('trio', num_bars=2, max_silence_bars=2)
  tokens_TK = np.stack([melody, bass, drums], axis=1)
  seq = mvae_data.tokens_to_sequence(tokens_TK, enc)
  slices, _ = mvae_data.extract_slices([seq], enc)
  assert len(slices) == 1
  np.testing.assert_array_equal(slices[0], tokens_TK)


@_FUZZ
@given(kind=st.sampled_from(['melody', 'drums', 'trio']), data=st.data())
def test_musicvae_any_tokens_decode(kind, data):
  enc = mvae_data.Encoding(kind, num_bars=1)
  columns = [data.draw(hnp.arrays(np.int16, enc.num_steps, elements=st.integers(0, size - 1)))
             for size in enc.vocab_sizes]
  seq = mvae_data.tokens_to_sequence(np.stack(columns, axis=1), enc)
  for note in seq.notes:
    assert 0 <= note.quantized_start_step < note.quantized_end_step <= enc.num_steps
    assert note.is_drum or mvae_data.MIN_PITCH <= note.pitch <= mvae_data.MAX_PITCH


# --- PianoNet: binary key states <-> NoteSequences. ----------------------------------------------

@_FUZZ
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.just(72)), elements=st.integers(0, 1)))
def test_pianonet_roll_round_trip(roll_TK):
  enc = pianonet_data.Encoding()
  seq = pianonet_data.roll_to_sequence(roll_TK, enc)
  back_TK, stats = pianonet_data.sequence_to_roll(seq, enc, trim=False)
  last = np.flatnonzero(roll_TK.any(axis=1))
  expected_TK = roll_TK[:last[-1] + 1] if len(last) else roll_TK[:0]
  np.testing.assert_array_equal(back_TK, expected_TK)
  assert stats.out_of_range == 0 and stats.duplicates == 0
  # The flattened form the model reads round-trips too (a partial last step is padded).
  keys_N = pianonet_data.flatten(roll_TK)
  np.testing.assert_array_equal(pianonet_data.unflatten(keys_N[:len(keys_N) - 5], 72)[:-1],
                                roll_TK[:-1])


# --- CP-word: any word or event array decodes to its valid prefix. -------------------------------

_VOCAB = cp_tokens.Vocab()


@_FUZZ
@given(st.data())
def test_cp_any_words_decode_to_their_valid_prefix(data):
  sizes = [_VOCAB.family_sizes[f] for f in cp_tokens.FAMILIES]
  num_words = data.draw(st.integers(0, 40))
  words = np.array([[data.draw(st.integers(0, n - 1)) for n in sizes] for _ in range(num_words)],
                   np.int32).reshape(num_words, len(sizes))
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', cp_tokens.TokenWarning)
    prefix = cp_tokens.valid_prefix_length(words, _VOCAB, warn=False)
    seq = cp_tokens.decode_cp(words, _VOCAB)
  assert 0 <= prefix <= num_words
  assert all(n.end_time > n.start_time for n in seq.notes)
  if prefix:  # the valid prefix alone decodes to the same notes, with no warning
    with warnings.catch_warnings():
      warnings.simplefilter('error', cp_tokens.TokenWarning)
      again = cp_tokens.decode_cp(words[:prefix], _VOCAB)
    assert [(n.pitch, n.start_time) for n in again.notes] == [
        (n.pitch, n.start_time) for n in seq.notes]


@_FUZZ
@given(hnp.arrays(np.int32, st.integers(0, 60), elements=st.integers(0, _VOCAB.remi_size - 1)))
def test_remi_any_events_decode(events):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', cp_tokens.TokenWarning)
    seq = cp_tokens.decode_remi(events, _VOCAB)
  assert all(n.end_time > n.start_time for n in seq.notes)
