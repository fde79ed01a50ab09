"""Simulated user for Deep Interactive Evolution: latent space, the decode path, determinism."""

import functools

from flax import nnx
import jax
import numpy as np
import pytest

from common.errors import UserError
from musicvae import configs
from musicvae import sample
from musicvae import simulate
from musicvae import train

SEEDS = list(range(12))


@functools.lru_cache(maxsize=None)
def _model():
  return train.build_model(configs.get_config('tiny'), nnx.Rngs(0))


def _latent(method, seeds=SEEDS, z_dim=8, **kwargs):
  scorer = simulate.latent_scorer(simulate.prior_targets(seeds, z_dim))
  return simulate.run_trials(method, scorer, z_dim=z_dim, seeds=seeds, **kwargs)


def test_evolution_beats_random_sampling_in_latent_space():
  """z 8, cosine >= 0.9, 12 seeds: a random N(0, I) vector is that close with probability ~0.2%,
  so random sampling needs ~60 populations of 8 and mostly hits the cap of 50; evolution steers
  towards the target in ~11. The margin (< half) leaves room for any change of random stream."""
  evolution, rnd = _latent('evolution'), _latent('random')
  assert evolution.misses == 0
  assert evolution.mean_generations < 0.5 * rnd.mean_generations
  assert all(1 <= g <= 50 for g in evolution.generations)
  # Both methods show the same first population, so a hit in generation 1 is shared.
  assert [g == 1 for g in evolution.generations] == [g == 1 for g in rnd.generations]


def test_deterministic_for_a_seed():
  a = _latent('evolution', crossover='slerp', sigma=0.3)
  b = _latent('evolution', crossover='slerp', sigma=0.3)
  assert a == b
  one = _latent('evolution', seeds=[5], crossover='slerp', sigma=0.3)
  assert one.generations == [a.generations[5]]  # a trial does not depend on the others
  assert _latent('random') == _latent('random')
  runs = [simulate.simulate_main(z_dim=6, num_seeds=4, max_generations=20) for _ in range(2)]
  for summary in runs:
    for r in summary['methods'].values():
      assert r.pop('seconds') >= 0  # the only field that may differ
  assert runs[0] == runs[1]
  summary = runs[0]
  assert set(summary['methods']['evolution']) >= {'mean_generations', 'misses', 'generations'}


def test_simulated_user_and_similarities():
  np.testing.assert_array_equal(simulate.select_closest(np.array([0.1, 0.9, 0.5, 0.9]), 2),
                                [1, 3])
  target = np.array([[[2], [0], [1], [0]]])  # one note, held, then released
  tokens = np.array([[[[2], [0], [1], [0]], [[2], [0], [0], [0]], [[0], [0], [0], [0]]]])
  np.testing.assert_allclose(simulate.token_accuracy(tokens, target), [[1.0, 0.75, 0.5]])
  np.testing.assert_allclose(simulate.event_f1(tokens, target), [[1.0, 2 / 3, 0.0]])
  silent = np.zeros((1, 4, 1), np.int64)
  np.testing.assert_allclose(simulate.event_f1(silent[:, None], silent), [[1.0]])
  z = np.array([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]])
  np.testing.assert_allclose(simulate.cosine_similarity(z, np.array([[2.0, 0.0]])),
                             [[1.0, 0.0, -1.0]])


def test_target_in_first_population_is_generation_one():
  rng = np.random.default_rng(3)  # evolution's first population for seed 3
  first = rng.standard_normal((8, 4))
  scorer = simulate.latent_scorer(first[[5]])
  for method in simulate.METHODS:
    result = simulate.run_trials(method, scorer, z_dim=4, seeds=[3])
    assert result.generations == [1] and result.best_similarity == [pytest.approx(1.0)]


def test_bad_settings_are_user_errors():
  with pytest.raises(UserError):
    _latent('annealing')
  with pytest.raises(UserError):
    _latent('evolution', num_selected=9)
  with pytest.raises(UserError):
    _latent('random', max_generations=0)
  with pytest.raises(UserError, match='--workdir'):
    simulate.simulate_main(measure='tokens')
  with pytest.raises(UserError):
    simulate.simulate_main(num_seeds=0)


