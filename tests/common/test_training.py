"""The shared training loop: data parallel == single device, kill + resume == uninterrupted, NaN stop."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from common import training
from common.errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import tiny_task  # pylint: disable=g-import-not-at-top,wrong-import-position


def _env(num_cpu_devices: int = 1) -> dict[str, str]:
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={num_cpu_devices}'
  return env


def _train_subprocess(workdir, num_steps, num_devices=1, sleep=0.0, fake_devices=1):
  return subprocess.Popen(
      [sys.executable, os.path.join(HERE, 'tiny_task.py'), str(workdir), str(num_steps),
       str(num_devices), str(sleep)],
      env=_env(fake_devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final_params(workdir, num_steps):
  model = training.load_model(tiny_task.make_task(), tiny_task.make_config(num_steps), str(workdir))
  return tiny_task.flat_params(model)


def _assert_same_params(a, b, atol=0.0):
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=0, atol=atol, err_msg=name)


def test_loop_learns_and_writes_metrics_and_checkpoints(tmp_path):
  config = tiny_task.make_config(40)
  training.train_and_evaluate(tiny_task.make_task(), config, str(tmp_path))
  lines = (tmp_path / training.METRICS_FILE).read_text().splitlines()
  import json  # pylint: disable=g-import-not-at-top
  records = [json.loads(line) for line in lines]
  train_losses = [r['loss'] for r in records if r['split'] == 'train']
  assert train_losses[-1] < 0.6 * train_losses[0]
  assert any(r['split'] == 'eval' for r in records)
  assert sorted(os.listdir(tmp_path / 'checkpoints'), key=int)[-1] == '40'
  assert os.listdir(tmp_path / 'tensorboard')
  assert training.read_config(str(tmp_path)).num_train_steps == 40


def test_data_parallel_on_8_devices_equals_one_device(tmp_path):
  one = _train_subprocess(tmp_path / 'one', 12, num_devices=1, fake_devices=8)
  eight = _train_subprocess(tmp_path / 'eight', 12, num_devices=8, fake_devices=8)
  for proc in (one, eight):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
  assert 'on 8 device(s)' in out
  # Only the reduction order of the gradient all-reduce differs.
  _assert_same_params(_final_params(tmp_path / 'one', 12), _final_params(tmp_path / 'eight', 12),
                      atol=1e-5)


def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path):
  num_steps = 30
  reference = _train_subprocess(tmp_path / 'reference', num_steps)
  out, _ = reference.communicate(timeout=300)
  assert reference.returncode == 0, out

  resumed_dir = tmp_path / 'resumed'
  victim = _train_subprocess(resumed_dir, num_steps, sleep=0.05)
  deadline = time.time() + 240
  while not (resumed_dir / 'checkpoints' / '10').exists():  # wait for two checkpoints
    assert victim.poll() is None and time.time() < deadline, 'run ended before it could be killed'
    time.sleep(0.05)
  time.sleep(0.12)  # land somewhere between checkpoints
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert victim.returncode == -signal.SIGKILL

  resume = _train_subprocess(resumed_dir, num_steps)
  out, _ = resume.communicate(timeout=300)
  assert resume.returncode == 0, out
  assert 'Resumed from' in out
  _assert_same_params(_final_params(tmp_path / 'reference', num_steps),
                      _final_params(resumed_dir, num_steps))


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
  config = tiny_task.make_config(30)
  with pytest.raises(training.NonFiniteLossError) as err:
    training.train_and_evaluate(tiny_task.make_task(nan_from_step=12), config, str(tmp_path))
  message = str(err.value)
  assert isinstance(err.value, UserError)  # the CLI prints it on one line, no traceback
  assert 'step 13' in message and 'nan' in message and 'step 10' in message
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints'))
  assert steps[-1] == 10
  model = training.load_model(tiny_task.make_task(), config, str(tmp_path))
  params = tiny_task.flat_params(model)
  assert all(np.all(np.isfinite(v)) for v in params.values())


def test_load_model_without_checkpoint_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='no checkpoints'):
    training.load_model(tiny_task.make_task(), tiny_task.make_config(1), str(tmp_path))


def test_time_budget_stops_early_with_a_checkpoint_and_an_eval(tmp_path):
  config = tiny_task.make_config(1000)
  config.max_train_seconds = 1e-6  # spent after the first step
  config.eval_every_steps = 10**9  # evaluate only at the (early) end
  training.train_and_evaluate(tiny_task.make_task(), config, str(tmp_path))
  records = [json.loads(line) for line in open(tmp_path / training.METRICS_FILE)]
  assert [r['step'] for r in records if r['split'] == 'eval'] == [1]
  model = training.load_model(tiny_task.make_task(), config, str(tmp_path))
  assert tiny_task.flat_params(model)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1']


def test_exported_weights_load_like_the_training_checkpoint(tmp_path):
  config = tiny_task.make_config(12)
  run, export = tmp_path / 'run', tmp_path / 'export'
  training.train_and_evaluate(tiny_task.make_task(), config, str(run))
  path = training.export_weights(tiny_task.make_task(), config, str(run), str(export))
  assert path.endswith(os.path.join('checkpoints', '12'))
  _assert_same_params(_final_params(run, 12), _final_params(export, 12))
  assert training.read_config(str(export)).num_train_steps == 12
  assert os.path.exists(export / training.METRICS_FILE)
  with pytest.raises(UserError, match='already holds checkpoints'):
    training.export_weights(tiny_task.make_task(), config, str(run), str(export))


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path):
  source, tuned = tmp_path / 'source', tmp_path / 'tuned'
  training.train_and_evaluate(tiny_task.make_task(), tiny_task.make_config(12), str(source))
  # Learning rate 0: one step changes no weight, so the new run's weights are the source's.
  config = tiny_task.make_config(1, learning_rate=0.0, init_from=str(source),
                                 checkpoint_every_steps=1)
  training.train_and_evaluate(tiny_task.make_task(), config, str(tuned))
  from flax import nnx  # pylint: disable=g-import-not-at-top

  def weights(workdir, steps):
    model = training.load_model(tiny_task.make_task(), tiny_task.make_config(steps), str(workdir))
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.Param))]

  fresh = [np.asarray(v) for v in jax.tree.leaves(
      nnx.state(tiny_task.TinyNet(nnx.Rngs(0)), nnx.Param))]
  for got, want, init in zip(weights(tuned, 1), weights(source, 12), fresh):
    np.testing.assert_array_equal(got, want)
    assert got.shape == init.shape
  assert any(not np.array_equal(w, f) for w, f in zip(weights(source, 12), fresh))
  # The new run counts its own steps: it has a checkpoint at step 1, not 13.
  assert sorted(os.listdir(tuned / 'checkpoints'), key=int) == ['1']
  with pytest.raises(UserError, match='no config.json|no checkpoints found'):
    training.train_and_evaluate(tiny_task.make_task(), tiny_task.make_config(
        1, init_from=str(tmp_path / 'missing')), str(tmp_path / 'other'))
  # Different model settings are named before anything is restored.
  import ml_collections  # pylint: disable=g-import-not-at-top
  other = tiny_task.make_config(1, init_from=str(source),
                                model=ml_collections.ConfigDict({'width': 32}))
  with pytest.raises(UserError, match=r"other model settings \(width: None there, 32 here\)"):
    training.train_and_evaluate(tiny_task.make_task(), other, str(tmp_path / 'other2'))


def _break_checkpoint(step_dir) -> None:
  """Damages a saved step the way a full disk or a bad copy does: its array data is gone."""
  for folder, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(folder, name)
      if name != '_CHECKPOINT_METADATA':
        with open(path, 'wb') as f:
          f.write(b'\0garbage')


def test_an_unreadable_latest_checkpoint_falls_back_and_is_kept_aside(tmp_path, caplog):
  workdir = tmp_path / 'run'
  training.train_and_evaluate(tiny_task.make_task(), tiny_task.make_config(10), str(workdir))
  _break_checkpoint(workdir / 'checkpoints' / '10')
  caplog.set_level(logging.WARNING, logger='absl')
  model = training.load_model(tiny_task.make_task(), tiny_task.make_config(10), str(workdir))
  assert model is not None
  assert any('step 10' in r.getMessage() and 'cannot be read' in r.getMessage()
             for r in caplog.records)
  # Resuming starts from step 5, keeps the damaged step aside and saves step 10 again.
  training.train_and_evaluate(tiny_task.make_task(), tiny_task.make_config(10), str(workdir))
  names = sorted(os.listdir(workdir / 'checkpoints'))
  assert '10.unreadable' in names and '10' in names and '5' in names
  training.load_model(tiny_task.make_task(), tiny_task.make_config(10), str(workdir), step=10)


def test_a_resumed_run_keeps_the_recorded_config_and_logs_the_change(tmp_path, caplog):
  workdir = tmp_path / 'run'
  training.train_and_evaluate(tiny_task.make_task(), tiny_task.make_config(5), str(workdir))
  recorded = (workdir / 'config.json').read_text()
  caplog.set_level(logging.WARNING, logger='absl')
  training.train_and_evaluate(tiny_task.make_task(),
                              tiny_task.make_config(10, learning_rate=0.5), str(workdir))
  assert (workdir / 'config.json').read_text() == recorded
  warning = [r.getMessage() for r in caplog.records if 'differs from the one recorded' in
             r.getMessage()]
  assert warning and 'learning_rate: 0.01 there, 0.5 here' in warning[0]
  change = json.loads((workdir / 'config_changes.jsonl').read_text().splitlines()[-1])
  assert change['changes'] == {'learning_rate': 0.5, 'num_train_steps': 10}
  import ml_collections  # pylint: disable=g-import-not-at-top
  other = tiny_task.make_config(12, model=ml_collections.ConfigDict({'width': 32}))
  with pytest.raises(UserError, match='cannot resume this run with other model settings'):
    training.train_and_evaluate(tiny_task.make_task(), other, str(workdir))
  assert (workdir / 'config.json').read_text() == recorded
