"""Tests for common/sampling.py: nucleus and top-k sets, greedy, NaN safety, jit, frequencies."""

from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import sampling
from common.errors import UserError


def _kept(masked_V) -> set[int]:
  return set(np.flatnonzero(np.isfinite(np.asarray(masked_V))).tolist())


def _log(probs):
  return jnp.log(jnp.asarray(probs, jnp.float32))


@pytest.mark.parametrize('top_p, expected', [
    (0.05, {0}),        # the top token alone already reaches p
    (0.5, {0}),         # exactly reached by the top token
    (0.6, {0, 1}),
    (0.79, {0, 1}),
    (0.81, {0, 1, 2}),
    (0.99, {0, 1, 2, 3}),
    (1.0, {0, 1, 2, 3}),
])
def test_top_p_hand_computed(top_p, expected):
  logits_V = _log([0.5, 0.3, 0.15, 0.05])
  assert _kept(sampling.top_p_mask(logits_V, top_p)) == expected


def test_top_p_unsorted_input_and_batch():
  logits_BV = _log([[0.05, 0.15, 0.5, 0.3],
                    [0.4, 0.1, 0.1, 0.4]])
  masked_BV = sampling.top_p_mask(logits_BV, 0.7)
  assert _kept(masked_BV[0]) == {2, 3}
  # Ties are broken towards the lower index, deterministically.
  assert _kept(masked_BV[1]) == {0, 3}
  assert _kept(sampling.top_p_mask(logits_BV[1], 0.85)) == {0, 3, 1}
  # Kept logits are unchanged.
  np.testing.assert_allclose(masked_BV[0, 2:], logits_BV[0, 2:])


def test_top_p_always_keeps_one_and_handles_inf_rows():
  logits_BV = jnp.array([[0.0, 0.0, 0.0], [-jnp.inf] * 3, [1e30, -1e30, 0.0]])
  masked_BV = sampling.top_p_mask(logits_BV, 1e-6)
  assert _kept(masked_BV[0]) == {0}
  assert not np.isnan(np.asarray(masked_BV)).any()
  assert _kept(masked_BV[2]) == {0}


@settings(max_examples=60, deadline=None)
@given(logits=st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=2, max_size=12),
       top_p=st.floats(0.02, 0.98))
def test_top_p_is_the_smallest_set_reaching_p(logits, top_p):
  logits_V = np.asarray(logits, np.float32)
  probs_V = np.exp(logits_V.astype(np.float64) - logits_V.max())
  probs_V /= probs_V.sum()
  # Padded with impossible tokens to one shape (one compilation); they must never be kept.
  padded_V = np.full(12, -np.inf, np.float32)
  padded_V[:len(logits_V)] = logits_V
  kept = sorted(_kept(sampling.top_p_mask(jnp.asarray(padded_V), top_p)))
  assert max(kept) < len(logits_V)
  kept_mass = probs_V[kept].sum()
  tol = 1e-5  # float32 cumulative sums
  assert kept_mass >= top_p - tol
  least = min(kept, key=lambda i: probs_V[i])
  assert kept_mass - probs_V[least] < top_p + tol
  # The kept tokens are the most probable ones: nothing dropped beats anything kept.
  dropped = [i for i in range(len(logits)) if i not in kept]
  if dropped:
    assert probs_V[dropped].max() <= probs_V[kept].min()


def test_top_k_mask_exactly_k_with_ties():
  logits_BV = jnp.array([[1.0, 3.0, 3.0, 2.0, 3.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
  masked_BV = sampling.top_k_mask(logits_BV, 2)
  assert _kept(masked_BV[0]) == {1, 2}
  assert _kept(masked_BV[1]) == {0, 1}
  np.testing.assert_array_equal(sampling.top_k_mask(logits_BV, 5), logits_BV)
  np.testing.assert_array_equal(sampling.top_k_mask(logits_BV, None), logits_BV)


def test_samples_stay_in_top_k_and_nucleus():
  rng = jax.random.key(0)
  logits_V = jnp.asarray(np.random.default_rng(1).normal(size=20) * 2, jnp.float32)
  logits_NV = jnp.broadcast_to(logits_V, (2000, 20))
  # top_k 20 and top_p 1.0 keep everything: all three calls share one compiled program.
  ids_k = sampling.sample_logits(rng, logits_NV, top_k=3, top_p=1.0)
  assert set(np.unique(ids_k)) == _kept(sampling.top_k_mask(logits_V, 3))
  ids_p = sampling.sample_logits(rng, logits_NV, top_k=20, top_p=0.6)
  nucleus = _kept(sampling.top_p_mask(logits_V, 0.6))
  assert set(np.unique(ids_p)) <= nucleus and len(nucleus) < 20
  ids_both = sampling.sample_logits(rng, logits_NV, temperature=2.0, top_k=5, top_p=0.5)
  assert set(np.unique(ids_both)) <= _kept(sampling.top_k_mask(logits_V, 5))


def test_temperature_zero_is_argmax():
  logits_BTV = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5, 11)), jnp.float32)
  expected = np.argmax(logits_BTV, axis=-1)
  ids = sampling.sample_logits(jax.random.key(0), logits_BTV, temperature=0.0)
  np.testing.assert_array_equal(ids, expected)
  assert ids.shape == (3, 5) and ids.dtype == jnp.int32
  # A tiny temperature is effectively greedy; 1 is not.
  np.testing.assert_array_equal(
      sampling.sample_logits(jax.random.key(0), logits_BTV, 1e-30), expected)
  assert not np.array_equal(sampling.sample_logits(jax.random.key(0), logits_BTV, 1.0), expected)


