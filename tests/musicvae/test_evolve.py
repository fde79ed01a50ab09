"""Deep Interactive Evolution engine: population, crossover, mutation, undo, save/load."""

import json

import numpy as np
import pytest

from common.errors import UserError
from musicvae import evolve


def _run(evo, selections, sigmas=None):
  for i, sel in enumerate(selections):
    evo.next_generation(sel, sigma=None if sigmas is None else sigmas[i])
  return evo.population


@pytest.mark.parametrize('keep_selected', evolve.KEEP_SELECTED)
@pytest.mark.parametrize('crossover', evolve.CROSSOVERS)
def test_population_size_constant(keep_selected, crossover):
  evo = evolve.Evolution(z_dim=6, seed=1, keep_selected=keep_selected, crossover=crossover)
  assert evo.population.shape == (8, 6)
  for sel in ([0], [1, 2], list(range(8)), [7, 3, 5], [4]):
    assert evo.next_generation(sel).shape == (8, 6)
    g = evo.history[-1]
    assert len(g.origins) == 8 and g.parents_N2.shape == (8, 2)
    num_kept = 0 if keep_selected == 'none' else len(sel)
    assert g.origins.count('foreign') == min(2, 8 - num_kept)
    np.testing.assert_array_equal(g.parents_N2[:num_kept], np.array([sel, sel]).T[:num_kept])
  assert evo.generation == 5 and len(evo.history) == 6


def test_defaults_follow_the_seed_write_up():
  evo = evolve.Evolution(z_dim=4)
  assert (evo.population_size, evo.crossover, evo.mutation_probability,
          evo.component_probability, evo.keep_selected) == (8, 'uniform', 0.5, 0.5, 'mutated')
  assert 0.0 <= evo.sigma <= 1.0
  assert evolve.Evolution(z_dim=4, elitism=True).keep_selected == 'unchanged'


def test_selected_vectors_are_kept_and_mutated_like_the_children():
  """The write-up's default: the k selected vectors are rows 0..k-1 of the next population, each
  mutated with probability 0.5 (about half of its components get noise), the others untouched;
  then crossover children, then the foreign vectors."""
  kept_mutated = kept_unchanged = 0
  for seed in range(40):
    evo = evolve.Evolution(z_dim=200, seed=seed, sigma=0.3)
    before = evo.population
    after = evo.next_generation([5, 2])
    g = evo.history[-1]
    assert g.origins[2:6] == tuple(o for o in g.origins[2:6] if o in ('child', 'mutant'))
    assert g.origins[6:] == ('foreign', 'foreign')
    for row, index in enumerate([5, 2]):
      changed = after[row] != before[index]
      if g.origins[row] == 'mutant':
        kept_mutated += 1
        assert 0.35 < changed.mean() < 0.65
        np.testing.assert_allclose(np.std((after[row] - before[index])[changed]), 0.3, rtol=0.3)
      else:
        assert g.origins[row] == 'elite' and not changed.any()
        kept_unchanged += 1
  assert 20 < kept_mutated < 60 and 20 < kept_unchanged < 60  # p 0.5 of 80


def test_keep_selected_none_is_the_earlier_behaviour():
  """keep_selected='none' breeds an all-new population, as sessions saved in version 1 without
  elitism did; a version-1 file loads with the behaviour it had."""
  evo = evolve.Evolution(z_dim=8, seed=3, keep_selected='none')
  before = evo.population
  after = evo.next_generation([1])
  assert 'elite' not in evo.history[-1].origins
  assert not any(np.array_equal(row, before[1]) for row in after[evo.history[-1].origins.index(
      'foreign'):])
  for elitism, expected in ((False, 'none'), (True, 'unchanged')):
    state = evolve.Evolution(z_dim=3, seed=1, keep_selected=expected).to_dict()
    state['version'] = 1
    del state['config']['keep_selected']
    state['config']['elitism'] = elitism
    assert evolve.Evolution.from_dict(state).keep_selected == expected


def test_uniform_children_take_each_component_from_a_parent():
  """With sigma 0, every child component equals the same component of one of its two parents,
  and both parents contribute over the children (uniform 50/50 crossover)."""
  evo = evolve.Evolution(z_dim=64, seed=3, sigma=0.0, num_foreign=0)
  before = evo.population
  after = evo.next_generation([2, 5])
  g = evo.history[-1]
  assert set(g.parents_N2.ravel()) <= {2, 5}
  from_a = from_b = 0
  for child, (pa, pb) in zip(after, g.parents_N2):
    assert np.all((child == before[pa]) | (child == before[pb]))
    if pa != pb:
      from_a += np.sum(child == before[pa])
      from_b += np.sum(child == before[pb])
  assert from_a > 0 and from_b > 0


