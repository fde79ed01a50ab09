"""experiments/benchmark.py: earlier results of benchmarks a run did not repeat are kept, the
issues' aims are read from the rows, ratios to the originals pair rows of one run, the machine
line names the CPU and the products' drift, and every module's benchmarks are listed;
experiments/bench_originals.py reads originals/bench.py's JSON lines and skips without the
originals' environment."""

import importlib.util
import json
import os
import stat

import jax
import numpy as np
import pytest

from common.errors import UserError
from experiments import bench_originals
from experiments import benchmark
from experiments import benchmarks as registry


def _write(path, machine, names):
  payload = {'machine': machine, 'jax': jax.__version__,
             'results': [{'name': n, 'seconds': 1.0} for n in names]}
  path.write_text(json.dumps(payload))


def test_rerun_replaces_its_own_results_and_keeps_the_rest(tmp_path):
  path = tmp_path / 'results.json'
  _write(path, 'cpu x', ['a/1', 'b/1', 'b/2'])
  merged = benchmark._merge_with_earlier(str(path), [{'name': 'b/1', 'seconds': 2.0}], 'cpu x')
  assert [(r['name'], r['seconds']) for r in merged] == [('a/1', 1.0), ('b/1', 2.0),
                                                          ('b/2', 1.0)]


def test_other_machine_or_missing_file_keeps_only_this_run(tmp_path):
  path = tmp_path / 'results.json'
  fresh = [{'name': 'b/1', 'seconds': 2.0}]
  assert benchmark._merge_with_earlier(str(path), fresh, 'cpu x') == fresh
  _write(path, 'cpu y', ['a/1'])
  assert benchmark._merge_with_earlier(str(path), fresh, 'cpu x') == fresh


def test_musicvae_hand_counted_flops_match_the_originals_count():
  """mel_2bar_small at batch 512: the original computes ~351 GFLOP per train step by the same
  rule (2 per weight use, x3 for the backward pass), less z's input transform at 31 of the 32
  steps (2 x 3 x 512 x 31 x 256 x 1024 = 25 GFLOP), which runs once per sequence here."""
  from experiments import bench_musicvae
  from musicvae import configs
  config = configs.get_config('mel_2bar_small')
  flops = bench_musicvae.analytic_flops(config, 512, encoder=True, decoder=True, train=True)
  assert 315e9 < flops < 345e9
  sample = bench_musicvae.analytic_flops(config, 512, encoder=False, decoder=True)
  encode = bench_musicvae.analytic_flops(config, 512, encoder=True, decoder=False)
  assert abs(3 * (sample + encode) - flops) < 1e3


def test_time_train_step_runs_the_loops_train_step_and_counts_flops():
  import numpy as np
  from coconet import configs
  from coconet import train
  from experiments import benchmarks
  config = configs.get_config('tiny')
  batch = {'pitch_index': np.zeros((config.batch_size, config.crop_len, 4), np.int32)}
  seconds, flops = benchmarks.time_train_step(train.get_task(config), config, batch, repeats=2,
                                              warmup=1)
  assert seconds > 0 and flops > 0
  _, no_flops = benchmarks.time_train_step(train.get_task(config), config, batch, repeats=1,
                                           warmup=0, count_flops=False)
  assert no_flops is None


def test_cpword_benchmark_runs_on_the_tiny_model():
  """The real figures use the 'paper' model; the same code on 'tiny' with few words."""
  from experiments import bench_cpword
  from experiments import benchmarks
  assert 'cpword/paper' in benchmark.all_benchmarks()
  results = bench_cpword.run('tiny', num_words=8, prefix_len=32, repeats=1, warmup=1)
  assert [r['name'] for r in results] == [
      'cpword/tiny/generate_1_song', 'cpword/tiny/generate_8_songs',
      'cpword/tiny/cached_word_at_32', 'cpword/tiny/full_prefix_32']
  assert all(r['seconds'] > 0 for r in results)
  assert results[2]['same_word'] and results[2]['speedup_vs_full'] > 0


