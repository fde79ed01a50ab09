"""PianoNet generation: fast (queues) == naive (full recompute) for the same RNG; edge aversion."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import midi
from common.errors import UserError
from pianonet import data
from pianonet import generate
from pianonet import model as model_lib

NUM_KEYS = 6


def make_model(kernel_size, block_layers, key_phase_input=False):
  widths = [4] * sum(block_layers)  # few distinct shapes: little to compile
  # Output bias 0: the untrained net then presses keys often, so that the samples vary a lot and
  # equal outputs of the two paths are a real check.
  return model_lib.PianoNet(num_keys=NUM_KEYS, kernel_size=kernel_size, block_layers=block_layers,
                            widths=widths, output_bias_init=0.0, key_phase_input=key_phase_input,
                            rngs=nnx.Rngs(kernel_size))


@pytest.mark.parametrize('kernel_size,block_layers,phase,seed_len', [
    (2, (3, 3), False, 1),      # seed shorter than every queue: zero history
    (2, (4, 2), True, 12),      # seed shorter than the receptive field
    (3, (2, 3), False, 42),     # seed longer than the receptive field
])
def test_fast_generation_equals_naive_generation(kernel_size, block_layers, phase, seed_len):
  model = make_model(kernel_size, block_layers, phase)
  seed_BT = jax.random.bernoulli(jax.random.key(5), 0.4, (3, seed_len)).astype(jnp.uint8)
  kwargs = dict(temperature=1.3, thresholds=(1.0, 0.3), first_key=2)
  fast_BN = generate.generate_fast(model, seed_BT, 90, jax.random.key(9), **kwargs)
  naive_BN = generate.generate_naive(model, seed_BT, 90, jax.random.key(9), **kwargs)
  assert fast_BN.shape == (3, 90) and fast_BN.dtype == jnp.uint8
  np.testing.assert_array_equal(fast_BN, naive_BN)
  assert 0.1 < float(fast_BN.mean()) < 0.9
  # The streams are independent: different rows differ, and another key changes the result.
  assert not np.array_equal(fast_BN[0], fast_BN[1])
  other_BN = generate.generate_fast(model, seed_BT, 90, jax.random.key(10), **kwargs)
  assert not np.array_equal(fast_BN, other_BN)


def test_edge_threshold_table():
  table = generate.edge_threshold_table(10, (1.0, 0.5, 0.2))
  np.testing.assert_allclose(table, [1.0, 0.5, 0.2, 0, 0, 0, 0, 0.2, 0.5, 1.0])
  paper = generate.edge_threshold_table(72)
  np.testing.assert_allclose(paper[:8], generate.DEFAULT_THRESHOLDS)
  np.testing.assert_allclose(paper[-8:], generate.DEFAULT_THRESHOLDS[::-1])
  assert not paper[8:-8].any()


def test_edge_aversion_zeroes_low_probabilities_near_the_edges():
  table_K = jnp.asarray(generate.edge_threshold_table(8, (1.0, 0.4, 0.05)))
  key_B = jnp.array([0, 0, 1, 1, 2, 2, 3, 4, 6, 7])
  p_B = jnp.array([0.99, 1.0, 0.39, 0.41, 0.04, 0.06, 0.01, 0.01, 0.39, 0.99])
  got = generate.apply_edge_aversion(p_B, key_B, table_K)
  want = [0.0, 1.0, 0.0, 0.41, 0.0, 0.06, 0.01, 0.01, 0.0, 0.0]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_generated_keys_respect_edge_aversion():
  model = make_model(2, (3,))
  seed_BT = jnp.zeros((4, NUM_KEYS), jnp.uint8)
  thresholds = (1.0, 0.999)  # p < 1 always, and p < 0.999 nearly always
  new_BN = generate.generate_fast(model, seed_BT, NUM_KEYS * 30, jax.random.key(0),
                                  thresholds=thresholds)
  roll = np.asarray(new_BN).reshape(4, 30, NUM_KEYS)
  assert not roll[..., [0, 1, -2, -1]].any()
  assert roll[..., 2:-2].any()
  without = generate.generate_fast(model, seed_BT, NUM_KEYS * 30, jax.random.key(0), thresholds=())
  assert np.asarray(without).reshape(4, 30, NUM_KEYS)[..., [0, -1]].any()


def test_temperature_zero_is_greedy():
  model = make_model(2, (3,))
  seed_BT = jnp.ones((2, 7), jnp.uint8)
  a = generate.generate_fast(model, seed_BT, 20, jax.random.key(0), temperature=0.0, thresholds=())
  b = generate.generate_fast(model, seed_BT, 20, jax.random.key(1), temperature=0.0, thresholds=())
  np.testing.assert_array_equal(a, b)


def test_seed_helpers_align_to_time_steps():
  keys_N = np.arange(40, dtype=np.uint8) % 2
  seed = generate.seed_from_sequence(keys_N, 23, receptive_field=9, num_keys=4)
  assert len(seed) == 12  # 9 rounded up to whole steps of 4 keys
  np.testing.assert_array_equal(seed, keys_N[8:20])  # ends at the step boundary before 23
  assert len(generate.seed_from_sequence(keys_N, 6, 9, 4)) == 12  # silence in front


_MUSICXML = """<?xml version="1.0" encoding="UTF-8"?>
<score-partwise version="3.1">
  <part-list><score-part id="P1"><part-name>Piano</part-name></score-part></part-list>
  <part id="P1"><measure number="1">
    <attributes><divisions>1</divisions><time><beats>4</beats><beat-type>4</beat-type></time>
    </attributes>
    {notes}
  </measure></part>