def test_mutation_changes_children_only_when_sigma_is_positive():
  evo = evolve.Evolution(z_dim=32, seed=4, sigma=1.0, mutation_probability=1.0,
                         component_probability=1.0, num_foreign=0)
  before = evo.population
  after = evo.next_generation([0])
  assert set(evo.history[-1].origins) == {'mutant'}
  assert not np.any(after == before[0])  # every component got noise
  np.testing.assert_allclose(np.std(after - before[0]), 1.0, atol=0.2)


def test_selection_unchanged_cases():
  """Three ways the selection survives exactly (bitwise):
  (a) elitism: the selected vectors are rows 0..k-1 of the next population, whatever sigma;
  (b) one selected vector, sigma 0, no foreign vectors: every row equals it (crossover of a vector
      with itself is itself, and noise of sigma 0 is zero), for both crossovers;
  (c) mutation_probability 0, one selected vector, no foreign: every row equals it, any sigma."""
  evo = evolve.Evolution(z_dim=16, seed=5, elitism=True, sigma=1.0)
  before = evo.population
  after = evo.next_generation([6, 1, 3])
  np.testing.assert_array_equal(after[:3], before[[6, 1, 3]])
  assert evo.history[-1].origins[:3] == ('elite',) * 3
  assert not np.any(np.all(after[3:] == before[6], axis=1))  # the others are new

  for crossover in evolve.CROSSOVERS:
    evo = evolve.Evolution(z_dim=16, seed=6, sigma=0.0, num_foreign=0, crossover=crossover,
                           mutation_probability=1.0, component_probability=1.0)
    before = evo.population
    np.testing.assert_array_equal(evo.next_generation([4]), np.repeat(before[[4]], 8, axis=0))

  evo = evolve.Evolution(z_dim=16, seed=7, sigma=1.0, num_foreign=0, mutation_probability=0.0)
  before = evo.population
  np.testing.assert_array_equal(evo.next_generation([2]), np.repeat(before[[2]], 8, axis=0))


def test_same_seed_same_run_other_seed_other_run():
  selections, sigmas = [[0, 1], [3], [2, 4, 6], [5]], [None, 0.1, 0.9, 0.0]
  a = _run(evolve.Evolution(z_dim=10, seed=11), selections, sigmas)
  b = _run(evolve.Evolution(z_dim=10, seed=11), selections, sigmas)
  c = _run(evolve.Evolution(z_dim=10, seed=12), selections, sigmas)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_undo_restores_population_and_rng():
  evo = evolve.Evolution(z_dim=10, seed=13, crossover='slerp')
  gen0 = evo.population
  gen1 = evo.next_generation([1, 2])
  gen2 = evo.next_generation([0])
  np.testing.assert_array_equal(evo.undo(), gen1)
  assert evo.generation == 1
  np.testing.assert_array_equal(evo.next_generation([0]), gen2)  # redo: the same draw
  evo.undo()
  other = evo.next_generation([3, 4], sigma=0.3)  # a different choice after an undo
  assert not np.allclose(other, gen2)
  evo.undo()
  np.testing.assert_array_equal(evo.undo(), gen0)
  with pytest.raises(UserError, match='nothing to undo'):
    evo.undo()


@pytest.mark.parametrize('crossover', evolve.CROSSOVERS)
def test_save_load_resumes_identically(tmp_path, crossover):
  path = str(tmp_path / 'sub' / 'session.json')
  evo = evolve.Evolution(z_dim=12, seed=21, crossover=crossover, elitism=True, num_foreign=1)
  _run(evo, [[0, 1], [7], [2, 3, 4]], [0.2, None, 0.7])
  evo.save(path)
  assert sorted(p.name for p in (tmp_path / 'sub').iterdir()) == ['session.json']  # no tmp left
  loaded = evolve.Evolution.load(path)
  assert loaded.config() == evo.config() and loaded.generation == evo.generation
  for g, h in zip(evo.history, loaded.history):
    np.testing.assert_array_equal(g.population_NZ, h.population_NZ)
    np.testing.assert_array_equal(g.parents_N2, h.parents_N2)
    assert (g.origins, g.selected, g.sigma) == (h.origins, h.selected, h.sigma)
  np.testing.assert_array_equal(loaded.next_generation([1, 5]), evo.next_generation([1, 5]))
  np.testing.assert_array_equal(loaded.undo(), evo.undo())
  np.testing.assert_array_equal(loaded.undo(), evo.undo())  # undo across the save point
  np.testing.assert_array_equal(loaded.next_generation([6], sigma=0.5),
                                evo.next_generation([6], sigma=0.5))


