"""Timing helpers for the benchmark modules (experiments/bench_*.py).

A benchmark is a function (repeats, warmup) -> list of result dicts with at least 'name' and
'seconds' (median per call); optional 'throughput' (text), 'gflops_per_s', 'original' (the original
implementation's figure on the same machine, from the issue tracker / REFERENCES), 'note'.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Optional

import jax

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


# ------------------------------------------------------------------------------------------------
# The issues' aims, checked on every run.


@dataclasses.dataclass(frozen=True)
class Aim:
  """text: how the achieved value reads ('{:.0f} GFLOP/s; aim >= 240'); achieved: (row, every
  row by name) -> the value, None when a row it needs was not run; met when the value is at least
  `target` (at most, with at_most)."""
  text: str
  achieved: Callable[[dict, dict], Optional[float]]
  target: float
  at_most: bool = False
  # Whether the aim depends on the machine: a time or rate against the original's figures (timed
  # on AIMS_MACHINE). Ratios of two rows of the same run (cache vs full pass) do not.
  machine_bound: bool = True


# The CPU the original implementations were timed on and the aims set for (the issues' figures),
# as benchmark.machine_description() names it. The issues name no family, but their OpenBLAS sgemm
# at ~310 GFLOP/s on 2 cores is beyond 2 Zen 4 cores (two 256-bit FMA units each: ~240 at 3.7 GHz)
# and fits family 26 (Zen 5, 512-bit units), whose XLA f32 product reached 353 (rows
# reference/matmul_*); an AVX512-BF16 EPYC of unrecorded family reached 185.
AIMS_MACHINE = 'AMD EPYC (family 26, AVX512-BF16), 2 cores'


def _field(key: str) -> Callable[[dict, dict], Optional[float]]:
  return lambda row, rows: row.get(key)


def _faster_than(original_s: float) -> Callable[[dict, dict], float]:
  return lambda row, rows: original_s / row['seconds']


def _time_ratio(slower: str, faster: str, scale: float = 1.0
                ) -> Callable[[dict, dict], Optional[float]]:
  """scale x seconds(slower) / seconds(faster)."""
  def get(row, rows):
    if slower not in rows or faster not in rows:
      return None
    return scale * rows[slower]['seconds'] / rows[faster]['seconds']
  return get


_SPEEDUP = "{:.2f}x the original's speed; aim "
AIMS: dict[str, Aim] = {
    'coconet/paper/train_step': Aim('{:.0f} GFLOP/s; aim >= 240', _field('gflops_per_s'), 240),
    'coconet/paper/harmonize32': Aim('{:.0f} GFLOP/s; aim >= 240', _field('gflops_per_s'), 240),
    'coconet/small_dilated/train_step': Aim(_SPEEDUP + '2x', _faster_than(0.141), 2),
    'coconet/small_dilated/harmonize32': Aim(_SPEEDUP + '2x', _faster_than(0.75), 2),
    # 64 pieces in the batch's time, against one piece in the single run's time.
    'coconet/small_dilated/harmonize32_batch64': Aim(
        '{:.1f}x the one-piece rate; aim 20x',
        lambda row, rows: (64 * rows['coconet/small_dilated/harmonize32']['seconds']
                           / row['seconds'] if 'coconet/small_dilated/harmonize32' in rows
                           else None), 20, machine_bound=False),
    'musicvae/mel_2bar_small/train_step_b512': Aim(_SPEEDUP + '1.2x', _faster_than(1.95), 1.2),
    'musicvae/mel_2bar_small/train_step_b64': Aim(_SPEEDUP + '2x', _faster_than(0.416), 2),
    'musicvae/mel_2bar_small/train_step_b512_mixed': Aim(_SPEEDUP + '1.2x', _faster_than(1.95),
                                                          1.2),
    'musicvae/mel_2bar_small/train_step_b64_mixed': Aim(_SPEEDUP + '2x', _faster_than(0.416), 2),
    'musicvae/mel_2bar_small/sample64': Aim(_SPEEDUP + '2x', _faster_than(0.076), 2),
    'musicvae/mel_2bar_small/encode64': Aim(_SPEEDUP + '2x', _faster_than(0.104), 2),
    'musicvae/mel_16bar_hier/train_step_b64': Aim('peak {:.1f} GiB; aim: fits in 24 GiB',
                                                  _field('peak_gib'), 24, at_most=True,
                                                  machine_bound=False),
    'pianonet/paper/fast_1_stream': Aim('{:.3f} ms per key state; aim <= 0.14',
                                        _field('ms_per_key_state'), 0.14, at_most=True),
    'pianonet/paper/naive_1_stream': Aim(
        'the queues are {:.0f}x faster; aim 200x',
        lambda row, rows: (row['ms_per_key_state']
                           / rows['pianonet/paper/fast_1_stream']['ms_per_key_state']
                           if 'pianonet/paper/fast_1_stream' in rows else None), 200,
        machine_bound=False),
    'cpword/paper/generate_1_song': Aim('{:.0f} words/s; aim >= 120',
                                        _field('words_per_second'), 120),
    'cpword/paper/generate_8_songs': Aim('{:.0f} words/s in total; aim >= 600',
                                         _field('words_per_second'), 600),
    'cpword/paper/cached_word_at_1024': Aim(
        'the cache is {:.1f}x faster than a full pass; aim 20x',
        _time_ratio('cpword/paper/full_prefix_1024', 'cpword/paper/cached_word_at_1024'), 20,
        machine_bound=False),
}


def aim_status(row: dict, rows: dict[str, dict], machine: str = AIMS_MACHINE) -> str:
  """'<achieved>: met' or ': not met' for a row an issue sets an aim for; '' otherwise. On a
  machine other than AIMS_MACHINE, a machine-bound aim says so: it compares across CPUs."""
  aim = AIMS.get(row['name'])
  if aim is None:
    return ''
  value = aim.achieved(row, rows)
  if value is None:
    return ''
  met = value <= aim.target if aim.at_most else value >= aim.target
  status = f'{aim.text.format(value)}: {"met" if met else "not met"}'
  if aim.machine_bound and machine != AIMS_MACHINE:
    status += f' (across CPUs: the original and the aim are from the {AIMS_MACHINE})'
  return status


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