def test_depthwise_taps_rows_time_every_strategy_and_name_the_models_choice():
  from coconet import model as model_lib
  from experiments import bench_coconet
  results = bench_coconet.depthwise_taps(repeats=1, warmup=0, batch_size=2)
  strategies = list(model_lib.TAP_STRATEGIES)
  assert len(results) == len(strategies) * len(bench_coconet._TAPS_DILATIONS)
  assert all(r['seconds'] > 0 for r in results)
  for row, strategy in zip(results, strategies * len(bench_coconet._TAPS_DILATIONS)):
    assert row['name'].split('/')[-1].startswith(strategy + '_')
    # The model sums by regions, and only that row says so.
    assert row['model_uses_it'] == (strategy == 'regions')
    assert ('the model uses this one' in row['note']) == (strategy == 'regions')


def test_forward_chunk_rows_name_the_chunk_sampling_uses():
  from experiments import bench_coconet
  results = bench_coconet.forward_chunks(repeats=1, warmup=0, batch_size=4)
  assert [r['name'] for r in results] == ['coconet/forward_chunks/chunk_01',
                                          'coconet/forward_chunks/chunk_04']
  assert all(r['seconds'] > 0 and r['gflops_per_s'] > 0 for r in results)
  # 32 x 46 x 64 f32 is 0.38 MB a piece: 4 pieces fit the 3 MB budget, so the whole batch of 4.
  assert [r['model_uses_it'] for r in results] == [False, True]


def test_train_step_products_row_counts_every_product_and_nothing_else():
  """The products-only row does each layer's forward product, kernel gradient and (from the
  second layer on) input gradient: XLA's FLOP count is that sum."""
  from coconet import data
  from coconet import model as model_lib
  from experiments import bench_coconet
  config = bench_coconet.small_dilated_config()
  config.batch_size, config.crop_len = 2, 8
  config.model.num_layers, config.model.num_filters = 5, 8
  row = bench_coconet.train_step_products('products', config, repeats=1, warmup=0)
  model = bench_coconet._eval_model(config)
  expected = 0
  for n, layer in enumerate(model.layers):
    kh, kw, cin, cout = layer.conv.kernel.shape
    # XLA counts the multiply-adds of each tap where its source is inside the input.
    in_bounds = sum((config.crop_len - abs(dt)) * (data.NUM_PITCHES - abs(dp))
                    for dt, dp in model_lib.tap_offsets((kh, kw), layer.conv.dilation))
    expected += (2 if n == 0 else 3) * 2 * config.batch_size * in_bounds * cin * cout
  flops = row['gflops_per_s'] * row['seconds'] * 1e9
  np.testing.assert_allclose(flops, expected, rtol=0.02)


def test_pitch_draw_rows_time_both_samplers():
  from experiments import bench_coconet
  results = bench_coconet.pitch_draw(repeats=1, warmup=0, batch_size=2)
  assert [r['name'] for r in results] == ['coconet/pitch_draw/inverse_cdf',
                                          'coconet/pitch_draw/gumbel']
  assert all(r['seconds'] > 0 for r in results)


def test_kernel_gradient_rows_time_the_same_product_both_ways():
  from experiments import bench_reference
  from experiments import benchmarks
  assert 'reference/kernel_gradient' in benchmark.all_benchmarks()
  results = bench_reference.kernel_gradient(repeats=1, warmup=0)
  assert [r['name'] for r in results] == ['reference/kernel_gradient_bf16_transpose_in_dot',
                                          'reference/kernel_gradient_bf16_transposed_first']
  assert all(r['seconds'] > 0 for r in results)


def test_aims_read_met_or_not_met_from_the_rows():
  rows = {r['name']: r for r in [
      {'name': 'cpword/paper/generate_1_song', 'seconds': 2.0, 'words_per_second': 128.0},
      {'name': 'cpword/paper/generate_8_songs', 'seconds': 5.0, 'words_per_second': 410.0},
      {'name': 'cpword/paper/cached_word_at_1024', 'seconds': 0.01},
      {'name': 'cpword/paper/full_prefix_1024', 'seconds': 0.6},
      {'name': 'musicvae/mel_16bar_hier/train_step_b64', 'seconds': 100.0, 'peak_gib': 12.8},
      {'name': 'coconet/small_dilated/harmonize32_batch64', 'seconds': 17.6},
      {'name': 'other/thing', 'seconds': 1.0}]}
  status = {name: registry.aim_status(row, rows) for name, row in rows.items()}
  assert status['cpword/paper/generate_1_song'] == '128 words/s; aim >= 120: met'
  assert status['cpword/paper/generate_8_songs'].endswith('aim >= 600: not met')
  assert status['cpword/paper/cached_word_at_1024'].startswith('the cache is 60.0x faster')
  assert status['musicvae/mel_16bar_hier/train_step_b64'].endswith('fits in 24 GiB: met')
  # A ratio to a row that was not run, and a row without an aim, say nothing.
  assert status['coconet/small_dilated/harmonize32_batch64'] == ''
  assert status['other/thing'] == ''