def test_no_nan_for_degenerate_logits():
  logits_BV = jnp.array([[-jnp.inf] * 4,
                         [3e38, -3e38, 1e38, 0.0],
                         [jnp.inf, 0.0, -jnp.inf, 1.0],
                         [0.0, -jnp.inf, -jnp.inf, -jnp.inf]])
  for temperature in (1.0, 1e-30, 0.0, 1e30):
    for top_p in (None, 0.5, 1.0):
      ids = sampling.sample_logits(jax.random.key(3), logits_BV, temperature, top_k=2, top_p=top_p)
      ids = np.asarray(ids)
      assert ((ids >= 0) & (ids < 4)).all()
      assert ids[3] == 0
      if temperature < 1:
        assert ids[1] == 0 and ids[2] == 0
  for masked in (sampling.top_p_mask(logits_BV, 0.9), sampling.top_k_mask(logits_BV, 2)):
    assert not np.isnan(np.asarray(masked)).any()


def test_jit_with_traced_temperature_and_top_p():
  fn = jax.jit(sampling.sample_logits)
  logits_BV = jnp.asarray(np.random.default_rng(4).normal(size=(6, 10)), jnp.float32)
  ids_a = fn(jax.random.key(5), logits_BV, jnp.float32(0.7), 4, jnp.float32(0.9))
  ids_b = fn(jax.random.key(5), logits_BV, jnp.float32(0.7), 4, jnp.float32(0.9))
  np.testing.assert_array_equal(ids_a, ids_b)
  # Eager and jitted agree.
  np.testing.assert_array_equal(
      ids_a, sampling.sample_logits(jax.random.key(5), logits_BV, 0.7, top_k=4, top_p=0.9))
  # Traced temperature 0 is greedy; traced top_k 1 is greedy too.
  greedy = np.argmax(logits_BV, axis=-1)
  np.testing.assert_array_equal(fn(jax.random.key(5), logits_BV, 0.0, 4, 0.9), greedy)
  np.testing.assert_array_equal(fn(jax.random.key(5), logits_BV, 5.0, 1, 1.0), greedy)
  # Masks jit with a traced top_k.
  masked = jax.jit(sampling.top_k_mask)(logits_BV, jnp.int32(3))
  assert (np.isfinite(masked).sum(-1) == 3).all()


def test_frequencies_match_softmax_at_temperature_one():
  probs_V = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
  n = 20000
  logits_NV = jnp.broadcast_to(jnp.log(jnp.asarray(probs_V, jnp.float32)), (n, 5))
  ids = np.asarray(sampling.sample_logits(jax.random.key(6), logits_NV))
  counts = np.bincount(ids, minlength=5)
  chi2 = ((counts - n * probs_V) ** 2 / (n * probs_V)).sum()
  assert chi2 < 25.0  # 4 d.o.f.: P(chi2 > 25) ~ 5e-5
  # Temperature 2 flattens towards probs ** (1/2), renormalised.
  flat_V = np.sqrt(probs_V) / np.sqrt(probs_V).sum()
  ids_t = np.asarray(sampling.sample_logits(jax.random.key(7), logits_NV, temperature=2.0))
  counts_t = np.bincount(ids_t, minlength=5)
  assert ((counts_t - n * flat_V) ** 2 / (n * flat_V)).sum() < 25.0


