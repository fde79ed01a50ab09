"""Timing helpers for the benchmark modules (experiments/bench_*.py).

A benchmark is a function (repeats, warmup) -> list of result dicts with at least 'name' and
'seconds' (median per call); optional 'throughput' (text), 'gflops_per_s', 'note', and 'original':
a figure of the original implementation quoted from elsewhere (its source named in the text; the
table marks it as not from this run). Originals timed in the same run are rows of their own
(original/<name>, experiments/bench_originals.py).
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
# The original implementations' rows (experiments/bench_originals.py) and the issues' aims.

ORIGINAL_PREFIX = 'original/'

# Our rows whose original is the row of another of ours: the original trains in float32 only, so
# our mixed-precision steps pair with its step at the same batch size.
_ORIGINAL_OF = {
    'coconet/small_dilated/train_step_mixed': 'coconet/small_dilated/train_step',
    'musicvae/mel_2bar_small/train_step_b512_mixed': 'musicvae/mel_2bar_small/train_step_b512',
    'musicvae/mel_2bar_small/train_step_b64_mixed': 'musicvae/mel_2bar_small/train_step_b64',
}


def original_name(name: str) -> str:
  """The name of the original's row that pairs with our row `name`."""
  return ORIGINAL_PREFIX + _ORIGINAL_OF.get(name, name)


def same_run_original(row: dict, rows: dict[str, dict]) -> Optional[dict]:
  """The original's row that pairs with `row`, when the same run timed both (rows carry the run
  they come from; a row kept from an earlier run never pairs with this run's)."""
  if row['name'].startswith(ORIGINAL_PREFIX) or row.get('run') is None:
    return None
  original = rows.get(original_name(row['name']))
  if original is None or original.get('run') != row['run']:
    return None
  return original


def ratio_to_original(row: dict, rows: dict[str, dict]) -> Optional[float]:
  """The original's seconds over ours, both from the same run (above 1: ours is faster)."""
  original = same_run_original(row, rows)
  return original['seconds'] / row['seconds'] if original else None


@dataclasses.dataclass(frozen=True)
class Aim:
  """text: how the achieved value reads ('{:.0f} words/s; aim >= 120'); achieved: (row, every
  row by name) -> the value, None when a row it needs was not run; met when the value is at least
  `target` (at most, with at_most)."""
  text: str
  achieved: Callable[[dict, dict], Optional[float]]
  target: float
  at_most: bool = False


def _field(key: str) -> Callable[[dict, dict], Optional[float]]:
  return lambda row, rows: row.get(key)


def _time_ratio(slower: str, faster: str, scale: float = 1.0
                ) -> Callable[[dict, dict], Optional[float]]:
  """scale x seconds(slower) / seconds(faster)."""
  def get(row, rows):
    if slower not in rows or faster not in rows:
      return None
    return scale * rows[slower]['seconds'] / rows[faster]['seconds']
  return get


def versus_original(target: float, precision: str = '') -> Aim:
  """At least `target` times the original's speed, timed in the same run."""
  what = f' ({precision})' if precision else ''
  return Aim("{:.2f}x the original's speed in this run" + what + f'; aim >= {target:g}x',
             ratio_to_original, target)


AIMS: dict[str, Aim] = {
    'coconet/paper/train_step': versus_original(1.25),
    'coconet/paper/harmonize32': versus_original(1.25),
    'coconet/small_dilated/train_step': versus_original(2, 'f32'),
    'coconet/small_dilated/train_step_mixed': versus_original(2, 'mixed precision'),
    # 64 pieces at once: their GFLOP/s against the f32 reference product's in the same run (a
    # one-piece run cannot be multiplied past the machine's peak, so its rate is not the bar).
    'coconet/small_dilated/harmonize32_batch64': Aim(
        "{:.0%} of the f32 reference product's GFLOP/s in this run; aim >= 70%",
        lambda row, rows: (row['gflops_per_s'] / rows['reference/matmul_float32']['gflops_per_s']
                           if 'reference/matmul_float32' in rows and 'gflops_per_s' in row
                           else None), 0.7),
    'musicvae/mel_2bar_small/train_step_b64': versus_original(2, 'f32'),
    'musicvae/mel_2bar_small/train_step_b64_mixed': versus_original(2, 'mixed precision'),
    'musicvae/mel_2bar_small/train_step_b512': versus_original(1, 'f32'),
    'musicvae/mel_2bar_small/train_step_b512_mixed': versus_original(1, 'mixed precision'),
    'musicvae/mel_16bar_hier/train_step_b64': Aim('peak {:.1f} GiB; aim: fits in 24 GiB',
                                                  _field('peak_gib'), 24, at_most=True),
    'pianonet/paper/fast_1_stream': Aim('{:.3f} ms per key state; aim <= 0.14',
                                        _field('ms_per_key_state'), 0.14, at_most=True),
    'pianonet/paper/naive_1_stream': Aim(
        'the queues are {:.0f}x faster; aim 200x',
        lambda row, rows: (row['ms_per_key_state']
                           / rows['pianonet/paper/fast_1_stream']['ms_per_key_state']
                           if 'pianonet/paper/fast_1_stream' in rows else None), 200),
    'cpword/paper/generate_1_song': Aim('{:.0f} words/s; aim >= 120',
                                        _field('words_per_second'), 120),
    'cpword/paper/generate_8_songs': Aim('{:.0f} words/s in total; aim >= 600',
                                         _field('words_per_second'), 600),
    'cpword/paper/cached_word_at_1024': Aim(
        'the cache is {:.1f}x faster than a full pass; aim 20x',
        _time_ratio('cpword/paper/full_prefix_1024', 'cpword/paper/cached_word_at_1024'), 20),
}
# Every other row of ours that the same run also timed with the original code: at least as fast.
AIM_WHEN_PAIRED = versus_original(1)


def aim_status(row: dict, rows: dict[str, dict]) -> str:
  """'<achieved>: met' or ': not met' for a row an aim is set for; '' otherwise, and when a row
  the aim reads (the same run's original, for a ratio to it) is not there."""
  aim = AIMS.get(row['name'])
  if aim is None and same_run_original(row, rows) is not None:
    aim = AIM_WHEN_PAIRED
  if aim is None:
    return ''
  value = aim.achieved(row, rows)
  if value is None:
    return ''
  met = value <= aim.target if aim.at_most else value >= aim.target
  return f'{aim.text.format(value)}: {"met" if met else "not met"}'


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
