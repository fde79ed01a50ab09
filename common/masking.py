"""NADE-style training masks and the rescaled masked cross-entropy (orderless NADE objective).

Model-free and shape-generic: a mask covers the trailing "variable" dimensions of an array whose
leading dimension is the batch, e.g. mask_BTI for Coconet's (time, instrument) variables. A mask is
float32 with 1 = hidden (the model must predict it) and 0 = given.

Silent variables (an all-zero one-hot target row: a voice that rests, or padding at the end of a
crop) cannot be predicted by a softmax over pitch, so they are "invalid": the mask samplers never
hide them when `valid` is given, and the loss ignores them in any case. The number of variables
N in the rescaling is then the number of valid ones, so a piece with a resting voice is weighted
like a shorter piece, not penalised for its rests.

Coconet is its only user today; it lives in common/ (DESIGN.md's layout) because the orderless
NADE objective knows no model: any model over a grid of categorical variables can train with it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _flat_valid(shape: tuple[int, ...], valid: jax.Array | None) -> jax.Array:
  """Valid variables as a (B, N) bool array."""
  if valid is None:
    return jnp.ones((shape[0], _num_vars(shape)), bool)
  if valid.shape != tuple(shape):
    raise ValueError(f'valid has shape {valid.shape}, expected {tuple(shape)}')
  return valid.reshape(shape[0], -1).astype(bool)


def _num_vars(shape: tuple[int, ...]) -> int:
  n = 1
  for d in shape[1:]:
    n *= d
  return n


@functools.partial(jax.jit, static_argnames=('shape',))
def bernoulli_mask(key: jax.Array, shape: tuple[int, ...], p: float = 0.5,
                   valid: jax.Array | None = None) -> jax.Array:
  """Hides each variable independently with probability p (restricted to `valid` ones).

  Args:
    key: PRNG key.
    shape: (B, ...) the batch and variable dims, e.g. (B, T, I).
    p: probability that a variable is hidden.
    valid: optional bool array of `shape`; invalid variables are never hidden.

  Returns:
    float32 mask of `shape`, 1 = hidden.
  """
  mask = jax.random.bernoulli(key, p, shape)
  if valid is not None:
    mask &= valid.astype(bool)
  return mask.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('shape',))
def subset_mask(key: jax.Array, shape: tuple[int, ...], k_B: jax.Array,
                valid: jax.Array | None = None) -> jax.Array:
  """Hides a uniformly random subset of exactly k_B[b] valid variables in each example b.

  Every subset of that size is equally likely: the k variables with the smallest iid uniform keys
  form a uniform random k-subset. k larger than the number of valid variables hides all of them.
  """
  valid_BN = _flat_valid(shape, valid)
  u_BN = jax.random.uniform(key, valid_BN.shape)
  u_BN = jnp.where(valid_BN, u_BN, 2.0)  # invalid variables sort last and are never chosen
  rank_BN = jnp.argsort(jnp.argsort(u_BN, axis=1), axis=1)
  mask_BN = (rank_BN < jnp.asarray(k_B)[:, None]) & valid_BN
  return mask_BN.reshape(shape).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('shape',))
def orderless_mask(key: jax.Array, shape: tuple[int, ...],
                   valid: jax.Array | None = None) -> jax.Array:
  """The orderless NADE mask: k ~ U{1..N}, then a uniform k-subset (N = valid variables).

  This is the distribution of "the variables not yet revealed" at a uniformly random step of a
  uniformly random ordering, which is what makes the rescaled loss the orderless NADE objective.
  An example without valid variables gets an empty mask.
  """
  valid_BN = _flat_valid(shape, valid)
  n_B = jnp.sum(valid_BN, axis=1)
  k_key, subset_key = jax.random.split(key)
  # k = 1 + floor(u * n) is uniform on 1..n (the clip guards u's float rounding to 1.0).
  k_B = 1 + jnp.floor(jax.random.uniform(k_key, n_B.shape) * n_B).astype(jnp.int32)
  k_B = jnp.minimum(k_B, n_B)
  return subset_mask(subset_key, shape, k_B, valid)


def sample_mask(kind: str, key: jax.Array, shape: tuple[int, ...],
                valid: jax.Array | None = None) -> jax.Array:
  """Dispatches on a config string: 'orderless' or 'bernoulli' (p 0.5)."""
  if kind == 'orderless':
    return orderless_mask(key, shape, valid)
  if kind == 'bernoulli':
    return bernoulli_mask(key, shape, 0.5, valid)
  raise ValueError(f'unknown mask kind {kind!r}; expected "orderless" or "bernoulli"')


def masked_cross_entropy_terms(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                               class_axis: int) -> dict[str, jax.Array]:
  """Per-example pieces of the masked loss.

  Args:
    logits: (B, ...) with a class axis somewhere after the batch axis, e.g. logits_BTPI.
    labels: one-hot (or all-zero for a silent variable) targets, same shape as `logits`.
    mask: the logits' shape without the class axis, 1 = hidden.
    class_axis: the class (softmax) axis of logits/labels.

  Returns:
    dict of (B,) arrays: 'ce_sum' (cross-entropy summed over hidden valid variables),
    'num_masked' (hidden valid variables), 'num_valid' (valid variables).
  """
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=class_axis)
  labels = labels.astype(jnp.float32)
  ce = -jnp.sum(labels * log_p, axis=class_axis)
  valid = (jnp.sum(labels, axis=class_axis) > 0).astype(jnp.float32)
  weight = mask.astype(jnp.float32) * valid
  reduce_axes = tuple(range(1, ce.ndim))
  return {
      'ce_sum': jnp.sum(ce * weight, axis=reduce_axes),
      'num_masked': jnp.sum(weight, axis=reduce_axes),
      'num_valid': jnp.sum(valid, axis=reduce_axes),
  }


def rescaled_loss_per_example(terms: dict[str, jax.Array]) -> jax.Array:
  """(N / num_masked) * masked CE sum per example: every mask size weighs the same.

  An example with nothing hidden contributes 0.
  """
  return terms['ce_sum'] * terms['num_valid'] / jnp.maximum(terms['num_masked'], 1.0)


@functools.partial(jax.jit, static_argnames=('class_axis',))
def rescaled_masked_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array, *,
                                  class_axis: int = -1, weight_B: jax.Array | None = None
                                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The orderless NADE loss, averaged over the batch (weighted by weight_B when given).

  loss_b = (N_b / K_b) * sum over hidden valid variables of -log softmax(logits)[label], with N_b
  the valid variables and K_b the hidden valid ones. Its expectation over orderless masks is the
  expected negative log-likelihood of a random ordering, summed over the N_b variables.

  Returns:
    (scalar loss, metrics): 'ce_per_masked' is the plain mean cross-entropy per hidden variable
    (a per-note NLL estimate in nats), 'mask_fraction' the mean K_b / N_b.
  """
  terms = masked_cross_entropy_terms(logits, labels, mask, class_axis)
  loss_B = rescaled_loss_per_example(terms)
  if weight_B is None:
    weight_B = jnp.ones_like(loss_B)
  total = jnp.maximum(jnp.sum(weight_B), 1e-9)
  loss = jnp.sum(loss_B * weight_B) / total
  metrics = {
      'ce_per_masked': jnp.sum(terms['ce_sum'] * weight_B)
                       / jnp.maximum(jnp.sum(terms['num_masked'] * weight_B), 1.0),
      'mask_fraction': jnp.sum(terms['num_masked'] / jnp.maximum(terms['num_valid'], 1.0)
                               * weight_B) / total,
  }
  return loss, metrics
