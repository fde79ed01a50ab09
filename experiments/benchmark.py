r"""Speed benchmarks: train steps, sampling, preprocessing, and the original implementations'
workloads beside ours in the same run. Writes bench/results.json and the table bench/results.md
(each row with its aim, met or not; paired rows with the original's time and the ratio).

  python -m experiments.benchmark                     # everything (make bench)
  python -m experiments.benchmark --only=coconet      # benchmarks whose name starts with coconet
                                                      # (and the originals' of those)
  python -m experiments.benchmark --list

Run with nothing else on the machine: on 2 cores a neighbour skews figures by 1.5x or more.
Each figure is the median of --repeats timed calls after --warmup untimed ones (compilation is
never timed). GFLOP/s use XLA's own FLOP count of the compiled computation.

With the originals' environment (.venv-originals, `make originals`), every group of ours that the
original code can run too (experiments/bench_originals.py) is followed by the original's group,
rows original/<our row>; each ratio (the original's seconds / ours) pairs rows of one run only.
The reference matrix products run first and again last: the machine line gives both, so a drift
of the machine's speed during the run shows.
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
from experiments import bench_originals
from experiments import bench_pianonet
from experiments import bench_reference
from experiments import bench_scaling
from experiments import benchmarks as registry
from experiments import cli

# Every benchmark module, in the order their rows are run (the originals' groups each right after
# ours of the same name, see run_order).
MODULES = (bench_reference, bench_coconet, bench_musicvae, bench_pianonet, bench_cpword,
           bench_data, bench_scaling, bench_originals)

# The reference products run first and, under this name, again last in every run (run_order).
REFERENCE = 'reference/matmul'
REFERENCE_END = 'reference/matmul_end'
ORIGINAL = registry.ORIGINAL_PREFIX

_ONLY = flags.DEFINE_list('only', [], 'Run only benchmarks whose name starts with one of these '
                          '(the originals\' of those too; the reference products always).')
_LIST = flags.DEFINE_bool('list', False, 'List the benchmarks and exit.')
_OUT = flags.DEFINE_string('out', 'bench', 'Folder for results.json and results.md.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per benchmark (median reported).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls first (compilation, caches).')


# The widest vector extension a CPU has, as the machine line names it: VMs that all call
# themselves "AMD EPYC" differed several-fold in their products' speed (docs/performance.md), so
# the line names the family, the model and the widest extension, not the brand alone.
_VECTOR_EXTENSIONS = (('amx_bf16', 'AMX'), ('avx512_bf16', 'AVX512-BF16'), ('avx512f', 'AVX-512'),
                      ('avx2', 'AVX2'))
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
  """CPU model name, family, model, widest vector extension and core count (or the
  accelerator): 'AMD EPYC 9R14 (family 25, model 17, AVX512-BF16), 2 cores'."""
  devices = jax.devices()
  if devices[0].platform != 'cpu':
    return f'{len(devices)} x {devices[0].device_kind}'
  info = _cpuinfo_fields('model name', 'cpu family', 'model')
  name = info.get('model name') or platform.processor() or 'unknown CPU'
  flags_here = precision.cpu_flags()
  details = [f'{field} {info[key]}' for key, field in (('cpu family', 'family'), ('model', 'model'))
             if info.get(key)]
  details += [label for flag, label in _VECTOR_EXTENSIONS if flag in flags_here][:1]
  if details:
    name = f'{name} ({", ".join(details)})'
  return f'{name}, {os.cpu_count()} cores'


def products_description(results: list[dict], run: str | None) -> str:
  """The reference products of run `run`, at its start and its end: 'f32 product 310 -> 305
  GFLOP/s, bf16 560 -> 540 during the run'."""
  rows = {r['name']: r for r in results if r.get('run') == run and r.get('gflops_per_s')}
  parts = []
  for dtype, label in (('float32', 'f32 product'), ('bfloat16', 'bf16')):
    start = rows.get(f'reference/matmul_{dtype}')
    end = rows.get(f'reference/matmul_{dtype}{bench_reference.END_SUFFIX}')
    values = [f'{r["gflops_per_s"]:.0f}' for r in (start, end) if r]
    if values:
      parts.append(f'{label} {" -> ".join(values)}' + (' GFLOP/s' if not parts else ''))
  if not parts:
    return 'reference products not measured in this run'
  both = all(f'reference/matmul_{d}{bench_reference.END_SUFFIX}' in rows
             for d in ('float32', 'bfloat16') if f'reference/matmul_{d}' in rows)
  return ', '.join(parts) + (' during the run' if both else ' (start of the run only)')


