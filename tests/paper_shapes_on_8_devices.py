"""Run as a script with 8 fake CPU devices: one train step of a model's paper config on a mesh of
8 devices and on one device, from the same initial state and batch; prints both losses and
gradient norms, and how many parameters moved differently, as JSON.

Adam's first step moves every parameter by about the learning rate times the sign of its
gradient, so a gradient within rounding of zero may take either sign on the two meshes (their
sums run in different orders) and move that parameter by 2 x lr the other way. What a sharding
bug changes is the gradient itself (the norm) or many parameters, not a few such signs.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/paper_shapes_on_8_devices.py MODEL
"""

import json
import sys

import jax
import numpy as np

from common import sharding
from common import training
from experiments import batches
from experiments import registry


def one_step(config, num_devices: int):
  mesh = sharding.make_mesh(num_devices)
  setup = training.setup_training(registry.get_task(config), config, mesh)
  batch = sharding.global_batch(batches.synthetic_batch(config, seed=1), mesh)
  state, metrics = setup.train_step(setup.state, batch)
  return (float(metrics['loss']), float(metrics['grad_norm']),
          [np.asarray(x) for x in jax.tree.leaves(state['params'])])


def main(model: str) -> None:
  config = batches.model_config(model, 'paper')
  # The global batch must split evenly over 8 devices: the paper's, rounded up to a multiple of 8.
  config.batch_size = -(-config.batch_size // 8) * 8
  if model == 'cpword':
    # Whole songs of 3,580 words take 66 GiB at batch 4 (bench memory/cpword/paper), beyond a
    # CPU test machine: the paper's layers and widths on windows of 512 words.
    config.data.seq_len = 512
  loss_8, grad_norm_8, params_8 = one_step(config, 8)
  loss_1, grad_norm_1, params_1 = one_step(config, 1)
  step = float(config.learning_rate)
  moved_differently = sum(int(np.sum(np.abs(a - b) > 0.5 * step))
                          for a, b in zip(params_8, params_1))
  print(json.dumps(dict(model=model, devices=jax.device_count(), batch=config.batch_size,
                        loss_8=loss_8, loss_1=loss_1, grad_norm_8=grad_norm_8,
                        grad_norm_1=grad_norm_1, moved_differently=moved_differently,
                        parameters=sum(a.size for a in params_1))))

if __name__ == '__main__':
  # No runtime.configure_process(): its inline dispatch suits one device; the 8 devices'
  # collectives need their own threads.
  main(sys.argv[1])
