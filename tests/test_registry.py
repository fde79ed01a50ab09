"""experiments/registry.py: the explicit name -> model mapping the entry points use."""

import pytest

from common.errors import UserError
from experiments import registry


def test_every_model_is_registered_with_its_own_tasks():
  assert sorted(registry.MODELS) == ['coconet', 'cpword', 'musicvae', 'pianonet']
  for name, entry in registry.MODELS.items():
    train, generator, evaluate = entry.modules()
    # The registry names the tasks without importing the model (fast flag checks): same list.
    assert entry.tasks == generator.TASKS, name
    assert callable(train.get_task) and callable(generator.generate_pieces), name
    assert callable(evaluate.evaluate_from_flags), name


def test_unknown_model_is_a_user_error():
  with pytest.raises(UserError, match='not one of coconet, musicvae, pianonet, cpword'):
    registry.entry({'task': 'nope'})