def test_no_figure_of_the_originals_and_no_machine_is_hard_coded():
  """Every aim against the original reads the same run's original row; our rows carry no
  'original' figure from another machine."""
  assert not hasattr(registry, 'AIMS_MACHINE')
  for name in ('coconet/paper/train_step', 'coconet/small_dilated/train_step',
               'musicvae/mel_2bar_small/train_step_b64', 'musicvae/mel_2bar_small/train_step_b512'):
    assert registry.AIMS[name].achieved is registry.ratio_to_original
  from experiments import bench_coconet  # pylint: disable=g-import-not-at-top
  from experiments import bench_musicvae  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top
  for module in (bench_coconet, bench_musicvae, registry):
    assert 'original=' not in inspect.getsource(module), module.__name__


def _run_rows(run, pairs):
  """Our row and the original's for each (name, ours s, original s or None), all of run `run`."""
  rows = []
  for name, ours, original in pairs:
    rows.append({'name': name, 'seconds': ours, 'run': run, 'date': '2026-12-06'})
    if original is not None:
      rows.append({'name': 'original/' + name, 'seconds': original, 'run': run,
                   'date': '2026-12-06', 'pairs_with': name,
                   'versions': {'magenta': '2.1.4', 'tensorflow': '2.15.1'}})
  return rows


def _table_cells(table):
  """benchmark name -> the row's cells, from a markdown table."""
  cells = {}
  for line in table.splitlines():
    if line.startswith('| ') and not line.startswith('| benchmark'):
      parts = [c.strip() for c in line.strip('|').split('|')]
      cells[parts[0]] = parts
  return cells


def test_ratio_column_pairs_rows_of_one_run_and_leaves_the_others_empty():
  results = _run_rows('run B', [
      ('coconet/paper/train_step', 10.0, 12.5),  # 1.25x: met
      ('coconet/small_dilated/train_step', 0.1, 0.15),  # 1.5x: not met (aim 2x)
      ('musicvae/mel_2bar_small/train_step_b64', 0.2, 0.4),  # f32, 2x: met
      ('musicvae/mel_2bar_small/sample64', 0.04, 0.03),  # the default 1x aim: not met
      ('coconet/depthwise_taps/padded_4x4', 0.005, None)])  # no original: empty
  # The mixed-precision step pairs with the original's (float32) step of the same batch size.
  results.append({'name': 'musicvae/mel_2bar_small/train_step_b64_mixed', 'seconds': 0.1,
                  'run': 'run B', 'date': '2026-12-06'})
  # Kept from an earlier run: its original was timed in another run, so no ratio.
  results += [{'name': 'musicvae/mel_2bar_small/encode64', 'seconds': 0.03, 'run': 'run A',
               'date': '2026-12-05'},
              {'name': 'original/musicvae/mel_2bar_small/encode64', 'seconds': 0.1,
               'run': 'run B', 'date': '2026-12-06'}]
  # A quoted original figure (PianoNet's owner writes it) is shown as given, marked as such.
  results.append({'name': 'pianonet/paper/fast_1_stream', 'seconds': 0.5, 'run': 'run B',
                  'ms_per_key_state': 0.07, 'original': '0.347 ms/key state (the issue)'})
  rows = {r['name']: r for r in results}
  for r in results:
    r['aim'] = registry.aim_status(r, rows)
  table = benchmark._markdown(results, 'CPU', 'f32 product 300 -> 290 GFLOP/s')
  cells = _table_cells(table)
  header = table.splitlines()[4]
  assert '| original (same run) | ratio | aim |' in header
  assert cells['coconet/paper/train_step'][4:7] == [
      '12.50 s', '1.25x', "1.25x the original's speed in this run; aim >= 1.25x: met"]
  assert cells['coconet/small_dilated/train_step'][5:7] == [
      '1.50x', "1.50x the original's speed in this run (f32); aim >= 2x: not met"]
  assert cells['musicvae/mel_2bar_small/train_step_b64'][6] == (
      "2.00x the original's speed in this run (f32); aim >= 2x: met")
  assert cells['musicvae/mel_2bar_small/train_step_b64_mixed'][4:7] == [
      '400.0 ms', '4.00x', "4.00x the original's speed in this run (mixed precision); "
      'aim >= 2x: met']
  assert cells['musicvae/mel_2bar_small/sample64'][5:7] == [
      '0.75x', "0.75x the original's speed in this run; aim >= 1x: not met"]
  for name in ('coconet/depthwise_taps/padded_4x4', 'musicvae/mel_2bar_small/encode64',
               'original/coconet/paper/train_step'):
    assert cells[name][4:7] == ['', '', ''], name
  assert cells['pianonet/paper/fast_1_stream'][4:6] == [
      '0.347 ms/key state (the issue) (quoted, not from this run)', '']
  assert 'Magenta 2.1.4 on TensorFlow-CPU 2.15.1' in table
  assert 'rows of 2 runs' in table.splitlines()[0]
  # Each original's row stands right under ours.
  names = list(cells)
  assert names.index('original/coconet/paper/train_step') == (
      names.index('coconet/paper/train_step') + 1)
  assert names.index('original/musicvae/mel_2bar_small/train_step_b64') == (
      names.index('musicvae/mel_2bar_small/train_step_b64') + 1)


