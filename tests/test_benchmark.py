"""experiments/benchmark.py: earlier results of benchmarks a run did not repeat are kept, the
issues' aims are read from the rows, and every module's benchmarks are listed."""

import json

import jax
import pytest

from common.errors import UserError
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


def test_musicvae_hand_counted_flops_match_the_originals_figure():
  """mel_2bar_small at batch 512: ~180 GFLOP/s x 1.95 s = ~351 GFLOP per train step, less z's
  input transform at 31 of the 32 steps (2 x 3 x 512 x 31 x 256 x 1024 = 25 GFLOP), which runs
  once per sequence here."""
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


def test_depthwise_taps_rows_time_both_strategies_and_name_the_models_choice():
  from coconet import model as model_lib
  from experiments import bench_coconet
  results = bench_coconet.depthwise_taps(repeats=1, warmup=0, batch_size=2)
  assert len(results) == 2 * len(bench_coconet._TAPS_DILATIONS)
  assert all(r['seconds'] > 0 for r in results)
  for padded, windowed in zip(results[::2], results[1::2]):
    assert padded['name'].split('/')[-1].startswith('padded_')
    assert windowed['name'].split('/')[-1].startswith('windowed_')
    # Exactly one of the pair is the model's choice, the one its area limit picks.
    padded_wins = padded['padded_area_ratio'] <= model_lib._PAD_AREA_RATIO_LIMIT
    assert [padded['model_uses_it'], windowed['model_uses_it']] == [padded_wins, not padded_wins]
    assert ('the model uses this one' in padded['note']) == padded_wins


def test_forward_chunk_rows_name_the_chunk_sampling_uses():
  from experiments import bench_coconet
  results = bench_coconet.forward_chunks(repeats=1, warmup=0, batch_size=4)
  assert [r['name'] for r in results] == ['coconet/forward_chunks/chunk_01',
                                          'coconet/forward_chunks/chunk_04']
  assert all(r['seconds'] > 0 and r['gflops_per_s'] > 0 for r in results)
  # 32 x 46 x 64 f32 is 0.38 MB a piece: 4 pieces fit the 3 MB budget, so the whole batch of 4.
  assert [r['model_uses_it'] for r in results] == [False, True]


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
  # On another CPU, an aim set against the original's times says it compares across machines;
  # a ratio of two rows of the same run does not.
  elsewhere = {name: registry.aim_status(row, rows, 'Some Other CPU, 2 cores')
               for name, row in rows.items()}
  assert elsewhere['cpword/paper/generate_1_song'].startswith('128 words/s; aim >= 120: met (')
  assert registry.AIMS_MACHINE in elsewhere['cpword/paper/generate_1_song']
  assert elsewhere['cpword/paper/cached_word_at_1024'] == status['cpword/paper/cached_word_at_1024']


@pytest.mark.parametrize('cpu_flags, family, details', [
    ({'avx2', 'avx512f', 'avx512_bf16'}, '26', ' (family 26, AVX512-BF16), '),
    ({'avx2', 'avx512f', 'avx512_bf16'}, '25', ' (family 25, AVX512-BF16), '),
    ({'avx2', 'avx512f'}, '26', ' (family 26, AVX-512), '),
    ({'avx2', 'fma'}, '25', ' (family 25, AVX2), '),
    ({'avx2'}, None, ' (AVX2), '),
    (set(), None, ', ')])
def test_machine_line_names_the_family_and_widest_vector_extension(monkeypatch, tmp_path,
                                                                   cpu_flags, family, details):
  """EPYCs that lscpu names alike, one with AVX2 only, two with AVX512-BF16 but products ~1.9x
  apart, are not one machine to the table."""
  cpuinfo = tmp_path / 'cpuinfo'
  family_line = f'cpu family\t: {family}\n' if family else ''
  # Each processor repeats the fields; the first one's count.
  cpuinfo.write_text(f'processor\t: 0\n{family_line}model name\t: AMD EPYC\n'
                     f'processor\t: 1\n{family_line.replace(str(family), "99")}'
                     'model name\t: Other\n')
  monkeypatch.setattr(benchmark, '_CPUINFO', str(cpuinfo))
  monkeypatch.setattr(benchmark.precision, 'cpu_flags', lambda: frozenset(cpu_flags))
  line = benchmark.machine_description()
  assert line.startswith('AMD EPYC') and details in line and line.endswith(' cores')
  if details != ' (family 26, AVX512-BF16), ':
    assert line != registry.AIMS_MACHINE


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
