"""Mixed precision (config.mixed_precision: bf16 compute, f32 parameters and optimizer state) in
every model: over a few train steps from the same start on the same batches, the bf16 losses stay
within TOLERANCE (relative) of the f32 ones."""

import numpy as np
import pytest

from common import sharding
from common import training
from experiments import batches
from experiments import registry

TOLERANCE = 0.03
STEPS = 3


def _losses(model: str, mixed: bool) -> list[float]:
  config = batches.model_config(model, 'tiny')
  config.mixed_precision = mixed
  mesh = sharding.make_mesh(1)
  setup = training.setup_training(registry.get_task(config), config, mesh)
  state, losses = setup.state, []
  for step in range(STEPS):
    batch = sharding.global_batch(batches.synthetic_batch(config, seed=step), mesh)
    state, metrics = setup.train_step(state, batch)
    losses.append(float(metrics['loss']))
  return losses


@pytest.mark.parametrize('model', ['coconet', 'musicvae', 'pianonet', 'cpword'])
def test_bf16_losses_follow_float32(model):
  assert 'mixed_precision' in batches.model_config(model, 'tiny'), model
  f32, bf16 = _losses(model, False), _losses(model, True)
  assert np.all(np.isfinite(bf16))
  np.testing.assert_allclose(bf16, f32, rtol=TOLERANCE)