def test_load_rejects_bad_files(tmp_path):
  bad_json = tmp_path / 'bad.json'
  bad_json.write_text('{not json')
  with pytest.raises(UserError, match='cannot read'):
    evolve.Evolution.load(str(bad_json))
  with pytest.raises(UserError, match='cannot read'):
    evolve.Evolution.load(str(tmp_path / 'missing.json'))
  other = tmp_path / 'other.json'
  other.write_text(json.dumps({'format': 'something else'}))
  with pytest.raises(UserError, match='not a saved evolution'):
    evolve.Evolution.load(str(other))
  state = evolve.Evolution(z_dim=3).to_dict()
  state['history'][0]['population'] = [[1.0, 2.0]]
  with pytest.raises(UserError, match='bad saved state'):
    evolve.Evolution.from_dict(state)


def test_slerp_children_lie_on_the_arc():
  """Unit-norm parents: a slerp child has norm 1 and lies in the plane of its two parents, on the
  short arc between them (its angle to each parent is at most the parents' angle)."""
  rng = np.random.default_rng(0)
  unit_NZ = rng.normal(size=(8, 20))
  unit_NZ /= np.linalg.norm(unit_NZ, axis=1, keepdims=True)
  evo = evolve.Evolution(z_dim=20, seed=8, crossover='slerp', num_foreign=0,
                         mutation_probability=0.0, initial_population=unit_NZ)
  children = evo.next_generation([0, 3, 5])
  pairs = evo.history[-1].parents_N2
  np.testing.assert_allclose(np.linalg.norm(children, axis=1), 1.0, rtol=1e-12)
  for child, (pa, pb) in zip(children, pairs):
    a, b = unit_NZ[pa], unit_NZ[pb]
    basis, _ = np.linalg.qr(np.stack([a, b], axis=1))
    np.testing.assert_allclose(basis @ (basis.T @ child), child, atol=1e-12)
    angle = lambda u, v: np.arccos(np.clip(u @ v, -1, 1))
    np.testing.assert_allclose(angle(a, child) + angle(child, b), angle(a, b), atol=1e-7)
  # Uniform crossover of the same parents leaves the sphere (the reason slerp exists).
  evo = evolve.Evolution(z_dim=20, seed=8, num_foreign=0, mutation_probability=0.0,
                         initial_population=unit_NZ)
  mixed = evo.next_generation([0, 3, 5])[evo.history[-1].parents_N2[:, 0] !=
                                          evo.history[-1].parents_N2[:, 1]]
  assert len(mixed) and not np.allclose(np.linalg.norm(mixed, axis=1), 1.0)


@pytest.mark.parametrize('selection,match', [
    ([], 'at least one'), ([8], 'out of range'), ([-1], 'out of range'), ([1, 1], 'repeat'),
    ([0.5], 'integer'), (['a'], 'integer')])
def test_bad_selection_is_a_user_error(selection, match):
  evo = evolve.Evolution(z_dim=4)
  with pytest.raises(UserError, match=match):
    evo.next_generation(selection)
  assert evo.generation == 0  # nothing changed


@pytest.mark.parametrize('kwargs', [
    dict(z_dim=0), dict(population_size=0), dict(crossover='blend'),
    dict(mutation_probability=1.5), dict(component_probability=-0.1), dict(sigma=-1.0),
    dict(sigma=float('nan')), dict(num_foreign=9), dict(initial_population=np.zeros((3, 4))),
    dict(keep_selected='all')])
def test_bad_config_is_a_user_error(kwargs):
  with pytest.raises(UserError):
    evolve.Evolution(**{'z_dim': 4, **kwargs})
  with pytest.raises(UserError, match='sigma'):
    evolve.Evolution(z_dim=4).next_generation([0], sigma=-0.1)


def test_all_foreign_is_random_sampling():
  """num_foreign = N, keeping nothing, ignores the selection: fresh N(0, I) each generation."""
  evo = evolve.Evolution(z_dim=5, num_foreign=8, keep_selected='none')
  assert set(evo.history[0].origins) == {'initial'}
  evo.next_generation([0])
  assert set(evo.history[-1].origins) == {'foreign'}