@pytest.mark.parametrize('by_cumsum', [False, True])
def test_categorical_follows_softmax_and_never_draws_minus_inf(by_cumsum, monkeypatch):
  if by_cumsum:  # the path for vocabularies larger than the triangular product's
    monkeypatch.setattr(sampling, '_TRIANGLE_MAX_CLASSES', 2)
  probs_V = np.array([0.0, 0.35, 0.0, 0.4, 0.2, 0.05, 0.0])
  n = 20000
  with np.errstate(divide='ignore'):
    logits_NV = jnp.broadcast_to(jnp.asarray(np.log(probs_V) + 3.0, jnp.float32), (n, 7))
  ids = np.asarray(jax.jit(sampling.categorical)(jax.random.key(11), logits_NV))
  assert ids.dtype == np.int32 and ids.shape == (n,)
  counts = np.bincount(ids, minlength=7)
  assert counts[probs_V == 0].sum() == 0
  kept = probs_V > 0
  expected = n * probs_V[kept]
  assert ((counts[kept] - expected) ** 2 / expected).sum() < 25.0  # 3 d.o.f.
  # Leading dimensions batch; an all -inf row gives class 0.
  grid = jnp.full((2, 3, 4), -jnp.inf).at[0, 0, 2].set(0.0)
  np.testing.assert_array_equal(sampling.categorical(jax.random.key(0), grid),
                                [[2, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize('axis', [0, 1, 2, -1])
def test_first_argmax_equals_argmax_ties_and_infinities_included(axis):
  rng = np.random.default_rng(12)
  x = rng.integers(0, 4, size=(5, 6, 7)).astype(np.float32)  # many ties: the first index wins
  x[0, 0, :] = -np.inf
  x[1, :, 2] = np.inf
  np.testing.assert_array_equal(sampling.first_argmax(jnp.asarray(x), axis=axis),
                                np.argmax(x, axis=axis))


def test_top_p_samples_follow_the_renormalised_nucleus():
  probs_V = np.array([0.5, 0.3, 0.15, 0.05])
  n = 20000
  logits_NV = jnp.broadcast_to(jnp.log(jnp.asarray(probs_V, jnp.float32)), (n, 4))
  ids = np.asarray(sampling.sample_logits(jax.random.key(8), logits_NV, top_p=0.7))
  counts = np.bincount(ids, minlength=4)
  assert counts[2:].sum() == 0
  expected = n * probs_V[:2] / probs_V[:2].sum()
  assert ((counts[:2] - expected) ** 2 / expected).sum() < 20.0


def test_sample_fields_uses_per_field_settings():
  rng = np.random.default_rng(9)
  logits = {'pitch': jnp.asarray(rng.normal(size=(500, 12)), jnp.float32),
            'duration': jnp.asarray(rng.normal(size=(500, 6)), jnp.float32),
            'family': jnp.zeros((500, 12))}
  ids = sampling.sample_fields(jax.random.key(11), logits, {
      'pitch': {'temperature': 0.0},
      'duration': {'top_k': 2},
      'unused': {'temperature': 3.0},
  })
  assert set(ids) == set(logits)
  np.testing.assert_array_equal(ids['pitch'], np.argmax(logits['pitch'], -1))
  top2 = np.argsort(-np.asarray(logits['duration']), axis=-1)[:, :2]
  assert all(i in row for i, row in zip(np.asarray(ids['duration']), top2))
  assert set(np.unique(ids['family'])) == set(range(12))  # defaults: temperature 1, no truncation
  # Reproducible, and a field's samples do not depend on which other fields are sampled.
  without_family = {k: v for k, v in logits.items() if k != 'family'}
  again = sampling.sample_fields(jax.random.key(11), without_family,
                                 {'pitch': {'temperature': 0.0}, 'duration': {'top_k': 2}})
  assert set(again) == {'pitch', 'duration'}
  for field in again:
    np.testing.assert_array_equal(ids[field], again[field])
  # Fields get different keys: equal logits do not give equal samples.
  twins = sampling.sample_fields(jax.random.key(11), {'a': logits['family'], 'b': logits['family']})
  assert not np.array_equal(twins['a'], twins['b'])
  with pytest.raises(UserError, match='top_q'):
    sampling.sample_fields(jax.random.key(0), logits, {'pitch': {'top_q': 0.9}})


def test_bad_static_arguments():
  with pytest.raises(ValueError, match='temperature'):
    sampling.sample_logits(jax.random.key(0), jnp.zeros(3), temperature=-1.0)
  with pytest.raises(ValueError, match='top_p'):
    sampling.sample_logits(jax.random.key(0), jnp.zeros(3), top_p=0.0)
  with pytest.raises(ValueError, match='top_k'):
    sampling.top_k_mask(jnp.zeros(3), 0)


@pytest.mark.parametrize('num_classes', [7, 600])  # the pairwise path, and the sort path
def test_pairwise_and_sorted_ranks_agree(num_classes, monkeypatch):
  """Both ways of ranking (all pairs for small vocabularies, argsort for large) give the same
  top-k and top-p sets, ties included."""
  rng = np.random.default_rng(num_classes)
  logits_BV = np.round(rng.normal(size=(4, num_classes)) * 2, 1).astype(np.float32)  # with ties
  logits_BV[1, :3] = -np.inf
  results = []
  for limit in (10**6, 0):  # every vocabulary pairwise, then every vocabulary sorted
    monkeypatch.setattr(sampling, '_PAIRWISE_MAX_CLASSES', limit)
    jax.clear_caches()
    results.append([np.isfinite(np.asarray(sampling.top_p_mask(logits_BV, p))) for p in
                    (0.3, 0.9)] + [np.isfinite(np.asarray(sampling.top_k_mask(logits_BV, 5)))])
  for pairwise, sorted_ in zip(*results):
    np.testing.assert_array_equal(pairwise, sorted_)