def _time(seconds: float) -> str:
  return f'{seconds:.2f} s' if seconds >= 1 else f'{seconds * 1e3:.1f} ms'


def table_order(name: str) -> tuple[str, bool]:
  """Rows sorted by name, each original's row right under ours of the same name."""
  if name.startswith(ORIGINAL):
    return name[len(ORIGINAL):], True
  return name, False


def _original_cells(row: dict, rows: dict[str, dict]) -> tuple[str, str]:
  """The 'original (same run)' and 'ratio' cells of a row."""
  original = registry.same_run_original(row, rows)
  if original is not None:
    return _time(original['seconds']), f'{original["seconds"] / row["seconds"]:.2f}x'
  if row.get('original'):
    return f'{row["original"]} (quoted, not from this run)', ''
  return '', ''


def _originals_versions(results: list[dict]) -> str:
  for r in results:
    versions = r.get('versions') or {}
    if r['name'].startswith(ORIGINAL) and 'magenta' in versions:
      return (f'Magenta {versions["magenta"]} on TensorFlow-CPU {versions.get("tensorflow", "?")}'
              ', originals/bench.py')
  return 'originals/bench.py'


def _markdown(results: list[dict], machine: str, products: str, *, notes: bool = True,
              remarks: tuple[str, ...] = ()) -> str:
  """The results table: each row's aim (met or not), the same run's original and the ratio, and,
  when `notes`, the notes; `remarks` go under the table."""
  dates = sorted({r.get('date', '?') for r in results})
  when = dates[0] if len(dates) == 1 else f'{dates[0]} to {dates[-1]}'
  runs = {r.get('run') for r in results}
  if len(runs) > 1:
    when += f' (rows of {len(runs)} runs; a ratio pairs rows of one run only)'
  rows = {r['name']: r for r in results}
  lines = [f'Machine: {machine}; {products}; jax {jax.__version__}; measured {when}.', '',
           "'original (same run)': the original implementation's median time in the same run "
           f'({_originals_versions(results)}); ratio: its time / ours (above 1: ours is faster). '
           "A figure marked 'quoted' was not measured here; its text says where it comes from.",
           '',
           '| benchmark | time | throughput | GFLOP/s | original (same run) | ratio | aim |'
           + (' note |' if notes else ''),
           '|---|---|---|---|---|---|---|' + ('---|' if notes else '')]
  for r in sorted(results, key=lambda r: table_order(r['name'])):
    gflops = f'{r["gflops_per_s"]:.0f}' if r.get('gflops_per_s') else ''
    original, ratio = _original_cells(r, rows)
    line = (f'| {r["name"]} | {_time(r["seconds"])} | {r.get("throughput", "")} | {gflops} | '
            f'{original} | {ratio} | {r.get("aim", "")} |')
    lines.append(line + (f' {r.get("note", "")} |' if notes else ''))
  if remarks:
    lines += [''] + [f'Note: {remark}' for remark in remarks]
  return '\n'.join(lines) + '\n'


def all_benchmarks() -> dict[str, Callable]:
  """Every benchmark by name, from the MODULES' BENCHMARKS mappings."""
  benchmarks = {}
  for module in MODULES:
    benchmarks.update(module.BENCHMARKS)
  return benchmarks


def is_selected(name: str, prefixes: list[str]) -> bool:
  """Whether --only selects benchmark `name`: its name starts with a prefix, or it is the
  original's group of one of ours that does."""
  if not prefixes:
    return True
  names = [name] + ([name[len(ORIGINAL):]] if name.startswith(ORIGINAL) else [])
  return any(n.startswith(p) for n in names for p in prefixes)


