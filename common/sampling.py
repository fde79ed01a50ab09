"""Sampling from categorical logits: temperature, top-k, top-p (nucleus), per-field settings.

Everything here is jittable and batched over any leading dims (the vocabulary is the last axis).
`temperature`, `top_k` and `top_p` may be Python numbers or traced scalars; only whether top_k /
top_p is None changes the compiled program. Rows that are all -inf, huge logits and tiny
temperatures never produce NaN.
"""

from collections.abc import Mapping
from typing import Any
import zlib

import jax
import jax.numpy as jnp

from common.errors import UserError

_FIELD_SETTING_KEYS = frozenset({'temperature', 'top_k', 'top_p'})


def _as_float(logits_BV: jax.Array) -> jax.Array:
  """At least float32 (bf16 cumulative sums are too coarse for top-p); +inf made finite."""
  x_BV = jnp.asarray(logits_BV)
  if not jnp.issubdtype(x_BV.dtype, jnp.floating) or jnp.finfo(x_BV.dtype).bits < 32:
    x_BV = x_BV.astype(jnp.float32)
  # +inf - +inf would be NaN below; the largest finite value keeps the ordering.
  return jnp.where(x_BV == jnp.inf, jnp.finfo(x_BV.dtype).max, x_BV)


def _shift_max_to_zero(x_BV: jax.Array) -> jax.Array:
  """x - max(x) per row, so the top logit is 0 and nothing can overflow; all -inf rows stay -inf."""
  max_B1 = jnp.max(x_BV, axis=-1, keepdims=True)
  max_B1 = jnp.where(jnp.isfinite(max_B1), max_B1, 0)
  return x_BV - max_B1


# Up to this many classes, `categorical` sums the weights with a product by a triangular matrix of
# ones (one small dot); beyond, with a cumulative sum.
_TRIANGLE_MAX_CLASSES = 1024


def categorical(rng: jax.Array, logits_BV: jax.Array) -> jax.Array:
  """One class per row, with probability softmax(logits) (shape (..., V) -> (...), int32).

  Inverts the cumulative distribution with one uniform number per row. jax.random.categorical
  draws a Gumbel variable for every class instead (V random words and two logarithms per row),
  several times the work at a decoder step's shape (benchmark rows coconet/pitch_draw,
  docs/performance.md). A class of zero probability (-inf) is never drawn; an all -inf row gives 0.
  """
  x_BV = _shift_max_to_zero(_as_float(logits_BV))
  weights_BV = jnp.exp(x_BV)
  num_classes = weights_BV.shape[-1]
  if num_classes <= _TRIANGLE_MAX_CLASSES:
    upper = jnp.triu(jnp.ones((num_classes, num_classes), weights_BV.dtype))
    cumulative_BV = jnp.matmul(weights_BV, upper, precision=jax.lax.Precision.HIGHEST)
  else:
    cumulative_BV = jnp.cumsum(weights_BV, axis=-1)
  threshold_B1 = (jax.random.uniform(rng, weights_BV.shape[:-1] + (1,), weights_BV.dtype)
                  * cumulative_BV[..., -1:])
  ids_B = jnp.minimum(jnp.sum(cumulative_BV <= threshold_B1, axis=-1), num_classes - 1)
  # Rounding in the sums could leave a zero-weight class just past a threshold: take the mode then.
  chosen_B = jnp.take_along_axis(weights_BV, ids_B[..., None], axis=-1)[..., 0]
  return jnp.where(chosen_B > 0, ids_B, first_argmax(weights_BV, axis=-1)).astype(jnp.int32)


