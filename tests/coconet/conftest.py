"""Fixtures for the Coconet tests (helpers live in helpers.py)."""

from flax import nnx
import numpy as np
import pytest

from coconet import model as model_lib


@pytest.fixture(scope='session')
def tiny_model():
  """4 layers x 8 filters, in eval mode, with non-trivial batch-norm statistics."""
  model = model_lib.Coconet(num_layers=4, num_filters=8, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  idx = rng.integers(0, 46, size=(2, 8, 4))
  roll = np.swapaxes(np.eye(46, dtype=np.float32)[idx], -1, -2)
  mask = (rng.random((2, 8, 4)) < 0.5).astype(np.float32)
  model_lib.reestimate_batch_norm_stats(model, [(roll, mask)])
  return model
