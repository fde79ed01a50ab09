"""PianoNet evaluation on the tiny config: BCE against the base rate, generated key-down rate."""

import math

from flax import nnx
import numpy as np

from pianonet import configs
from pianonet import evaluate
from pianonet import model as model_lib
from pianonet import train


def test_base_rate_bce_is_the_binary_entropy():
  assert math.isclose(evaluate.base_rate_bce(0.5), math.log(2))
  assert math.isclose(evaluate.base_rate_bce(0.1), -(0.1 * math.log(0.1) + 0.9 * math.log(0.9)))
  assert evaluate.base_rate_bce(0.0) < 1e-6


def test_untrained_model_at_the_base_rate_scores_the_base_rate_bce(capsys):
  """A model whose output is the constant logit of the windows' key-down rate must score exactly
  the base-rate BCE; the generated rate and the printed table come out too."""
  c = configs.get_config('tiny')
  c.cache_dir = ''
  model = model_lib.build_model(c, nnx.Rngs(0))
  seq = train.get_split(c, 'valid')
  rate = evaluate.window_bce(model, c, seq, 8)['target_down_rate']
  # Zero the convs' output weights: the logit is the output bias alone.
  model.output.kernel[...] = np.zeros_like(model.output.kernel[...])
  model.output.bias[...] = np.full_like(model.output.bias[...], math.log(rate / (1 - rate)))
  results = evaluate.evaluate_from_flags(model, c, dict(split='valid', num_windows=8,
                                                        num_samples=2, seconds=0.5))
  assert math.isclose(results['bce'], results['base_rate_bce'], rel_tol=1e-4)
  assert results['windows'] == len(train.eval_window_ends(seq.num_steps, c.predicted_steps, 8))
  assert 0 <= results['generated_down_rate'] <= 1
  assert len(results['generated_down_rate_per_sample']) == 2
  assert 'base-rate BCE' in capsys.readouterr().out


def test_bad_options_are_one_user_error_before_any_data_is_read():
  import pytest
  from common.errors import UserError
  c = configs.get_config('tiny')
  c.cache_dir = ''
  model = model_lib.build_model(c, nnx.Rngs(0))
  for bad in (dict(num_samples=0), dict(seconds=0.0), dict(num_windows=0)):
    with pytest.raises(UserError, match='--num_samples >= 1'):
      evaluate.evaluate_from_flags(model, c, dict(split='valid', **bad))
