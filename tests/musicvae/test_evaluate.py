"""MusicVAE evaluation: the unigram baseline on hand values, and the CLI path on a tiny run."""

import math

import numpy as np
import pytest

from common import training
from common.errors import UserError
from musicvae import evaluate
from musicvae import train


def test_unigram_baseline_by_hand():
  train_NTK = np.array([[[0], [0], [0], [1]]])  # counts 3, 1, 0 -> +1 smoothing: 4, 2, 1 of 7
  eval_NTK = np.array([[[0], [1]]])
  got = evaluate.unigram_baseline(train_NTK, eval_NTK, (3,))
  assert got['baseline_accuracy'] == 0.5
  np.testing.assert_allclose(got['baseline_ce_per_step'],
                             -(math.log(4 / 7) + math.log(2 / 7)) / 2, rtol=1e-9)


def test_evaluate_from_flags_reports_accuracies_and_baseline(tiny_musicvae_workdir, capsys):
  config = training.read_config(tiny_musicvae_workdir)
  model = training.load_model(train.get_task(config), config, tiny_musicvae_workdir)
  results = evaluate.evaluate_from_flags(model, config, {'split': 'test', 'max_pieces': 5})
  assert results['slices'] == 5
  for key in ('accuracy', 'sampled_accuracy', 'baseline_accuracy'):
    assert 0.0 <= results[key] <= 1.0
  assert results['kl'] >= 0 and results['baseline_ce_per_step'] > 0
  assert 'teacher-forced accuracy' in capsys.readouterr().out


def test_evaluate_bad_max_pieces_is_a_user_error(tiny_musicvae_workdir):
  config = training.read_config(tiny_musicvae_workdir)
  model = training.load_model(train.get_task(config), config, tiny_musicvae_workdir)
  with pytest.raises(UserError, match='max_pieces'):
    evaluate.evaluate_from_flags(model, config, {'split': 'test', 'max_pieces': 0})