def test_without_the_originals_the_columns_stay_empty_and_a_note_says_why(monkeypatch,
                                                                           tmp_path):
  results = _run_rows('run', [('coconet/paper/train_step', 10.0, None)])
  results[0]['aim'] = registry.aim_status(results[0], {r['name']: r for r in results})
  assert results[0]['aim'] == ''
  monkeypatch.setattr(bench_originals, 'ORIGINALS_PYTHON', str(tmp_path / 'missing' / 'python'))
  order = benchmark.run_order(list(benchmark.all_benchmarks()),
                              ['coconet/paper', 'original/coconet/paper'])
  remarks = benchmark._remarks(order, results, 'run')
  assert len(remarks) == 1 and 'missing' in remarks[0] and 'make originals' in remarks[0]
  table = benchmark._markdown(results, 'CPU', 'x', remarks=tuple(remarks))
  assert _table_cells(table)['coconet/paper/train_step'][4:7] == ['', '', '']
  assert table.rstrip().splitlines()[-1].startswith('Note: the originals were not run')


def test_run_order_puts_each_original_after_ours_and_the_products_first_and_last():
  names = list(benchmark.all_benchmarks())
  assert set(bench_originals.BENCHMARKS) <= set(names)
  selected = [n for n in names if benchmark.is_selected(n, ['coconet/paper', 'data/'])]
  assert selected == ['coconet/paper', 'data/maestro_parse', 'original/coconet/paper']
  assert benchmark.run_order(names, selected) == [
      benchmark.REFERENCE, 'coconet/paper', 'original/coconet/paper', 'data/maestro_parse',
      benchmark.REFERENCE_END]
  # Without --only: every group; each original's group right after ours.
  order = benchmark.run_order(names, names)
  assert order.count(benchmark.REFERENCE) == 1
  for group in bench_originals.GROUPS:
    assert order.index('original/' + group) == order.index(group) + 1
  assert benchmark.is_selected('original/musicvae/mel_2bar_small', ['musicvae'])
  assert benchmark.is_selected('original/musicvae/mel_2bar_small', ['original'])
  assert not benchmark.is_selected('original/musicvae/mel_2bar_small', ['coconet'])