def test_batched_decoder_matches_decode_tokens():
  model = _model()
  z = np.random.default_rng(0).standard_normal((11, model.z_dim)).astype(np.float32)
  decode = simulate.make_decoder(model, batch_size=4)  # 3 chunks, the last one padded
  want = sample.decode_tokens(model, z, jax.random.key(0), temperature=0.0)
  np.testing.assert_array_equal(decode(z), want)
  assert decode(z[:0]).shape == (0, 32, 1)


def test_music_scorer_on_a_tiny_model():
  """Through the decode path: a candidate at z* decodes to the target exactly (similarity 1), and
  both methods run to completion with per-trial results in range."""
  model = _model()
  seeds = [0, 1, 2]
  targets = simulate.prior_targets(seeds, model.z_dim)
  decode = simulate.make_decoder(model, batch_size=len(seeds) * 8)
  for measure in ('tokens', 'notes'):
    scorer = simulate.music_scorer(decode, decode(targets), measure)
    z_MNZ = np.random.default_rng(1).standard_normal((3, 8, model.z_dim))
    z_MNZ[:, 4] = targets
    similarity = scorer(np.arange(3), z_MNZ)
    assert similarity.shape == (3, 8) and np.all((0 <= similarity) & (similarity <= 1))
    np.testing.assert_array_equal(similarity[:, 4], 1.0)
    for method in simulate.METHODS:
      result = simulate.run_trials(method, scorer, z_dim=model.z_dim, seeds=seeds,
                                   max_generations=5, threshold=0.95)
      assert all(g is None or 1 <= g <= 5 for g in result.generations)


def test_attribute_scorer():
  """1 - |attribute - value| of each decoded candidate's melody, the same value for all trials."""
  melodies_BTK = np.array([[[0], [0], [0], [0]],      # silent: 0 onsets
                           [[50], [0], [1], [0]],     # 1 onset in 4 steps
                           [[50], [52], [54], [55]]])  # 4 onsets

  def decode(z_BZ):  # z[0] in [i, i + 1) decodes to melody i (clipped to 0..2)
    return melodies_BTK[np.clip(np.floor(z_BZ[:, 0]), 0, 2).astype(int)]

  scorer = simulate.attribute_scorer(decode, sample.note_density, 0.25)
  z_MNZ = np.array([[[0.0, 0.0], [1.0, 0.0]], [[2.0, 5.0], [1.0, 1.0]]])
  np.testing.assert_allclose(scorer(np.array([0, 1]), z_MNZ), [[0.75, 1.0], [0.25, 1.0]])
  # The share of 4,096 prior samples that reach the threshold: those with 1 <= z[0] < 2.
  rate = simulate.prior_hit_rate(scorer, z_dim=2, threshold=0.99)
  np.testing.assert_allclose(rate, 0.9772 - 0.8413, atol=0.02)  # Phi(2) - Phi(1)


def test_attribute_measure_settings():
  with pytest.raises(UserError, match='--workdir'):
    simulate.simulate_main(measure='attribute', attribute='note_density', attribute_value=0.5)
  with pytest.raises(UserError, match='--attribute_value'):
    simulate.simulate_main('some/run', measure='attribute', attribute='density',
                           attribute_value=0.5)
  with pytest.raises(UserError, match='not --target'):
    simulate.simulate_main('some/run', measure='attribute', target='eval',
                           attribute='note_density', attribute_value=0.5)
  with pytest.raises(UserError, match='--measure=attribute'):
    simulate.simulate_main(attribute='note_density')


@pytest.mark.slow
def test_simulate_main_with_a_trained_tiny_workdir(tiny_musicvae_workdir):
  workdir = tiny_musicvae_workdir
  summary = simulate.simulate_main(workdir, num_seeds=3, max_generations=4, threshold=0.95)
  assert (summary['measure'], summary['target'], summary['z_dim']) == ('tokens', 'eval', 8)
  assert summary['methods']['evolution']['trials'] == 3
  again = simulate.simulate_main(workdir, num_seeds=3, max_generations=4, threshold=0.95,
                                 measure='notes', target='prior')
  assert again['measure'] == 'notes'
  wanted = simulate.simulate_main(workdir, num_seeds=3, max_generations=4, threshold=0.99,
                                  measure='attribute', attribute='note_density',
                                  attribute_value=0.25)
  assert wanted['target'] == 'note_density=0.25'
  assert all(0 <= s <= 1 for s in wanted['methods']['random']['best_similarity'])
