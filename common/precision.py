"""bfloat16 products for inference, where they are faster, with float32 accumulation.

On CPUs with bf16 dot instructions (AVX512-BF16, AMX) and on GPUs/TPUs, products with bf16
weights read half the bytes and run faster; XLA:CPU elsewhere emulates them, slower than f32.
Even with the instructions, a product with a single row (one song, one melody) takes XLA:CPU's
slow bf16 matrix-vector path, so one row stays f32. Training is f32 unless a model opts into
mixed precision (`matmul_bf16`: bf16 operands forward and backward, f32 weights).

$MUSICGEN_INFERENCE_DTYPE=float32|bfloat16 overrides the automatic choice.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from common.errors import UserError

ENV_VAR = 'MUSICGEN_INFERENCE_DTYPE'
DTYPES = ('float32', 'bfloat16')


@functools.lru_cache(maxsize=None)  # read /proc/cpuinfo once, not on every call
def cpu_flags() -> frozenset[str]:
  """The CPU's feature flags from /proc/cpuinfo ('avx2', 'avx512_bf16', ...); empty elsewhere."""
  try:
    with open('/proc/cpuinfo') as f:
      line = next((line for line in f if line.startswith('flags')), '')
  except OSError:
    return frozenset()
  return frozenset(line.partition(':')[2].split())


def bfloat16_is_fast() -> bool:
  """Whether bf16 products beat f32 here: on GPUs and TPUs, and on CPUs with AVX512-BF16 or AMX."""
  if jax.default_backend() != 'cpu':
    return True
  return not cpu_flags().isdisjoint({'avx512_bf16', 'amx_bf16'})


def inference_dtype(rows: int | None = None) -> str:
  """'float32' or 'bfloat16' for the products of an inference pass over `rows` rows at a time:
  $MUSICGEN_INFERENCE_DTYPE when set, else bfloat16 where it is fast and rows > 1 (None: many)."""
  choice = os.environ.get(ENV_VAR, '').strip().lower()
  if choice in DTYPES:
    return choice
  if choice:
    raise UserError(f'{ENV_VAR}={choice!r}: use float32 or bfloat16')
  many_rows = rows is None or rows > 1
  return 'bfloat16' if many_rows and bfloat16_is_fast() else 'float32'


def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x @ kernel in the kernel's dtype, accumulated and returned in float32."""
  return jnp.dot(x.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32)


def transposed_product(a_NA: jax.Array, b_NB: jax.Array) -> jax.Array:
  """a^T @ b over the rows N (a kernel gradient), accumulated and returned in float32.

  With bf16 operands, `a` is transposed into its own array first: XLA:CPU runs a bf16 product
  whose transpose is left to the dot as a float32 product (both operands upcast), slower than the
  transpose plus a bf16 product at a MusicVAE LSTM's shape (benchmark rows
  reference/kernel_gradient_bf16_*, docs/performance.md). The transpose is written on a 3-D view
  because XLA folds a 2-D one back into the dot.
  float32 operands keep the plain form, which is faster for them.
  """
  if a_NA.dtype != jnp.bfloat16:
    return jax.lax.dot_general(a_NA, b_NB, (((0,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)
  a_AN = jnp.transpose(a_NA[None], (2, 0, 1)).reshape(a_NA.shape[1], a_NA.shape[0])
  return jnp.dot(a_AN, b_NB.astype(jnp.bfloat16), preferred_element_type=jnp.float32)


@jax.custom_vjp
def matmul_bf16(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x @ kernel with bf16 operands and float32 accumulation, forward and backward: the
  gradients' products (g @ kernel.T, x.T @ g) are bf16 too. x, kernel and the result are
  float32 (mixed-precision training keeps float32 weights)."""
  return matmul(x, kernel.astype(jnp.bfloat16))


def _matmul_bf16_fwd(x, kernel):
  x16, k16 = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  return matmul(x16, k16), (x16, k16)


def _matmul_bf16_bwd(saved, g):
  x16, k16 = saved
  g16 = g.astype(jnp.bfloat16)
  dx = jax.lax.dot_general(g16, k16, (((g.ndim - 1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32)
  dk = transposed_product(x16.reshape(-1, x16.shape[-1]), g16.reshape(-1, g.shape[-1]))
  return dx, dk


matmul_bf16.defvjp(_matmul_bf16_fwd, _matmul_bf16_bwd)
