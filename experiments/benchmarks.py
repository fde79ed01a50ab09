"""The benchmark registry and timing helpers used by experiments/benchmark.py.

A benchmark is a function (repeats, warmup) -> list of result dicts with at least 'name' and
'seconds' (median per call); optional 'throughput' (text), 'gflops_per_s', 'original' (the original
implementation's figure on the same machine, from the issue tracker / REFERENCES), 'note'.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax

_REGISTRY: dict[str, Callable[..., list[dict]]] = {}


def register(name: str) -> Callable:
  def wrap(fn):
    _REGISTRY[name] = fn
    return fn
  return wrap


def all_benchmarks() -> dict[str, Callable[..., list[dict]]]:
  # Importing the model benchmark modules fills the registry.
  # pylint: disable=g-import-not-at-top,unused-import
  from experiments import bench_coconet  # noqa: F401
  from experiments import bench_cpword  # noqa: F401
  from experiments import bench_data  # noqa: F401
  from experiments import bench_musicvae  # noqa: F401
  from experiments import bench_pianonet  # noqa: F401
  return dict(_REGISTRY)


def block(tree: Any) -> Any:
  return jax.block_until_ready(tree)


def median_seconds(call: Callable[[], Any], *, repeats: int, warmup: int) -> float:
  """Median wall time of `call()` (which must block until its result is ready)."""
  for _ in range(warmup):
    call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def compiled_flops(jitted: Callable, *args, **kwargs) -> float | None:
  """XLA's FLOP count for one call of a jitted function (None when XLA does not say)."""
  try:
    analysis = jitted.lower(*args, **kwargs).compile().cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def result(name: str, seconds: float, *, flops: float | None = None, **extra) -> dict:
  out = {'name': name, 'seconds': seconds, **extra}
  if flops:
    out['gflops_per_s'] = flops / seconds / 1e9
  return out


def time_train_step(task: Any, config: Any, host_batch: dict, *, repeats: int, warmup: int,
                    count_flops: bool = True) -> tuple[float, float | None]:
  """Median seconds of the training loop's own jitted train step on one fixed batch (one device),
  and XLA's FLOP count of it (None when count_flops is False or XLA does not say)."""
  # pylint: disable=g-import-not-at-top
  from common import sharding
  from common import training
  mesh = sharding.make_mesh(1)
  setup = training.setup_training(task, config, mesh)
  batch = sharding.global_batch(host_batch, mesh)
  flops = compiled_flops(setup.train_step, setup.state, batch) if count_flops else None
  holder = {'state': setup.state}

  def call():
    holder['state'], metrics = setup.train_step(holder['state'], batch)
    block(metrics)

  return median_seconds(call, repeats=repeats, warmup=warmup), flops
