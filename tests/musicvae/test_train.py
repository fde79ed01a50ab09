"""MusicVAE loss pieces on hand-computed values, data plumbing, and a few real training steps."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from common import training
from musicvae import configs
from musicvae import data
from musicvae import train


def test_free_bits():
  kl = jnp.array([0.0, 10.0, 100.0])
  # 10 free bits = 10 ln 2 = 6.931 nats.
  np.testing.assert_allclose(train.free_bits_kl_cost(kl, 10.0),
                             [0.0, 10.0 - 10 * math.log(2), 100.0 - 10 * math.log(2)], rtol=1e-6)
  np.testing.assert_allclose(train.free_bits_kl_cost(kl, 0.0), kl)


def test_beta_schedule():
  np.testing.assert_allclose(train.beta_schedule(0, 0.2, 0.99999), 0.0)
  np.testing.assert_allclose(train.beta_schedule(1, 0.2, 0.5), 0.1)
  np.testing.assert_allclose(train.beta_schedule(2, 0.2, 0.5), 0.15)
  np.testing.assert_allclose(train.beta_schedule(100000, 0.2, 0.99999), 0.2 * (1 - math.exp(-1)),
                             rtol=1e-3)


def test_sampling_probability_inverse_sigmoid():
  k = 1000.0
  for step in (0, 1000, 7000, 20000):
    want = 1 - k / (k + math.exp(step / k))
    np.testing.assert_allclose(train.sampling_probability(step, 'inverse_sigmoid', k), want,
                               rtol=1e-5, atol=1e-7)
  assert float(train.sampling_probability(10**6, 'inverse_sigmoid', k)) == 1.0  # no overflow
  assert float(train.sampling_probability(5, 'constant', 0.0)) == 0.0


def test_kl_divergence():
  mu = jnp.array([[0.0, 0.0], [1.0, 2.0]])
  sigma = jnp.array([[1.0, 1.0], [0.5, 1.0]])
  want = [0.0, 0.5 * (1 + 0.25 - 1) - math.log(0.5) + 0.5 * 4]
  np.testing.assert_allclose(train.kl_divergence(mu, sigma), want, rtol=1e-6)


def test_reconstruction_sums_over_steps():
  logits = jnp.zeros((1, 4, 3))  # uniform: CE = ln 3 per step
  tokens = jnp.zeros((1, 4, 1), jnp.int32)
  ce, acc = train.reconstruction(logits, tokens, (3,))
  np.testing.assert_allclose(ce, [4 * math.log(3)], rtol=1e-6)
  np.testing.assert_allclose(acc, [1.0])  # argmax of a tie is class 0


def test_learning_rate_schedule():
  config = configs.get_config('tiny')
  config.learning_rate, config.min_learning_rate, config.decay_rate = 1e-3, 1e-5, 0.9999
  tx = train.make_optimizer(config)
  params = {'w': jnp.zeros(())}
  state = tx.init(params)
  # With Adam, the first update is -lr * sign(grad) (up to eps); after clipping too.
  updates, _ = tx.update({'w': jnp.ones(())}, state, params)
  np.testing.assert_allclose(updates['w'], -1e-3, rtol=1e-4)


def test_train_iterator_transposes_within_range():
  config = configs.get_config('tiny')
  it = train.train_iterator(config, 0, 1)
  batch = next(it)
  tokens = batch['tokens']
  assert tokens.shape == (config.batch_size, 32, 1) and tokens.dtype == np.int32
  assert tokens.min() >= 0 and tokens.max() < 90
  slices, stats = train.load_slices(config, 'train')
  assert stats['slices_kept'] == len(slices) > 0
  # Synthetic melodies are C major; some transposed batch holds a note outside C major.
  pitches = tokens[tokens >= 2] - 2 + 21
  assert np.any(~np.isin(pitches % 12, [0, 2, 4, 5, 7, 9, 11]))


@pytest.mark.parametrize('variant,mixed_precision', [
    ('tiny', False), ('tiny', True), pytest.param('tiny_hier', False, marks=pytest.mark.slow)])
def test_training_reduces_loss(tmp_path, variant, mixed_precision):
  config = configs.get_config(variant)
  config.mixed_precision = mixed_precision
  config.num_train_steps = 30
  config.log_every_steps = 1
  config.eval_every_steps = 30
  config.checkpoint_every_steps = 30
  config.learning_rate = 1e-2
  task = train.get_task(config)
  model = training.train_and_evaluate(task, config, str(tmp_path))
  with open(os.path.join(tmp_path, training.METRICS_FILE)) as f:
    records = [json.loads(line) for line in f]
  train_recs = [r for r in records if r['split'] == 'train']
  first, last = train_recs[0], train_recs[-1]
  assert last['recon_loss'] < 0.8 * first['recon_loss']
  assert 0 < last['beta'] < config.loss.max_beta
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and {'accuracy', 'sampled_accuracy', 'kl', 'recon_loss'} <= set(evals[-1])
  assert 0 <= evals[-1]['sampled_accuracy'] <= 1
  assert model.z_dim == config.model.z_dim


def test_flat_16bar_matches_hier_parameter_count():
  hier = train.describe(configs.get_config('mel_16bar_hier'))
  flat = train.describe(configs.get_config('mel_16bar_flat'))
  assert abs(flat['decoder'] - hier['decoder']) / hier['decoder'] < 0.001
  assert flat['encoder'] == hier['encoder']


def test_unknown_variant_is_a_user_error():
  from common.errors import UserError
  with pytest.raises(UserError):
    configs.get_config('nope')


def test_batched_transpositions_keep_every_track_in_range_and_vary():
  from musicvae import train as train_lib  # pylint: disable=g-import-not-at-top
  enc = data.Encoding(kind='melody', num_bars=2)
  rng = np.random.default_rng(0)
  slices = rng.integers(0, data.MELODY_CLASSES, size=(50, 32, 1)).astype(np.int16)
  slices[0] = 0  # no notes: never moved
  slices[1, :, 0] = np.where(slices[1, :, 0] >= 2, 2, slices[1, :, 0])  # the lowest pitch only
  make_batch = train_lib.transposed_batches(slices, enc, max_shift=5, seed=0)
  shifts = []
  for epoch in range(20):
    batch = make_batch(np.arange(50), np.full(50, epoch))['tokens']
    notes = batch[batch >= 2]
    assert notes.min() >= 2 and notes.max() < data.MELODY_CLASSES
    np.testing.assert_array_equal(batch[0], 0)
    assert (batch[1][slices[1] >= 2] >= 2).all()  # only moved up
    moved = batch[:, :, 0] - slices[:, :, 0]
    shifts.append(moved[2][slices[2, :, 0] >= 2][0])
    # Each slice is moved as a whole and only its pitched tokens move.
    np.testing.assert_array_equal(batch[slices < 2], slices[slices < 2])
    assert data.valid_transpositions(slices[2], enc, 5).count(int(shifts[-1])) == 1
  assert len(set(shifts)) > 3
