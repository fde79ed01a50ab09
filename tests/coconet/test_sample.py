"""Tests for coconet/sample.py: given notes are kept, jitted Gibbs equals the reference loop."""

import jax
import numpy as np
import pytest

from common.errors import UserError
from coconet import data
from coconet import model as model_lib
from coconet import sample
from tests.coconet.helpers import forward
from tests.coconet.helpers import make_piece


def _in_range(pitches):
  return np.all((pitches >= data.MIN_PITCH) & (pitches <= data.MAX_PITCH))


def test_gibbs_schedule_and_block_sizes():
  p = sample.gibbs_schedule(10, pmax=0.9, pmin=0.1, alpha=0.7)
  np.testing.assert_allclose(p[:3], [0.9, 0.9 - 0.8 / 7, 0.9 - 1.6 / 7])
  np.testing.assert_allclose(p[7:], 0.1)  # n >= alpha * N: floor at pmin
  sizes = sample.gibbs_block_sizes(np.array([24, 3, 0]), 10)
  assert sizes.shape == (10, 3)
  np.testing.assert_array_equal(sizes[0], [22, 3, 0])  # round(0.9 * 24), capped at F
  np.testing.assert_array_equal(sizes[-1], [2, 1, 0])  # at least one while anything is free


def test_jitted_gibbs_equals_reference_loop(tiny_model):
  pieces = np.stack([make_piece(8, seed=s) for s in range(2)])
  roll = np.stack([data.pitches_to_roll(p) for p in pieces])
  free = np.zeros(pieces.shape, bool)
  free[0, :, 1:] = True  # harmonize the first piece
  free[1, 2:5] = True  # erase a region of the second
  key = jax.random.key(7)
  kwargs = dict(gibbs_steps=9, temperature=0.9)
  jitted = np.asarray(sample.gibbs_sample(tiny_model, key, roll, free, **kwargs))
  reference = sample.gibbs_sample_reference(tiny_model, key, roll, free, **kwargs)
  np.testing.assert_array_equal(jitted, reference)
  np.testing.assert_array_equal(jitted[~free[:, :, None, :].repeat(46, 2)],
                                roll[~free[:, :, None, :].repeat(46, 2)])
  other = np.asarray(sample.gibbs_sample(tiny_model, jax.random.key(8), roll, free, **kwargs))
  assert not np.array_equal(other, jitted)  # the comparison can fail


def test_jitted_gibbs_in_chunks_equals_reference_loop(tiny_model, monkeypatch):
  """With the forward pass run two pieces at a time (three pieces: one padded chunk), the jitted
  sampler still draws exactly what the whole-batch reference loop draws."""
  filters = max(layer.norm.num_features for layer in tiny_model.layers)
  two_pieces = 2 * 8 * data.NUM_PITCHES * filters * 4  # bytes of 2 pieces' activations, f32
  monkeypatch.setattr(model_lib, 'CPU_CHUNK_ACTIVATION_BYTES', two_pieces)
  assert model_lib.forward_chunk_size(tiny_model, (3, 8, data.NUM_PITCHES, 4)) == 2
  samplers = (sample._independent, sample._gibbs)
  for jitted_fn in samplers:
    jitted_fn.clear_cache()  # the chunk size is read when a sampler is traced
  pieces = np.stack([make_piece(8, seed=s) for s in range(3)])
  roll = np.stack([data.pitches_to_roll(p) for p in pieces])
  free = np.zeros(pieces.shape, bool)
  free[:, :, 1:] = True
  key = jax.random.key(3)
  kwargs = dict(gibbs_steps=6, temperature=0.9)
  try:
    jitted = np.asarray(sample.gibbs_sample(tiny_model, key, roll, free, **kwargs))
  finally:
    for jitted_fn in samplers:
      jitted_fn.clear_cache()
  reference = sample.gibbs_sample_reference(tiny_model, key, roll, free, **kwargs)
  np.testing.assert_array_equal(jitted, reference)


def test_harmonize_keeps_the_soprano_exactly(tiny_model):
  soprano = data.soprano_from_melody([67, 69, 71, None], steps_per_note=2)
  out = sample.harmonize(tiny_model, jax.random.key(0), soprano, num_samples=2, gibbs_steps=9)
  assert out.shape == (2, 8, 4)
  np.testing.assert_array_equal(out[:, :, 0], np.broadcast_to(soprano, (2, 8)))
  assert _in_range(out[:, :, 1:]) and not np.isnan(out[:, :, 1:]).any()
  assert not np.array_equal(out[0], out[1])  # two different samples


@pytest.mark.parametrize('method', ['independent', 'ancestral', 'gibbs'])
def test_complete_changes_only_erased_variables(tiny_model, method):
  piece = make_piece(8, seed=1)
  piece[0, 3] = np.nan  # a given rest stays a rest
  erase = np.zeros(piece.shape, bool)
  erase[3:6, :] = True
  erase[:, 2] = True
  erase[0, 3] = False
  out = sample.complete(tiny_model, jax.random.key(1), piece, erase, method=method,
                        gibbs_steps=4, order='random')
  np.testing.assert_array_equal(out[0][~erase], piece[~erase])
  assert _in_range(out[0][erase])


def test_ancestral_chronological_argmax_equals_brute_force(tiny_model):
  """Greedy ancestral sampling, one variable at a time with explicit masks in Python."""
  piece = make_piece(3, seed=2)
  free = np.zeros(piece.shape, bool)
  free[1:, 1:] = True
  out = sample.complete(tiny_model, jax.random.key(0), piece, free, method='ancestral',
                        temperature=0.0)[0]
  pitches = piece.copy()
  pitches[free] = np.nan
  remaining = free.copy()
  for t, i in zip(*np.nonzero(free)):  # time-major, soprano to bass
    logits = forward(tiny_model, data.pitches_to_roll(pitches)[None], remaining[None])
    pitches[t, i] = data.MIN_PITCH + int(np.argmax(logits[0, t, :, i]))
    remaining[t, i] = False
  np.testing.assert_array_equal(out, pitches)


def test_generate_upsample_revoice(tiny_model):
  key = jax.random.key(3)
  scratch = sample.generate_from_scratch(tiny_model, key, 8, num_samples=2, gibbs_steps=9)
  assert scratch.shape == (2, 8, 4) and _in_range(scratch)
  quarter = make_piece(8, seed=3)[::4]
  up = sample.upsample(tiny_model, key, quarter, gibbs_steps=4)
  assert up.shape == (1, 8, 4)
  np.testing.assert_array_equal(up[0, ::4], quarter)
  piece = make_piece(8, seed=4)
  revoiced = sample.revoice(tiny_model, key, piece, keep_voices=(0, 3), gibbs_steps=4)
  np.testing.assert_array_equal(revoiced[0][:, [0, 3]], piece[:, [0, 3]])
  assert _in_range(revoiced) and not np.array_equal(revoiced[0], piece)


def test_bad_arguments_raise_user_errors(tiny_model):
  piece = make_piece(4)
  with pytest.raises(UserError, match='sampling method'):
    sample.complete(tiny_model, jax.random.key(0), piece, np.ones(piece.shape, bool),
                    method='magic')
  with pytest.raises(UserError, match='order'):
    sample.complete(tiny_model, jax.random.key(0), piece, np.ones(piece.shape, bool),
                    method='ancestral', order='sideways')
