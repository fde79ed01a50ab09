"""Rows for accelerators, measured on this machine: each paper config's training input rate
(batches per second from its real data pipeline) against the rate an H100 would need, and the
compiled train step's memory at the paper's batch from XLA's own memory analysis, with the
largest batch that fits in 80 GB.

  python -m experiments.benchmark --only=input,memory

The needed rate assumes the step's FLOPs (XLA's count of the compiled step; MusicVAE's hand count)
run at NEEDED_FRACTION of an H100's dense bf16 peak. The memory is that of the CPU compilation
(buffer sizes of arguments, outputs and temporaries, aliased donations counted once): a GPU
compilation fuses differently, so take it as a plan, not a measurement of a GPU.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from experiments import batches
from experiments import benchmarks as bench

MODELS = ('coconet', 'musicvae', 'pianonet', 'cpword')
H100_BF16_PEAK = 989e12
NEEDED_FRACTION = 0.4
DEVICE_BYTES = 80e9
# Pieces loaded for the input rows (None: all): batches per second do not depend on how many
# songs the windows come from, and encoding all of MAESTRO or Pop1K7 takes far longer than the row.
INPUT_PIECES = {'coconet': None, 'musicvae': None, 'pianonet': 40, 'cpword': 200}
INPUT_BATCHES = 50


def paper_config(model: str):
  """The model's 'paper' config, as it ships (f32)."""
  return batches.model_config(model, 'paper')


def _setup(config):
  from common import sharding  # pylint: disable=g-import-not-at-top
  from common import training  # pylint: disable=g-import-not-at-top
  from experiments import registry  # pylint: disable=g-import-not-at-top
  return training.setup_training(registry.get_task(config), config, sharding.make_mesh(1))


def _abstract_batch(config, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
          for k, v in batches.synthetic_batch(config, batch_size=batch_size).items()}


def step_flops(config, setup=None) -> float | None:
  """FLOPs of one train step of `config` at its batch size."""
  if config.task == 'musicvae':
    from experiments import bench_musicvae  # pylint: disable=g-import-not-at-top
    return bench_musicvae.analytic_flops(config, config.batch_size, encoder=True, decoder=True,
                                         train=True)
  setup = setup or _setup(config)
  return bench.compiled_flops(setup.train_step, setup.state,
                              _abstract_batch(config, config.batch_size))


def compiled_bytes(setup, config, batch_size: int) -> int:
  """Bytes the compiled train step needs at `batch_size`: arguments + outputs - donated aliases
  + temporaries, by XLA's memory analysis."""
  analysis = setup.train_step.lower(setup.state, _abstract_batch(config, batch_size)
                                    ).compile().memory_analysis()
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)


def memory_plan(config) -> dict[str, Any]:
  """Memory at the paper batch and at twice it; the per-example slope; the largest batch within
  DEVICE_BYTES (a linear fit of the two)."""
  setup = _setup(config)
  batch = int(config.batch_size)
  start = time.perf_counter()
  at_batch = compiled_bytes(setup, config, batch)
  at_double = compiled_bytes(setup, config, 2 * batch)
  seconds = (time.perf_counter() - start) / 2
  per_example = max((at_double - at_batch) / batch, 1.0)
  fixed = at_batch - per_example * batch
  return dict(batch_size=batch, gib_at_batch=at_batch / 2**30, gib_at_double=at_double / 2**30,
              mib_per_example=per_example / 2**20, fixed_gib=fixed / 2**30,
              largest_batch_80gb=int((DEVICE_BYTES - fixed) // per_example),
              compile_seconds=seconds)


def memory(repeats: int, warmup: int) -> list[dict]:
  """memory/<model>/paper rows (repeats and warmup do not apply: nothing runs)."""
  del repeats, warmup
  rows = []
  for model in MODELS:
    plan = memory_plan(paper_config(model))
    rows.append(bench.result(
        f'memory/{model}/paper', plan['compile_seconds'], **plan,
        throughput=f'{plan["gib_at_batch"]:.2f} GiB at batch {plan["batch_size"]}',
        note=f'{plan["mib_per_example"]:.1f} MiB per example; the largest batch in 80 GB: '
             f'{plan["largest_batch_80gb"]:,} (compile time in the time column)'))
  return rows


def input_rate(config, num_batches: int = INPUT_BATCHES) -> tuple[float, float]:
  """(seconds to the first batch, batches per second after it) of the config's training input."""
  from experiments import registry  # pylint: disable=g-import-not-at-top
  task = registry.get_task(config)
  start = time.perf_counter()
  iterator = task.train_iterator(config, 0, 1)
  next(iterator)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return first, num_batches / (time.perf_counter() - start)


def input_rows(models=MODELS, num_batches: int = INPUT_BATCHES) -> list[dict]:
  rows = []
  for model in models:
    config = paper_config(model)
    if INPUT_PIECES[model] is not None:
      config.max_pieces = INPUT_PIECES[model]
    first, rate = input_rate(config, num_batches)
    flops = step_flops(config)
    needed = NEEDED_FRACTION * H100_BF16_PEAK / flops if flops else None
    verdict = ('' if needed is None else
               f'; an H100 at {NEEDED_FRACTION:.0%} of its bf16 peak needs {needed:,.1f}/s '
               f'({rate / needed:.2f}x of that here)')
    rows.append(bench.result(
        f'input/{model}/paper', 1.0 / rate, batches_per_s=rate, needed_batches_per_s=needed,
        first_batch_s=first, flops_per_step=flops, max_pieces=config.get('max_pieces'),
        throughput=f'{rate:,.1f} batches/s (batch {config.batch_size})',
        note=f'first batch after {first:.1f} s (loading){verdict}'))
  return rows


def inputs(repeats: int, warmup: int) -> list[dict]:
  """input/<model>/paper rows (one pass of INPUT_BATCHES batches each)."""
  del repeats, warmup
  return input_rows()


BENCHMARKS = {
    'input': inputs,
    'memory': memory,
}