def first_argmax(x: jax.Array, axis: int = -1) -> jax.Array:
  """jnp.argmax (the first index of the maximum; int32) as a max and a min over indices.

  XLA:CPU runs jnp.argmax as one reduction of (value, index) pairs on its own loop emitter: for
  Coconet's 8,192 rows of 46 pitches it cost more than the whole inverse-CDF draw. Two plain
  reductions vectorize. NaN is treated as smaller than any number here (jnp.argmax picks a NaN).
  """
  x = jnp.asarray(x)
  axis = axis % x.ndim
  size = x.shape[axis]
  indices = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)
  is_max = x == jnp.max(x, axis=axis, keepdims=True)
  first = jnp.min(jnp.where(is_max, indices, size), axis=axis)
  return jnp.minimum(first, size - 1)  # an all-NaN row matches nothing: its last index


# Up to this many classes, ranks and the mass before each class come from all pairwise
# comparisons (one small fused computation) instead of two argsorts: XLA:CPU's sort is a loop
# over a comparator call, a sizeable part of a CP-word generation step.
_PAIRWISE_MAX_CLASSES = 512


def _before_BVV(x_BV: jax.Array) -> jax.Array:
  """before[b, i, j]: class j comes before class i in descending order (ties: lower index)."""
  index_V = jnp.arange(x_BV.shape[-1])
  x_i, x_j = x_BV[..., :, None], x_BV[..., None, :]
  return (x_j > x_i) | ((x_j == x_i) & (index_V[None, :] < index_V[:, None]))


def _descending_rank(x_BV: jax.Array) -> jax.Array:
  """rank[i]: how many classes come before class i (0 for the largest; ties: lower index)."""
  if x_BV.shape[-1] <= _PAIRWISE_MAX_CLASSES:
    return jnp.sum(_before_BVV(x_BV), axis=-1, dtype=jnp.int32)
  order_BV = jnp.argsort(-x_BV, axis=-1, stable=True)
  return jnp.argsort(order_BV, axis=-1, stable=True)


def _mass_before(probs_BV: jax.Array, x_BV: jax.Array) -> jax.Array:
  """The total probability of the classes that come before each class in descending order."""
  if x_BV.shape[-1] <= _PAIRWISE_MAX_CLASSES:
    return jnp.sum(jnp.where(_before_BVV(x_BV), probs_BV[..., None, :], 0), axis=-1)
  order_BV = jnp.argsort(-x_BV, axis=-1, stable=True)
  sorted_BV = jnp.take_along_axis(probs_BV, order_BV, axis=-1)
  before_sorted_BV = jnp.cumsum(sorted_BV, axis=-1) - sorted_BV
  return jnp.take_along_axis(before_sorted_BV, jnp.argsort(order_BV, axis=-1), axis=-1)


def top_k_mask(logits_BV: jax.Array, top_k: int | jax.Array | None) -> jax.Array:
  """Keeps exactly the `top_k` largest logits per row (ties: lower index); -inf elsewhere.

  None or >= vocabulary size keeps everything; a traced top_k below 1 acts as 1.
  """
  if isinstance(top_k, int) and top_k < 1:
    raise ValueError(f'top_k must be at least 1, got {top_k}.')
  return _top_k_mask(logits_BV, top_k)


@jax.jit
def _top_k_mask(logits_BV: jax.Array, top_k: int | jax.Array | None) -> jax.Array:
  x_BV = _as_float(logits_BV)
  if top_k is None:
    return x_BV
  # Ranks rather than lax.top_k: exactly k survive ties, and k may be traced.
  rank_BV = _descending_rank(x_BV)
  return jnp.where(rank_BV < jnp.maximum(top_k, 1), x_BV, -jnp.inf)


