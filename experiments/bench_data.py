"""Preprocessing throughput: parsing all of MAESTRO v2 cold (empty cache) and warm (cached)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from absl import logging

from common import datasets
from experiments import benchmarks as bench


def maestro_parse(repeats: int, warmup: int) -> list[dict]:
  del repeats, warmup  # a cold parse takes minutes: timed once
  root = datasets.default_data_dir('maestro')
  if not os.path.isdir(root):
    logging.warning('data/maestro_parse skipped: no MAESTRO at %s (set $MUSICGEN_DATA_DIR)', root)
    return []
  cache = tempfile.mkdtemp(prefix='maestro_cache_')
  results = []
  try:
    for label in ('cold', 'warm'):
      start = time.perf_counter()
      dataset = datasets.get_dataset('maestro', split='all', cache_dir=cache)
      seconds = time.perf_counter() - start
      files = len(dataset.ids) + len(dataset.skipped)
      results.append(bench.result(
          f'data/maestro_parse_{label}', seconds, throughput=f'{files / seconds:.1f} files/s',
          note=f'{len(dataset.ids)} read, {len(dataset.skipped)} skipped, {os.cpu_count()} workers'))
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  return results


# The benchmarks of this module by name (experiments/benchmark.py lists every module's).
BENCHMARKS = {
    'data/maestro_parse': maestro_parse,
}
