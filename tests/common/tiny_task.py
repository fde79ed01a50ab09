"""A tiny model and data stream that exercise the shared training loop (no model package needed).

Run as a script to train in a subprocess (used by the resume-after-kill and multi-device tests):
  python tests/common/tiny_task.py WORKDIR NUM_STEPS [NUM_DEVICES] [SLEEP_PER_BATCH]
"""

from __future__ import annotations

import sys
import time

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import training

IN_DIM, OUT_DIM = 6, 3


class TinyNet(nnx.Module):
  """MLP with batch norm (so the loop must carry batch statistics) and input noise (uses the RNG)."""

  def __init__(self, rngs: nnx.Rngs):
    # No bias before batch norm: its gradient is ~0 and Adam would amplify rounding noise.
    self.hidden = nnx.Linear(IN_DIM, 16, use_bias=False, rngs=rngs)
    self.norm = nnx.BatchNorm(16, rngs=rngs)
    self.out = nnx.Linear(16, OUT_DIM, rngs=rngs)

  def __call__(self, x_BD: jax.Array) -> jax.Array:
    return self.out(nnx.relu(self.norm(self.hidden(x_BD))))


class CountingIterator:
  """Deterministic batches indexed by position; checkpointable through get_state/set_state."""

  def __init__(self, batch_size: int, seed: int, sleep: float = 0.0):
    self.batch_size, self.seed, self.sleep, self.position = batch_size, seed, sleep, 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.sleep:
      time.sleep(self.sleep)
    rng = np.random.default_rng([self.seed, self.position])
    self.position += 1
    x = rng.normal(size=(self.batch_size, IN_DIM)).astype(np.float32)
    w = np.arange(IN_DIM * OUT_DIM, dtype=np.float32).reshape(IN_DIM, OUT_DIM) / 10
    return {'x': x, 'y': np.tanh(x @ w)}

  def get_state(self) -> dict:
    return {'position': self.position}

  def set_state(self, state: dict) -> None:
    self.position = state['position']


def loss_fn(model, batch, rng, step, nan_from_step: int | None = None):
  x = batch['x'] + 0.01 * jax.random.normal(rng, batch['x'].shape)
  loss = jnp.mean((model(x) - batch['y']) ** 2)
  if nan_from_step is not None:
    loss = jnp.where(step >= nan_from_step, jnp.nan, loss)
  return loss, {'mse': loss}


def eval_fn(model, batch, rng):
  del rng
  err_B = jnp.mean((model(batch['x']) - batch['y']) ** 2, axis=-1)
  return {'mse': jnp.sum(err_B * batch['weight']) / jnp.sum(batch['weight'])}


def make_task(sleep: float = 0.0, nan_from_step: int | None = None) -> training.TrainTask:
  def eval_batches(config, process_index, process_count):
    del process_index, process_count
    batch = CountingIterator(config.batch_size, seed=999).__next__()
    batch['weight'] = np.ones(config.batch_size, np.float32)
    return [batch]

  return training.TrainTask(
      build_model=lambda config, rngs: TinyNet(rngs),
      loss_fn=lambda m, b, r, s: loss_fn(m, b, r, s, nan_from_step),
      train_iterator=lambda config, i, n: CountingIterator(config.batch_size, config.seed, sleep),
      eval_fn=eval_fn,
      eval_batches=eval_batches)


def make_config(num_steps: int, **overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(
      task='tiny', seed=0, batch_size=8, num_train_steps=num_steps, learning_rate=1e-2,
      log_every_steps=5, checkpoint_every_steps=5, eval_every_steps=10,
      max_checkpoints_to_keep=100))
  config.update(overrides)
  return config


def flat_params(model) -> dict[str, np.ndarray]:
  state = nnx.state(model)
  return {'/'.join(map(str, path)): np.asarray(v) for path, v in nnx.to_flat_state(state)}


if __name__ == '__main__':
  workdir, num_steps = sys.argv[1], int(sys.argv[2])
  num_devices = int(sys.argv[3]) if len(sys.argv) > 3 else 1
  sleep = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
  from absl import logging  # pylint: disable=g-import-not-at-top
  from common import sharding  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  training.train_and_evaluate(make_task(sleep), make_config(num_steps), workdir,
                              mesh=sharding.make_mesh(num_devices))