</score-partwise>
"""


def _musicxml(path, octave):
  notes = ''.join(f'<note><pitch><step>{step}</step><octave>{octave}</octave></pitch>'
                  '<duration>1</duration></note>' for step in 'CDEF')
  path.write_text(_MUSICXML.format(notes=notes))
  return str(path)


def _seed_from_file(path, enc):
  return generate.seed_from_notes(midi.read_music(path), enc, 8, None, name=path)


def test_seed_from_a_musicxml_file_names_the_file(tmp_path):
  enc = data.Encoding()  # keys 31..102
  seed = _seed_from_file(_musicxml(tmp_path / 'seed.musicxml', 4), enc)
  roll_TK = data.unflatten(seed, enc.num_keys)
  assert sorted(set(np.nonzero(roll_TK)[1] + enc.lowest_key)) == [60, 62, 64, 65]
  with pytest.raises(UserError, match=r'low.xml: no notes inside the key window .*4 notes outside'):
    _seed_from_file(_musicxml(tmp_path / 'low.xml', 0), enc)


def test_a_seed_is_read_from_0_s_like_the_originals_app():
  """Without a time signature the original's data pipeline estimates the first beat from the
  onsets and drops notes that end before it; its serving code reads seeds from 0 s."""
  import note_seq
  seq = note_seq.NoteSequence(ticks_per_quarter=note_seq.STANDARD_PPQ)
  seq.tempos.add(qpm=120.0)
  for pitch, start in ((60, 0.0), (62, 60.25)):
    seq.notes.add(pitch=pitch, start_time=start, end_time=start + 0.5, velocity=80)
  enc = data.Encoding()
  as_data = data.sequence_to_roll(seq, enc)[0]
  assert len(data.roll_to_notes(as_data)[0]) == 1  # the first beat estimated at 60.25 s
  seed = generate.seed_from_notes(seq, enc, 8, None)
  assert len(data.roll_to_notes(data.unflatten(seed, enc.num_keys))[0]) == 2


def test_a_seed_whose_notes_are_all_too_short_says_so():
  import note_seq
  seq = note_seq.NoteSequence(ticks_per_quarter=note_seq.STANDARD_PPQ)
  seq.tempos.add(qpm=120.0)
  seq.notes.add(pitch=60, start_time=0.0, end_time=0.005, velocity=80)
  with pytest.raises(UserError, match='none of its 1 notes inside the key window'):
    generate.seed_from_notes(seq, data.Encoding(), 8, None, name='short.mid')
