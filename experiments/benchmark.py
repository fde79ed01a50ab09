r"""Speed benchmarks: train steps, sampling, preprocessing. Writes bench/results.json and the table
bench/results.md (each row with its aim, met or not).

  python -m experiments.benchmark                     # everything (make bench)
  python -m experiments.benchmark --only=coconet      # benchmarks whose name starts with coconet
  python -m experiments.benchmark --list

Run with nothing else on the machine: on 2 cores a neighbour skews figures by 1.5x or more.
Each figure is the median of --repeats timed calls after --warmup untimed ones (compilation is
never timed). GFLOP/s use XLA's own FLOP count of the compiled computation.
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Callable

from absl import flags
from absl import logging
import jax

from common import files
from common import malloc
from common import precision
from experiments import bench_coconet
from experiments import bench_cpword
from experiments import bench_data
from experiments import bench_musicvae
from experiments import bench_pianonet
from experiments import bench_reference
from experiments import bench_scaling
from experiments import benchmarks as registry
from experiments import cli

# Every benchmark module, in the order their rows are run.
MODULES = (bench_reference, bench_coconet, bench_musicvae, bench_pianonet, bench_cpword,
           bench_data, bench_scaling)

_ONLY = flags.DEFINE_list('only', [], 'Run only benchmarks whose name starts with one of these.')
_LIST = flags.DEFINE_bool('list', False, 'List the benchmarks and exit.')
_OUT = flags.DEFINE_string('out', 'bench', 'Folder for results.json and results.md.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per benchmark (median reported).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls first (compilation, caches).')


# The widest vector extension a CPU has, as the machine line names it: an AVX2-only and an
# AVX512-BF16 EPYC VM both call themselves "AMD EPYC", yet the second's products ran ~1.6x (f32)
# and ~4.6x (bf16) as fast (rows reference/matmul_*), so their figures must not read as one's.
_VECTOR_EXTENSIONS = (('amx_bf16', 'AMX'), ('avx512_bf16', 'AVX512-BF16'), ('avx512f', 'AVX-512'),
                      ('avx2', 'AVX2'))
# The CPU family too: two AVX512-BF16 EPYC VMs differed ~1.9x in f32 products (185 against
# 353 GFLOP/s); the faster one was family 26 (Zen 5, full-width AVX-512 units).
_CPUINFO = '/proc/cpuinfo'


def _cpuinfo_fields(*names: str) -> dict[str, str]:
  """The first value of each named /proc/cpuinfo field that the file has."""
  found = {}
  try:
    with open(_CPUINFO) as f:
      for line in f:
        name, _, value = line.partition(':')
        if name.strip() in names and name.strip() not in found:
          found[name.strip()] = value.strip()
  except OSError:
    pass
  return found


def machine_description() -> str:
  """CPU model, family, widest vector extension and core count (or the accelerator), as a README
  table names the machine: 'AMD EPYC (family 26, AVX512-BF16), 2 cores'."""
  devices = jax.devices()
  if devices[0].platform != 'cpu':
    return f'{len(devices)} x {devices[0].device_kind}'
  info = _cpuinfo_fields('model name', 'cpu family')
  model = info.get('model name') or platform.processor() or 'unknown CPU'
  flags_here = precision.cpu_flags()
  details = [f'family {info["cpu family"]}'] if info.get('cpu family') else []
  details += [name for flag, name in _VECTOR_EXTENSIONS if flag in flags_here][:1]
  if details:
    model = f'{model} ({", ".join(details)})'
  return f'{model}, {os.cpu_count()} cores'


def _time(seconds: float) -> str:
  return f'{seconds:.2f} s' if seconds >= 1 else f'{seconds * 1e3:.1f} ms'


def _markdown(results: list[dict], machine: str, *, notes: bool = True) -> str:
  """The results table; with the issues' aims (met or not) and, when `notes`, the notes."""
  dates = sorted({r.get('date', '?') for r in results})
  when = dates[0] if len(dates) == 1 else f'{dates[0]} to {dates[-1]}'
  lines = [f'Machine: {machine}; jax {jax.__version__}; measured {when}.', '',
           f'| benchmark | time | throughput | GFLOP/s | original ({registry.AIMS_MACHINE}) | aim |'
           + (' note |' if notes else ''),
           '|---|---|---|---|---|---|' + ('---|' if notes else '')]
  for r in results:
    gflops = f'{r["gflops_per_s"]:.0f}' if r.get('gflops_per_s') else ''
    line = (f'| {r["name"]} | {_time(r["seconds"])} | {r.get("throughput", "")} | {gflops} | '
            f'{r.get("original", "")} | {r.get("aim", "")} |')
    lines.append(line + (f' {r.get("note", "")} |' if notes else ''))
  return '\n'.join(lines) + '\n'


