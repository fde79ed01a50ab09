"""Tiny cpword models shared by the tests of this folder (building one costs a few seconds)."""

import functools

from flax import nnx
import pytest

from cpword import configs
from cpword import train


@functools.lru_cache(maxsize=None)
def _tiny(representation: str, relative: bool):
  config = configs.get_config('tiny')
  config.representation = representation
  config.model.relative = relative
  config.model.dropout = 0.1  # dropout must be off in eval mode: the cache tests check that too
  model = train.build_model(config, nnx.Rngs(0))
  return config, model


@pytest.fixture
def tiny_model():
  """(representation, relative) -> (config, model in eval mode); models are built once."""
  def get(representation: str = 'cp', relative: bool = False):
    config, model = _tiny(representation, relative)
    model.eval()
    return config, model
  return get
