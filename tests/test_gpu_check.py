"""make gpu-check in its dry mode (tiny configs, a few steps, on the CPU), so that the prepared
GPU run cannot rot, and the format of what it writes."""

import json

from experiments import gpu_check


def test_the_dry_run_covers_every_model_and_writes_its_table(tmp_path):
  payload = gpu_check.run_check(gpu_check.MODELS, dry=True, steps=2, out_dir=str(tmp_path))
  names = [row['name'] for row in payload['rows']]
  for model in gpu_check.MODELS:
    assert f'{model}/tiny/train_step' in names
    assert sum(name.startswith(f'{model}/') for name in names) >= 3  # train + 2 sampling rows
  train = [row for row in payload['rows'] if row['name'].endswith('train_step')]
  assert all(row['seconds'] > 0 and row['compile_s'] > 0 and row['examples_per_s'] > 0
             for row in train)
  assert all(abs(row['loss']) < 1e6 for row in train)
  written = json.loads((tmp_path / 'gpu_results.json').read_text())
  assert written['rows'] == json.loads(json.dumps(payload['rows']))
  table = (tmp_path / 'gpu_results.md').read_text().splitlines()
  assert table[0].startswith('Device: 1 x cpu') and table[0].endswith('(dry run).')
  assert table[2] == '| row | time | throughput | compile | MFU (bf16 peak) | peak memory |'
  assert len(table) == 4 + len(payload['rows'])


def test_the_bf16_peak_is_known_for_the_lent_gpus():
  assert gpu_check.peak_flops('NVIDIA H100 80GB HBM3') == 989e12
  assert gpu_check.peak_flops('NVIDIA H200') == 989e12
  assert gpu_check.peak_flops('cpu') is None
  row = dict(name='x/paper/train_step', seconds=0.5, throughput='1 steps/s', compile_s=2.0,
             mfu=0.4, peak_memory_gib=12.3)
  text = gpu_check.markdown(dict(device='1 x NVIDIA H100', jax='0', date='d', dry=False,
                                 rows=[row]))
  assert text.splitlines()[-1] == '| x/paper/train_step | 500.00 ms | 1 steps/s | 2.0 s | 40.0% | 12.3 GiB |'
