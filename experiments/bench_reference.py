"""What this machine's matrix products reach: the ceiling to read the models' GFLOP/s against,
and the bf16 kernel-gradient product with and without its transpose done first.

One f32 and one bf16 (f32 accumulation) product of the shape a 'paper' Coconet layer would be as
a matrix product (batch 20 x 64 steps x 46 pitches = 58,880 rows, 3 x 3 x 128 = 1,152 inputs,
128 outputs), through XLA as every model uses it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from common import precision
from experiments import benchmarks as bench

_SHAPE = (58_880, 1_152, 128)


def _matmul_result(dtype, repeats: int, warmup: int, suffix: str = '') -> dict:
  m, k, n = _SHAPE
  a = jax.random.normal(jax.random.key(0), (m, k)).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (k, n)).astype(dtype)
  product = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  seconds = bench.median_seconds(lambda: bench.block(product(a, b)), repeats=repeats,
                                 warmup=warmup)
  name = jnp.dtype(dtype).name
  return bench.result(f'reference/matmul_{name}{suffix}', seconds, flops=2.0 * m * k * n,
                      note=f'{m} x {k} times {k} x {n} in {name}, f32 accumulation (XLA dot)'
                           + (', again at the end of the run' if suffix else ''))


def matmul(repeats: int, warmup: int) -> list[dict]:
  return [_matmul_result(jnp.float32, repeats, warmup),
          _matmul_result(jnp.bfloat16, repeats, warmup)]


# The same products once more at the end of a run (experiments/benchmark.py runs `matmul` first
# and this last): how far the machine's speed drifted while the rows in between ran.
END_SUFFIX = '_end'


def matmul_end(repeats: int, warmup: int) -> list[dict]:
  return [_matmul_result(jnp.float32, repeats, warmup, END_SUFFIX),
          _matmul_result(jnp.bfloat16, repeats, warmup, END_SUFFIX)]


# A kernel gradient x^T @ g of one of MusicVAE's LSTM layers at batch 64 (32 steps x 64 rows):
# bf16 operands with the transpose left to the dot, against common/precision.transposed_product,
# which transposes x into its own array first (XLA:CPU ran the former as a float32 product).
_KERNEL_GRADIENT_SHAPE = (2_048, 512, 2_048)  # rows, inputs, outputs


def _kernel_gradient_result(name: str, product, repeats: int, warmup: int) -> dict:
  rows, k, n = _KERNEL_GRADIENT_SHAPE
  x = jax.random.normal(jax.random.key(0), (rows, k)).astype(jnp.bfloat16)
  g = jax.random.normal(jax.random.key(1), (rows, n)).astype(jnp.bfloat16)
  jitted = jax.jit(product)
  seconds = bench.median_seconds(lambda: bench.block(jitted(x, g)), repeats=repeats,
                                 warmup=warmup)
  return bench.result(f'reference/kernel_gradient_bf16_{name}', seconds,
                      flops=2.0 * rows * k * n,
                      note=f'{rows} x {k} transposed times {rows} x {n}, bf16, f32 accumulation')


def kernel_gradient(repeats: int, warmup: int) -> list[dict]:
  def transpose_in_dot(x, g):
    return jax.lax.dot_general(x, g, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)

  return [_kernel_gradient_result('transpose_in_dot', transpose_in_dot, repeats, warmup),
          _kernel_gradient_result('transposed_first', precision.transposed_product, repeats,
                                  warmup)]


# The benchmarks of this module by name (experiments/benchmark.py lists every module's).
BENCHMARKS = {
    'reference/matmul': matmul,
    'reference/kernel_gradient': kernel_gradient,
}