@jax.jit
def top_p_mask(logits_BV: jax.Array, top_p: float | jax.Array | None) -> jax.Array:
  """Keeps the smallest set of most probable tokens whose total probability reaches `top_p`.

  Tokens are taken in order of decreasing probability (ties: lower index first) while the mass
  taken before them is still below `top_p`, so the most probable token is always kept.
  `top_p` may be traced; None keeps everything.
  """
  x_BV = _as_float(logits_BV)
  if top_p is None:
    return x_BV
  # exp(-inf) = 0, and the top entry is exp(0) = 1 unless the whole row is -inf (total 0).
  weights_BV = jnp.exp(_shift_max_to_zero(x_BV))
  total_B1 = jnp.sum(weights_BV, axis=-1, keepdims=True)
  probs_BV = weights_BV / jnp.where(total_B1 > 0, total_B1, 1)
  top_BV = jnp.arange(x_BV.shape[-1]) == jnp.argmax(x_BV, axis=-1, keepdims=True)  # always kept
  keep_BV = (_mass_before(probs_BV, x_BV) < top_p) | top_BV
  return jnp.where(keep_BV, x_BV, -jnp.inf)


def sample_logits(rng: jax.Array,
                  logits_BV: jax.Array,
                  temperature: float | jax.Array = 1.0,
                  top_k: int | jax.Array | None = None,
                  top_p: float | jax.Array | None = None) -> jax.Array:
  """Samples one id per row of `logits_BV` (shape (..., V) -> (...), int32).

  Order of operations: temperature, then top-k, then top-p on the tempered distribution.
  Temperature <= 0 means greedy (argmax). A row of all -inf gives id 0.
  """
  if isinstance(temperature, (int, float)) and temperature < 0:
    raise ValueError(f'temperature must be >= 0, got {temperature}.')
  if isinstance(top_p, (int, float)) and not 0 < top_p <= 1:
    raise ValueError(f'top_p must be in (0, 1], got {top_p}.')
  if isinstance(top_k, int) and top_k < 1:
    raise ValueError(f'top_k must be at least 1, got {top_k}.')
  return _sample_logits(rng, logits_BV, temperature, top_k, top_p)


# Jitted as a whole: eager dispatch would compile each small op separately (seconds on a CPU).
@jax.jit
def _sample_logits(rng: jax.Array, logits_BV: jax.Array, temperature: float | jax.Array,
                   top_k: int | jax.Array | None, top_p: float | jax.Array | None) -> jax.Array:
  # Shift before dividing: (x - max) / t is in [-inf, 0], so a tiny t cannot overflow to +inf.
  x_BV = _shift_max_to_zero(_as_float(logits_BV))
  greedy_B = jnp.argmax(x_BV, axis=-1)
  temperature = jnp.asarray(temperature, x_BV.dtype)
  x_BV = x_BV / jnp.where(temperature > 0, temperature, 1)
  x_BV = _top_k_mask(x_BV, top_k)
  x_BV = top_p_mask(x_BV, top_p)
  sampled_B = categorical(rng, x_BV)
  return jnp.where(temperature > 0, sampled_B, greedy_B).astype(jnp.int32)


def sample_fields(rng: jax.Array,
                  logits_by_field: Mapping[str, jax.Array],
                  settings: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, jax.Array]:
  """Samples every field with its own temperature / top_k / top_p (compound-word tokens).

  `settings[field]` may hold 'temperature' (default 1.0), 'top_k' and 'top_p' (default None);
  fields without settings use the defaults, settings for absent fields are ignored. Each field's
  key is `rng` folded with a hash of the field's name, so adding a field changes no other field.
  """
  settings = settings or {}
  for field, field_settings in settings.items():
    unknown = set(field_settings) - _FIELD_SETTING_KEYS
    if unknown:
      raise UserError(f'sampling settings for field {field!r}: unknown keys {sorted(unknown)}; '
                      f'allowed: {sorted(_FIELD_SETTING_KEYS)}.')
  ids_by_field = {}
  for field in sorted(logits_by_field):
    field_settings = settings.get(field, {})
    key = jax.random.fold_in(rng, zlib.crc32(field.encode()) & 0x7FFFFFFF)
    ids_by_field[field] = sample_logits(
        key, logits_by_field[field],
        temperature=field_settings.get('temperature', 1.0),
        top_k=field_settings.get('top_k'),
        top_p=field_settings.get('top_p'))
  return ids_by_field