def run_order(names: list[str], selected: list[str]) -> list[str]:
  """The selected benchmarks in the order they run: the reference products first, each original
  group right after ours of the same name (the two sides see the machine at the same time),
  MAESTRO parsing late (in one full run the MusicVAE rows right after it were ~1.4x slower than
  on their own: worker processes and a full page cache), the reference products again last."""
  chosen = set(selected)
  order = [REFERENCE]
  for name in names:
    if name.startswith(ORIGINAL) or name == REFERENCE:
      continue
    order += [n for n in (name, ORIGINAL + name) if n in chosen]
  order += [n for n in names if n.startswith(ORIGINAL) and n in chosen and n not in order]
  order.sort(key=lambda n: n.startswith('data/'))
  return order + [REFERENCE_END]


def _merge_with_earlier(path: str, results: list[dict], machine: str) -> list[dict]:
  """This run's results plus the earlier file's results for benchmarks not rerun (same machine
  and jax only), so `--only=x` updates part of the table instead of dropping the rest; in table
  order either way. A kept row keeps its run: it pairs only with rows of that run."""
  def ordered(rows):
    return sorted(rows, key=lambda r: table_order(r['name']))
  try:
    with open(path) as f:
      earlier = json.load(f)
  except (OSError, ValueError):
    return ordered(results)
  if earlier.get('machine') != machine or earlier.get('jax') != jax.__version__:
    return ordered(results)
  fresh = {r['name'] for r in results}
  kept = [r for r in earlier.get('results', []) if r.get('name') not in fresh]
  return ordered(kept + results)


def _remarks(order: list[str], results: list[dict], run: str) -> list[str]:
  """Why original rows the run selected are missing: no environment, or a failed workload."""
  groups = [n[len(ORIGINAL):] for n in order if n.startswith(ORIGINAL)]
  if not groups:
    return []
  reason = bench_originals.unavailable_reason()
  if reason:
    return [f'{reason}; the original and ratio columns are empty.']
  timed = {r['name'] for r in results if r.get('run') == run}
  missing = [w for g in groups for w in bench_originals.GROUPS[g].workloads
             if ORIGINAL + w not in timed]
  if missing:
    return [f'no original row for {", ".join(missing)}: originals/bench.py failed there '
            '(the run\'s log says why).']
  return []


def main(argv: list[str]) -> None:
  del argv
  benchmarks = all_benchmarks()
  if _LIST.value:
    print('\n'.join(benchmarks))
    return
  names = list(benchmarks)
  order = run_order(names, [n for n in names if is_selected(n, _ONLY.value)])
  benchmarks[REFERENCE_END] = bench_reference.matmul_end
  machine = machine_description()
  run = time.strftime('%Y-%m-%d %H:%M:%S')
  logging.info('Benchmarking %d item(s) on %s', len(order), machine)
  results = []
  for name in order:
    # Each benchmark starts with the memory the earlier ones freed given back, closer to a process
    # of its own: kept, the next model's buffers land in the holes of the last one's (the CP-word
    # cached step ran ~25% slower after the Coconet 'paper' rows; see common/malloc.py).
    malloc.release_free_memory()
    start = time.perf_counter()
    for result in benchmarks[name](repeats=_REPEATS.value, warmup=_WARMUP.value):
      result['date'] = time.strftime('%Y-%m-%d')
      result['run'] = run
      results.append(result)
      print(f'{result["name"]}: {result["seconds"] * 1e3:.2f} ms  {result.get("throughput", "")}'
            f'  {result.get("gflops_per_s") or 0:.0f} GFLOP/s', flush=True)
    logging.info('%s done in %.0f s', name, time.perf_counter() - start)
  remarks = _remarks(order, results, run)
  products = products_description(results, run)
  os.makedirs(_OUT.value, exist_ok=True)
  results = _merge_with_earlier(os.path.join(_OUT.value, 'results.json'), results, machine)
  rows = {r['name']: r for r in results}
  for r in results:
    r['aim'] = registry.aim_status(r, rows)
  payload = {'machine': machine, 'products': products, 'jax': jax.__version__, 'run': run,
             'remarks': remarks, 'results': results}
  table = _markdown(results, machine, products, remarks=tuple(remarks))
  for filename, text in (('results.json', json.dumps(payload, indent=2)), ('results.md', table)):
    files.atomic_write(os.path.join(_OUT.value, filename), lambda f, t=text: f.write(t), mode='w')
  print(table)
  print(f'Wrote {_OUT.value}/results.json and results.md')


if __name__ == '__main__':
  cli.run(main)