def all_benchmarks() -> dict[str, Callable]:
  """Every benchmark by name, from the MODULES' BENCHMARKS mappings."""
  benchmarks = {}
  for module in MODULES:
    benchmarks.update(module.BENCHMARKS)
  return benchmarks


def _merge_with_earlier(path: str, results: list[dict], machine: str) -> list[dict]:
  """This run's results plus the earlier file's results for benchmarks not rerun (same machine
  and jax only), so `--only=x` updates part of the table instead of dropping the rest; sorted by
  name either way, so tables from full and partial runs list rows alike."""
  try:
    with open(path) as f:
      earlier = json.load(f)
  except (OSError, ValueError):
    return sorted(results, key=lambda r: r['name'])
  if earlier.get('machine') != machine or earlier.get('jax') != jax.__version__:
    return sorted(results, key=lambda r: r['name'])
  fresh = {r['name'] for r in results}
  kept = [r for r in earlier.get('results', []) if r.get('name') not in fresh]
  return sorted(kept + results, key=lambda r: r['name'])


def main(argv: list[str]) -> None:
  del argv
  benchmarks = all_benchmarks()
  if _LIST.value:
    print('\n'.join(benchmarks))
    return
  selected = [n for n in benchmarks if not _ONLY.value or any(n.startswith(p) for p in _ONLY.value)]
  # MAESTRO parsing runs last: in one full run the MusicVAE benchmarks right after it were ~1.4x
  # slower than on their own (worker processes and a full page cache), so it goes after them.
  selected.sort(key=lambda n: n.startswith('data/'))
  machine = machine_description()
  logging.info('Benchmarking %d item(s) on %s', len(selected), machine)
  results = []
  for name in selected:
    # Each benchmark starts with the memory the earlier ones freed given back, closer to a process
    # of its own: kept, the next model's buffers land in the holes of the last one's (the CP-word
    # cached step ran ~25% slower after the Coconet 'paper' rows; see common/malloc.py).
    malloc.release_free_memory()
    start = time.perf_counter()
    for result in benchmarks[name](repeats=_REPEATS.value, warmup=_WARMUP.value):
      result['date'] = time.strftime('%Y-%m-%d')
      results.append(result)
      print(f'{result["name"]}: {result["seconds"] * 1e3:.2f} ms  {result.get("throughput", "")}'
            f'  {result.get("gflops_per_s") or 0:.0f} GFLOP/s', flush=True)
    logging.info('%s done in %.0f s', name, time.perf_counter() - start)
  os.makedirs(_OUT.value, exist_ok=True)
  results = _merge_with_earlier(os.path.join(_OUT.value, 'results.json'), results, machine)
  rows = {r['name']: r for r in results}
  for r in results:
    r['aim'] = registry.aim_status(r, rows, machine)
  payload = {'machine': machine, 'jax': jax.__version__, 'results': results}
  for filename, text in (('results.json', json.dumps(payload, indent=2)),
                         ('results.md', _markdown(results, machine))):
    files.atomic_write(os.path.join(_OUT.value, filename), lambda f, t=text: f.write(t), mode='w')
  print(_markdown(results, machine))
  print(f'Wrote {_OUT.value}/results.json and results.md')


if __name__ == '__main__':
  cli.run(main)
