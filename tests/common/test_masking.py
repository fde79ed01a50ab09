"""Tests for common/masking.py: mask distributions and the rescaled orderless-NADE loss."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import masking


def _chi2_uniform_ok(counts: np.ndarray) -> bool:
  """Chi-square goodness of fit to uniform, at a very low false-alarm rate (p ~ 1e-4)."""
  expected = counts.sum() / counts.size
  chi2 = float(((counts - expected) ** 2 / expected).sum())
  dof = counts.size - 1
  return chi2 < dof + 6 * math.sqrt(2 * dof) + 10


def test_orderless_mask_sizes_are_uniform():
  mask = np.asarray(masking.orderless_mask(jax.random.key(0), (40000, 2, 3)))
  assert set(np.unique(mask)) <= {0.0, 1.0}
  sizes = mask.reshape(len(mask), -1).sum(axis=1).astype(int)
  counts = np.bincount(sizes, minlength=7)
  assert counts[0] == 0  # at least one variable is always hidden
  assert _chi2_uniform_ok(counts[1:])
  assert abs(counts[1:].mean() - counts[6]) < 0.05 * counts[1:].mean()


@pytest.mark.parametrize('k', [1, 2, 3])
def test_orderless_subsets_of_each_size_are_uniform(k):
  mask = np.asarray(masking.orderless_mask(jax.random.key(k), (60000, 6)))
  chosen = mask[mask.sum(axis=1) == k]
  subsets = list(itertools.combinations(range(6), k))
  index = {s: i for i, s in enumerate(subsets)}
  counts = np.bincount([index[tuple(np.flatnonzero(row))] for row in chosen],
                       minlength=len(subsets))
  assert len(chosen) > 5000
  assert _chi2_uniform_ok(counts)


def test_orderless_mask_respects_valid():
  valid = np.zeros((20000, 4, 2), bool)
  valid[:, :3, 0] = True  # 3 valid variables per example
  valid[0] = False  # an example with none
  mask = np.asarray(masking.orderless_mask(jax.random.key(1), valid.shape, jnp.asarray(valid)))
  assert not mask[~valid].any()
  assert mask[0].sum() == 0
  counts = np.bincount(mask[1:].reshape(len(mask) - 1, -1).sum(axis=1).astype(int), minlength=4)
  assert counts[0] == 0 and _chi2_uniform_ok(counts[1:])


def test_bernoulli_mask_rate_and_independence():
  mask = np.asarray(masking.bernoulli_mask(jax.random.key(2), (50000, 4, 4)))
  assert abs(mask.mean() - 0.5) < 0.005
  flat = mask.reshape(len(mask), -1)
  assert abs(np.corrcoef(flat[:, 0], flat[:, 5])[0, 1]) < 0.03
  sizes = flat.sum(axis=1)
  assert abs(sizes.var() - 16 * 0.25) < 0.2  # binomial, not orderless
  valid = np.zeros((1000, 4, 4), bool)
  valid[:, 0] = True
  masked = np.asarray(masking.bernoulli_mask(jax.random.key(3), valid.shape, 0.5, valid))
  assert not masked[~valid].any() and masked[valid].mean() > 0.4


def test_subset_mask_exact_sizes():
  k = jnp.array([0, 1, 5, 9])
  mask = np.asarray(masking.subset_mask(jax.random.key(4), (4, 3, 3), k))
  np.testing.assert_array_equal(mask.reshape(4, -1).sum(axis=1), [0, 1, 5, 9])


def _random_problem(seed, batch=2, steps=5, classes=6, voices=1):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(batch, steps, classes, voices)).astype(np.float32) * 2
  labels_idx = rng.integers(classes, size=(batch, steps, voices))
  labels = np.swapaxes(np.eye(classes, dtype=np.float32)[labels_idx], -1, -2)
  return logits, labels, labels_idx


def test_rescaled_loss_weighs_every_mask_size_equally():
  """Averaged over all masks of size k, the loss is sum_j CE_j for every k (orderless NADE)."""
  logits, labels, idx = _random_problem(0, batch=1)
  log_p = jax.nn.log_softmax(logits, axis=2)
  ce = -np.take_along_axis(np.asarray(log_p), idx[:, :, None, :], axis=2)[0, :, 0, 0]
  n = ce.size
  for k in range(1, n + 1):
    losses = []
    for subset in itertools.combinations(range(n), k):
      mask = np.zeros((1, n, 1), np.float32)
      mask[0, list(subset), 0] = 1
      loss, _ = masking.rescaled_masked_cross_entropy(logits, labels, mask, class_axis=2)
      losses.append(float(loss))
    np.testing.assert_allclose(np.mean(losses), ce.sum(), rtol=1e-5)
  # Without the rescaling the mean would grow with k: the test can tell the difference.
  assert not np.isclose(ce[:1].sum(), ce.sum())


def test_rescaled_loss_value_with_silent_rows_and_weights():
  logits, labels, idx = _random_problem(1, batch=2, steps=4, voices=2)
  labels[0, 1, :, 0] = 0  # a silent variable: excluded from the loss and from N
  mask = np.zeros((2, 4, 2), np.float32)
  mask[0, :2, 0] = 1  # hides the silent one and one real one
  mask[1, 3, 1] = 1
  log_p = np.asarray(jax.nn.log_softmax(logits, axis=2))
  ce = -np.take_along_axis(log_p, idx[:, :, None, :], axis=2)[:, :, 0, :]
  expected0 = ce[0, 0, 0] * 7 / 1  # N = 7 valid, 1 hidden valid
  expected1 = ce[1, 3, 1] * 8 / 1
  loss, metrics = masking.rescaled_masked_cross_entropy(logits, labels, mask, class_axis=2)
  np.testing.assert_allclose(float(loss), (expected0 + expected1) / 2, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['ce_per_masked']), (ce[0, 0, 0] + ce[1, 3, 1]) / 2,
                             rtol=1e-5)
  weighted, _ = masking.rescaled_masked_cross_entropy(logits, labels, mask, class_axis=2,
                                                      weight_B=jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(float(weighted), expected0, rtol=1e-5)


def test_rescaled_loss_of_empty_mask_is_zero():
  logits, labels, _ = _random_problem(2)
  loss, _ = masking.rescaled_masked_cross_entropy(logits, labels, np.zeros((2, 5, 1)),
                                                  class_axis=2)
  assert float(loss) == 0.0


def test_sample_mask_rejects_unknown_kind():
  with pytest.raises(ValueError, match='unknown mask kind'):
    masking.sample_mask('nope', jax.random.key(0), (1, 2))
