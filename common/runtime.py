"""Process set-up for programs that run the models: one explicit call, `configure_process()`.

Importing any module of this codebase changes nothing global. The entry points in experiments/
(and a user's own script, if it wants the same speed) call `configure_process()` once, before the
first jax computation. It does three things on the CPU:

  XLA flags (added to $XLA_FLAGS unless the user already set that flag):
    --xla_cpu_copy_insertion_use_region_analysis=true
        lets a lax.scan / while loop update a carried buffer in place instead of copying it every
        iteration: Fast-WaveNet queues, KV caches and Gibbs states are such buffers.
    --xla_cpu_experimental_ynn_fusion_type=-individual_convolution
        keeps convolutions on XLA's own kernels, whose kernel-gradient convolution is several
        times faster than YNNPACK's on Coconet's shapes (docs/performance.md).
  glibc malloc: keeps freed memory while the process is small, so XLA:CPU's fresh temporary
    buffers are not page-faulted in again at every step; a guard thread gives glibc its
    defaults back once the resident size passes a third of memory (common/malloc.py).
  Inline CPU dispatch: single-device CPU computations run on the calling thread, whose heap
    (glibc's main arena) is the one the malloc tuning keeps; left alone when the user set
    $JAX_CPU_ENABLE_ASYNC_DISPATCH.

$MUSICGEN_PROCESS_TUNING=0 turns all of it off (configure_process then does nothing).
"""

from __future__ import annotations

import os

SWITCH = 'MUSICGEN_PROCESS_TUNING'
_configured = False

XLA_CPU_FLAGS = (
    ('--xla_cpu_copy_insertion_use_region_analysis', 'true'),
    ('--xla_cpu_experimental_ynn_fusion_type', '-individual_convolution'),
)


def tuning_enabled() -> bool:
  """False when the user turned the process tuning off with $MUSICGEN_PROCESS_TUNING=0."""
  return os.environ.get(SWITCH, '1').strip().lower() not in ('0', 'false', 'no', 'off')


def add_xla_cpu_flags() -> str:
  """Adds XLA_CPU_FLAGS to $XLA_FLAGS (a flag the user set keeps its value); returns the result.

  Takes effect only before jax creates its CPU client, i.e. before the first computation."""
  flags = os.environ.get('XLA_FLAGS', '')
  for name, value in XLA_CPU_FLAGS:
    if name not in flags:
      flags = f'{flags} {name}={value}'.strip()
  os.environ['XLA_FLAGS'] = flags
  return flags


def run_cpu_computations_inline() -> None:
  """Makes jax run single-device CPU computations on the calling thread (unless the user chose
  with $JAX_CPU_ENABLE_ASYNC_DISPATCH)."""
  if 'JAX_CPU_ENABLE_ASYNC_DISPATCH' in os.environ:
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_enable_async_dispatch', False)


def configure_process() -> bool:
  """Applies the XLA flags, the malloc tuning and inline CPU dispatch (see the module docstring).

  Call it once, early, before the first jax computation; calling it again is harmless. Returns
  False when $MUSICGEN_PROCESS_TUNING=0 turned it off."""
  global _configured
  if not tuning_enabled():
    return False
  if _configured:
    return True
  from common import malloc  # pylint: disable=g-import-not-at-top
  add_xla_cpu_flags()
  if malloc.keep_freed_memory():
    run_cpu_computations_inline()
  _configured = True
  return True
