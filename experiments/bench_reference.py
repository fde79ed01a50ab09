"""What this machine's matrix products reach: the ceiling to read the models' GFLOP/s against.

One f32 and one bf16 (f32 accumulation) product of the shape a 'paper' Coconet layer would be as
a matrix product (batch 20 x 64 steps x 46 pitches = 58,880 rows, 3 x 3 x 128 = 1,152 inputs,
128 outputs), through XLA as every model uses it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments import benchmarks as bench

_SHAPE = (58_880, 1_152, 128)


def _matmul_result(dtype, repeats: int, warmup: int) -> dict:
  m, k, n = _SHAPE
  a = jax.random.normal(jax.random.key(0), (m, k)).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (k, n)).astype(dtype)
  product = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  seconds = bench.median_seconds(lambda: bench.block(product(a, b)), repeats=repeats,
                                 warmup=warmup)
  name = jnp.dtype(dtype).name
  return bench.result(f'reference/matmul_{name}', seconds, flops=2.0 * m * k * n,
                      note=f'{m} x {k} times {k} x {n} in {name}, f32 accumulation (XLA dot)')


@bench.register('reference/matmul')
def matmul(repeats: int, warmup: int) -> list[dict]:
  return [_matmul_result(jnp.float32, repeats, warmup), _matmul_result(jnp.bfloat16, repeats, warmup)]