@pytest.mark.parametrize('cpu_flags, family, model, details', [
    ({'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16'}, '6', '143', ' (family 6, model 143, AMX), '),
    ({'avx2', 'avx512f', 'avx512_bf16'}, '26', '2', ' (family 26, model 2, AVX512-BF16), '),
    ({'avx2', 'avx512f', 'avx512_bf16'}, '25', '17', ' (family 25, model 17, AVX512-BF16), '),
    ({'avx2', 'avx512f'}, '26', None, ' (family 26, AVX-512), '),
    ({'avx2', 'fma'}, '25', '1', ' (family 25, model 1, AVX2), '),
    ({'avx2'}, None, None, ' (AVX2), '),
    (set(), None, None, ', ')])
def test_machine_line_names_the_family_model_and_widest_vector_extension(
    monkeypatch, tmp_path, cpu_flags, family, model, details):
  """EPYCs that lscpu names alike, one with AVX2 only, two with AVX512-BF16 but products ~1.9x
  apart, are not one machine to the table."""
  cpuinfo = tmp_path / 'cpuinfo'
  fields = (f'cpu family\t: {family}\n' if family else '') + (f'model\t\t: {model}\n'
                                                              if model else '')
  # Each processor repeats the fields; the first one's count.
  other = (f'cpu family\t: 99\n' if family else '') + (f'model\t\t: 99\n' if model else '')
  cpuinfo.write_text(f'processor\t: 0\n{fields}model name\t: AMD EPYC\n'
                     f'processor\t: 1\n{other}model name\t: Other\n')
  monkeypatch.setattr(benchmark, '_CPUINFO', str(cpuinfo))
  monkeypatch.setattr(benchmark.precision, 'cpu_flags', lambda: frozenset(cpu_flags))
  line = benchmark.machine_description()
  assert line.startswith('AMD EPYC') and details in line and line.endswith(' cores')


def test_machine_line_gives_the_reference_products_at_the_start_and_the_end_of_the_run():
  def product(name, gflops, run='now'):
    return {'name': name, 'seconds': 0.05, 'gflops_per_s': gflops, 'run': run}
  results = [product('reference/matmul_float32', 310.2), product('reference/matmul_bfloat16', 560),
             product('coconet/paper/train_step', 250),
             product('reference/matmul_float32_end', 304.6),
             product('reference/matmul_bfloat16_end', 540.4),
             product('reference/matmul_float32', 100, run='earlier')]
  products = benchmark.products_description(results, 'now')
  assert products == 'f32 product 310 -> 305 GFLOP/s, bf16 560 -> 540 during the run'
  assert benchmark.products_description(results[:2], 'now') == (
      'f32 product 310 GFLOP/s, bf16 560 (start of the run only)')
  assert benchmark.products_description(results, 'another') == (
      'reference products not measured in this run')
  table = benchmark._markdown(results[:5], 'AMD EPYC (family 25, model 17, AVX512-BF16), 2 cores',
                              products)
  assert table.startswith('Machine: AMD EPYC (family 25, model 17, AVX512-BF16), 2 cores; '
                          'f32 product 310 -> 305 GFLOP/s, bf16 560 -> 540 during the run; jax ')


def test_reference_products_at_the_end_are_named_apart():
  from experiments import bench_reference  # pylint: disable=g-import-not-at-top
  start = bench_reference.matmul(repeats=1, warmup=0)
  end = bench_reference.matmul_end(repeats=1, warmup=0)
  assert [r['name'] for r in end] == [r['name'] + '_end' for r in start]
  assert all(r['gflops_per_s'] > 0 for r in start + end)


