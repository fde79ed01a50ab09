"""The original implementations' workloads, timed in the same run as ours (`make bench`).

Runs originals/bench.py (Magenta 2.1.4 on TensorFlow-CPU 2.15.1) with the originals' own
environment, .venv-originals (`make originals`), as a subprocess, and turns its JSON lines into
rows named original/<our row>: original/coconet/paper/train_step times what
coconet/paper/train_step times, with Magenta's code. experiments/benchmark.py runs each group of
these right after our group of the same name and puts each ratio (original seconds / ours, rows of
the same run only) in the table. Without .venv-originals these benchmarks give no rows and the
table says why (unavailable_reason).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from absl import logging

from experiments import bench_coconet
from experiments import bench_musicvae
from experiments import benchmarks as bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINALS_PYTHON = os.path.join(REPO, '.venv-originals', 'bin', 'python')
DRIVER = os.path.join(REPO, 'originals', 'bench.py')
PREFIX = bench.ORIGINAL_PREFIX


@dataclasses.dataclass(frozen=True)
class Group:
  """The driver's workloads that pair with the rows of one of our benchmarks, and the caps that
  benchmark puts on its timed and untimed calls (the original gets the same)."""
  workloads: tuple[str, ...]
  max_repeats: int | None = None
  max_warmup: int | None = None


# Our benchmark's name -> the original's workloads (each named as the row of ours it pairs with).
GROUPS = {
    'coconet/paper': Group(('coconet/paper/train_step', 'coconet/paper/harmonize32'),
                           bench_coconet.PAPER_MAX_REPEATS, bench_coconet.PAPER_MAX_WARMUP),
    'coconet/small_dilated': Group(('coconet/small_dilated/train_step',
                                    'coconet/small_dilated/harmonize32')),
    'musicvae/mel_2bar_small': Group(('musicvae/mel_2bar_small/train_step_b512',
                                      'musicvae/mel_2bar_small/train_step_b64',
                                      'musicvae/mel_2bar_small/sample64',
                                      'musicvae/mel_2bar_small/encode64')),
    'musicvae/mel_16bar_hier': Group(('musicvae/mel_16bar_hier/sample64',),
                                     bench_musicvae.HIER_MAX_REPEATS,
                                     bench_musicvae.HIER_MAX_WARMUP),
}


def unavailable_reason(python: str | None = None) -> str | None:
  """Why the originals cannot run here (None when they can)."""
  python = python or ORIGINALS_PYTHON
  shown = os.path.relpath(python, REPO) if python.startswith(REPO + os.sep) else python
  if not os.path.exists(python):
    return f'the originals were not run: {shown} is missing (make originals creates it)'
  if not os.access(python, os.X_OK):
    return f'the originals were not run: {shown} is not executable'
  return None


def driver_command(workloads, *, repeats: int, warmup: int, small: bool = False,
                   python: str | None = None) -> list[str]:
  command = [python or ORIGINALS_PYTHON, DRIVER, f'--workloads={",".join(workloads)}',
             f'--repeats={repeats}', f'--warmup={warmup}']
  return command + (['--small'] if small else [])


def _driver_environment() -> dict[str, str]:
  """Ours without what is meant for our JAX process: XLA_FLAGS holds flags of our XLA that
  TensorFlow's would not know, and PYTHONPATH would put our packages on its path."""
  return {k: v for k, v in os.environ.items()
          if k not in ('XLA_FLAGS', 'PYTHONPATH') and not k.startswith('JAX_')}


def row_from_record(record: dict) -> dict:
  """One of the driver's JSON records -> our row original/<name>."""
  try:
    name, seconds, times = record['name'], float(record['median_s']), record['times_s']
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f'a record of originals/bench.py without name, median_s or times_s: '
                     f'{record!r}') from e
  versions = record.get('versions') or {}
  threads = (record.get('threads') or {}).get('intra_op')
  where = ', '.join(x for x in (
      f'Magenta {versions["magenta"]}' if 'magenta' in versions else '',
      f'TensorFlow-CPU {versions["tensorflow"]}' if 'tensorflow' in versions else '',
      f'{threads} threads' if threads else '') if x)
  note = '; '.join(x for x in (record.get('what', ''), where,
                               'SMALL MODELS (--small)' if record.get('small') else '') if x)
  return bench.result(PREFIX + name, seconds, times=times, pairs_with=name,
                      shapes=record.get('shapes', {}), versions=versions,
                      small=bool(record.get('small')), note=note)


def parse_driver_output(text: str) -> list[dict]:
  """The rows of the driver's stdout: one JSON object a line; other lines are not its records."""
  rows = []
  for line in text.splitlines():
    line = line.strip()
    if not line.startswith('{'):
      continue
    try:
      record = json.loads(line)
    except ValueError as e:
      raise ValueError(f'originals/bench.py wrote a line that is not JSON: {line[:200]}') from e
    rows.append(row_from_record(record))
  return rows


def run_driver(workloads, *, repeats: int, warmup: int, small: bool = False,
               python: str | None = None) -> list[dict]:
  """The rows of the workloads the driver timed; [] with a logged note when the originals'
  environment is missing. Its log goes to our stderr as it runs; a workload that fails logs why
  and gives no row (the others still do)."""
  reason = unavailable_reason(python)
  if reason:
    logging.warning('%s', reason)
    return []
  command = driver_command(workloads, repeats=repeats, warmup=warmup, small=small, python=python)
  logging.info('Running the originals: %s', ' '.join(command))
  done = subprocess.run(command, cwd=REPO, env=_driver_environment(), stdout=subprocess.PIPE,
                        stderr=sys.stderr, text=True, check=False)
  rows = parse_driver_output(done.stdout)
  if done.returncode:
    timed = {r['pairs_with'] for r in rows}
    logging.error('originals/bench.py exited with status %d; no row for %s (its log above says '
                  'why)', done.returncode, ', '.join(w for w in workloads if w not in timed))
  return rows


def _group_benchmark(group: Group):
  def run(repeats: int, warmup: int) -> list[dict]:
    if group.max_repeats is not None:
      repeats = min(repeats, group.max_repeats)
    if group.max_warmup is not None:
      warmup = min(warmup, group.max_warmup)
    return run_driver(group.workloads, repeats=repeats, warmup=warmup)
  return run


# The benchmarks of this module by name (experiments/benchmark.py lists every module's).
BENCHMARKS = {PREFIX + name: _group_benchmark(group) for name, group in GROUPS.items()}
