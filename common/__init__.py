"""Code that two or more of the models share.

Importing this package tunes XLA:CPU once, before jax creates its CPU client (a flag the user
already put in XLA_FLAGS is left alone):

  --xla_cpu_copy_insertion_use_region_analysis=true
      Without it XLA:CPU copied every loop-carried buffer once or twice per iteration of a
      lax.scan/while loop, even when the body only updates one slot in place: a Fast-WaveNet step
      over PianoNet's 64-stream queues (0.3 GB) took 61 ms instead of well under 1 ms, and a KV
      cache or a Gibbs-sampling state pays the same. With region analysis the loop updates its
      buffers in place (measured 16 ms -> 0.11 ms per step on a (64, 2048, 96) queue).
  --xla_cpu_experimental_ynn_fusion_type=-individual_convolution
      XLA hands convolutions to the YNNPACK library by default, whose kernel-gradient convolution
      ran 3.5x slower than XLA's own (Eigen) one on Coconet's shapes (1.14 s vs 0.32 s for a 3x3,
      128-channel layer at batch 20 x 64 x 46 on the 2-core CI machine); forward convolutions ran
      at the same speed either way.

It also makes glibc's malloc keep freed memory while the process is small (common/malloc.py):
XLA:CPU's fresh temporary buffers were page-faulted in again at every step, a third of a small
Coconet train step's time. For that memory to be the main thread's, jax runs single-device CPU
computations on the calling thread (jax_cpu_enable_async_dispatch=False, unless
$JAX_CPU_ENABLE_ASYNC_DISPATCH says otherwise). $MUSICGEN_MALLOC_TUNING=0 turns both off. In
runs at the same time with and without, CP-word generation and PianoNet's streams were no slower
with them (README, Benchmarks).
"""

import os

from common import malloc as _malloc

_XLA_CPU_FLAGS = (
    ('--xla_cpu_copy_insertion_use_region_analysis', 'true'),
    ('--xla_cpu_experimental_ynn_fusion_type', '-individual_convolution'),
)


def _tune_xla_cpu() -> None:
  flags = os.environ.get('XLA_FLAGS', '')
  for name, value in _XLA_CPU_FLAGS:
    if name not in flags:
      flags = f'{flags} {name}={value}'.strip()
  os.environ['XLA_FLAGS'] = flags


def _run_cpu_computations_inline() -> None:
  if 'JAX_CPU_ENABLE_ASYNC_DISPATCH' in os.environ:
    return  # the user's choice
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_enable_async_dispatch', False)


_tune_xla_cpu()
if _malloc.keep_freed_memory():
  _run_cpu_computations_inline()
