"""Two processes on loopback (jax.distributed, gloo on CPU) train to the same parameters as one
process with two devices and the same global batch.

Each process owns one CPU device and reads its half of every global batch
(common/pipeline.py); gradients are averaged across the processes by the jitted step's sharding.
The runs go through the real CLI, `python -m experiments.train`, as a multi-host user would.
"""

import os
import socket
import subprocess
import sys

import jax
from flax import nnx
import numpy as np

from common import training
from musicvae import train

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TRAIN_ARGS = ['--config=musicvae/configs.py:tiny', '--config.num_train_steps=3',
               '--config.batch_size=8', '--config.eval_every_steps=0',
               '--config.sample_every_steps=0', '--config.checkpoint_every_steps=3']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _train_command(workdir: str, *extra: str) -> list[str]:
  return [sys.executable, '-m', 'experiments.train', *_TRAIN_ARGS, f'--workdir={workdir}', *extra]


def _params(workdir: str) -> list[np.ndarray]:
  config = training.read_config(workdir)
  model = training.load_model(train.get_task(config), config, workdir)
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
  single, multi = str(tmp_path / 'single'), str(tmp_path / 'multi')
  subprocess.run(_train_command(single), cwd=_ROOT, env=_env(2), check=True, capture_output=True,
                 timeout=300)
  address = f'localhost:{_free_port()}'
  workers = [subprocess.Popen(
      _train_command(multi, f'--coordinator_address={address}', '--num_processes=2',
                     f'--process_id={i}'),
      cwd=_ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  logs = [w.communicate(timeout=300)[0] for w in workers]
  for i, (worker, log) in enumerate(zip(workers, logs)):
    assert worker.returncode == 0, f'process {i} failed:\n{log[-3000:]}'
  assert 'process 1 of 2, 1 local / 2 global devices' in logs[1]

  one, two = _params(single), _params(multi)
  assert len(one) == len(two) > 0
  for a, b in zip(one, two):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Training moved the weights: equal because both trained, not because neither did.
  config = training.read_config(single)
  fresh = train.get_task(config).build_model(config, nnx.Rngs(config.seed))
  fresh_params = [np.asarray(x) for x in jax.tree.leaves(nnx.state(fresh, nnx.Param))]
  assert any(not np.allclose(a, f) for a, f in zip(one, fresh_params))