# ------------------------------------------------------------------------------------------------
# The originals' driver (originals/bench.py, run with .venv-originals) and our side of it.

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _driver_module():
  """originals/bench.py imports only the standard library at module level: readable from here."""
  spec = importlib.util.spec_from_file_location('originals_bench',
                                                os.path.join(_REPO, 'originals', 'bench.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_driver_workloads_are_the_rows_our_groups_pair_with():
  driver = _driver_module()
  groups = benchmark.all_benchmarks()
  for group, spec in bench_originals.GROUPS.items():
    assert group in groups and 'original/' + group in groups
    for workload in spec.workloads:
      assert workload in driver.DEFAULT_WORKLOADS and workload.startswith(group + '/')
      assert driver.WORKLOADS[workload][0] == group


def test_driver_json_lines_parse_into_original_rows():
  driver = _driver_module()
  line = driver.json_line('coconet/paper/train_step', [12.0, 12.8, 13.1], warmup=1, small=False,
                          threads={'intra_op': 2, 'inter_op': 2},
                          versions={'magenta': '2.1.4', 'tensorflow': '2.15.1'},
                          shapes={'batch': 20, 'crop_len': 64}, what='one train step')
  text = '\n'.join(['Magenta says hello', line, '', 'more prints'])
  rows = bench_originals.parse_driver_output(text)
  assert len(rows) == 1
  row = rows[0]
  assert row['name'] == 'original/coconet/paper/train_step'
  assert row['pairs_with'] == 'coconet/paper/train_step'
  assert row['seconds'] == 12.8 and row['times'] == [12.0, 12.8, 13.1]
  assert row['shapes'] == {'batch': 20, 'crop_len': 64} and row['small'] is False
  assert row['note'] == 'one train step; Magenta 2.1.4, TensorFlow-CPU 2.15.1, 2 threads'
  with pytest.raises(ValueError, match='not JSON'):
    bench_originals.parse_driver_output('{"name": "x", ')
  with pytest.raises(ValueError, match='median_s'):
    bench_originals.parse_driver_output('{"name": "x"}')


def test_bench_originals_skips_without_the_originals_environment(monkeypatch, tmp_path):
  missing = str(tmp_path / '.venv-originals' / 'bin' / 'python')
  monkeypatch.setattr(bench_originals, 'ORIGINALS_PYTHON', missing)
  assert 'make originals' in bench_originals.unavailable_reason()
  for name, run in bench_originals.BENCHMARKS.items():
    assert run(repeats=1, warmup=0) == [], name


def test_bench_originals_keeps_the_rows_of_a_driver_that_fails_later(tmp_path):
  """A driver whose second workload fails: the first one's row, and no exception."""
  fake = tmp_path / 'python'
  record = json.dumps({'name': 'coconet/small_dilated/train_step', 'median_s': 0.2,
                       'times_s': [0.2], 'versions': {}})
  fake.write_text(f"#!/bin/sh\necho 'log line'\necho '{record}'\nexit 1\n")
  fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
  rows = bench_originals.run_driver(bench_originals.GROUPS['coconet/small_dilated'].workloads,
                                    repeats=1, warmup=0, python=str(fake))
  assert [r['name'] for r in rows] == ['original/coconet/small_dilated/train_step']


def test_originals_driver_runs_small_models():
  """originals/bench.py --small in .venv-originals: one workload of each kind, tiny models
  (~30 s on 2 busy cores, most of it importing TensorFlow and building graphs)."""
  reason = bench_originals.unavailable_reason()
  if reason:
    pytest.skip(reason)
  workloads = ('coconet/small_dilated/train_step', 'coconet/paper/harmonize32',
               'musicvae/mel_2bar_small/sample64')
  rows = bench_originals.run_driver(workloads, repeats=1, warmup=0, small=True)
  assert [r['pairs_with'] for r in rows] == list(workloads)
  for row in rows:
    assert row['name'] == 'original/' + row['pairs_with'] and row['small'] is True
    assert row['seconds'] > 0 and len(row['times']) == 1
    assert row['versions']['magenta'] == '2.1.4' and 'SMALL MODELS' in row['note']
  assert rows[1]['shapes']['forward_passes'] == 4 * rows[1]['shapes']['steps'] + 1


def test_memory_plan_and_input_rate_rows_on_a_tiny_config():
  from coconet import configs as coconet_configs  # pylint: disable=g-import-not-at-top
  from experiments import bench_scaling  # pylint: disable=g-import-not-at-top
  config = coconet_configs.get_config('tiny')
  plan = bench_scaling.memory_plan(config)
  assert 0 < plan['gib_at_batch'] < plan['gib_at_double']
  assert plan['largest_batch_80gb'] > config.batch_size
  first, rate = bench_scaling.input_rate(config, num_batches=3)
  assert first > 0 and rate > 0
  assert bench_scaling.step_flops(config) > 0
  assert 'input' in benchmark.all_benchmarks() and 'memory' in benchmark.all_benchmarks()
