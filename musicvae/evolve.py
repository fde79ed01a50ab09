"""Deep Interactive Evolution (Bontrager et al. 2018) over latent vectors: the user picks the
samples they like, and the next population is bred from the picked latent vectors.

    evo = Evolution(z_dim=256, seed=0)
    z_NZ = evo.population                     # decode and show these 8
    z_NZ = evo.next_generation([2, 5])        # the user liked candidates 2 and 5
    z_NZ = evo.next_generation([1], sigma=0.2)
    evo.undo()                                # back one generation (RNG included)
    evo.save('session.json'); evo = Evolution.load('session.json')

The engine knows nothing of models or UIs: it maps numpy vectors (N, Z) to numpy vectors (N, Z),
and every random draw comes from one numpy Generator seeded by `seed`, so a session is
reproducible from its seed and the selections, and its whole state (RNG included) is saved.

Defaults follow the seed write-up's variant: population 8; the selected vectors stay in the next
population and, with the crossover children, each is mutated with probability 0.5, each of its
components then with probability 0.5 getting N(0, sigma) noise; children by uniform per-component
crossover (50/50 from either parent); a few foreign N(0, I) vectors for diversity.
Choices the write-up leaves open, and where this differs from the original app:
- num_foreign defaults to 2, the original app's count (min(N - k, 2)); the write-up gives none.
- sigma defaults to 0.5, the middle of the write-up's [0, 1] slider; any sigma >= 0 is accepted.
- keep_selected says what becomes of the k selected vectors: 'mutated' (the default, the
  write-up) keeps them and mutates them like the children; 'unchanged' keeps them as they are
  (the original app's elites; `elitism=True` is the same); 'none' breeds an all-new population
  (children, then foreign vectors). With kept vectors the split is the original app's: the k
  kept, then max(N - k - F, 0) children and min(F, N - k) foreign vectors.
- An empty selection is a UserError (there is nothing to breed from); a UI that wants "none of
  these" to mean "start afresh" can make a new Evolution with another seed.
- Foreign vectors are never mutated.

Order of the next population: [kept (selection order)] [children] [foreign]. `history` records
for each generation where every vector came from (origins: a kept vector is 'elite', or 'mutant'
when mutated, with itself as both parents), the selection and the sigma.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np

from common import files
from common.errors import UserError

CROSSOVERS = ('uniform', 'slerp')
KEEP_SELECTED = ('mutated', 'unchanged', 'none')
FORMAT = 'musicvae.evolve'
VERSION = 2  # 1: no keep_selected; its elitism False meant 'none' and True 'unchanged'
# What a population row is: the first population, a kept selection, a crossover child, a mutated
# child or kept vector, or a fresh N(0, I) vector.
ORIGINS = ('initial', 'elite', 'child', 'mutant', 'foreign')


@dataclasses.dataclass(frozen=True)
class Generation:
  """One population and how it was made.

  population_NZ: the vectors. origins: one of ORIGINS per row. parents_N2: indices into the
  previous population (-1 where none; an elite is its own parent twice). selected: the indices of
  the previous population the user chose (empty for generation 0). sigma: the mutation sigma used.
  """
  population_NZ: np.ndarray
  origins: tuple[str, ...]
  parents_N2: np.ndarray
  selected: tuple[int, ...] = ()
  sigma: float | None = None


def slerp_rows(a_NZ: np.ndarray, b_NZ: np.ndarray, t_N: np.ndarray) -> np.ndarray:
  """Row-wise spherical interpolation; linear where a row pair is (anti)parallel or zero."""
  a_NZ, b_NZ = np.asarray(a_NZ, np.float64), np.asarray(b_NZ, np.float64)
  t_N1 = np.asarray(t_N, np.float64)[:, None]
  norms = np.linalg.norm(a_NZ, axis=1) * np.linalg.norm(b_NZ, axis=1)
  cos_N = np.sum(a_NZ * b_NZ, axis=1) / np.where(norms > 0, norms, 1.0)
  omega_N1 = np.arccos(np.clip(cos_N, -1.0, 1.0))[:, None]
  sin_N1 = np.sin(omega_N1)
  linear = sin_N1 < 1e-6
  safe = np.where(linear, 1.0, sin_N1)
  spherical = (np.sin((1 - t_N1) * omega_N1) * a_NZ + np.sin(t_N1 * omega_N1) * b_NZ) / safe
  out_NZ = np.where(linear, (1 - t_N1) * a_NZ + t_N1 * b_NZ, spherical)
  # A parent crossed with itself stays exactly itself (no rounding from the formulas above).
  return np.where(np.all(a_NZ == b_NZ, axis=1, keepdims=True), a_NZ, out_NZ)


class Evolution:
  """A population of latent vectors bred from the user's selections, one generation at a time."""

  def __init__(self, z_dim: int, population_size: int = 8, seed: int = 0,
               crossover: str = 'uniform', mutation_probability: float = 0.5,
               component_probability: float = 0.5, sigma: float = 0.5, num_foreign: int = 2,
               keep_selected: str = 'mutated', elitism: bool = False,
               initial_population: np.ndarray | None = None):
    """The first population is `initial_population` (N, Z) if given, else N(0, I) draws.
    elitism=True is keep_selected='unchanged'."""
    if int(z_dim) < 1:
      raise UserError(f'evolution: z_dim must be >= 1, got {z_dim}')
    if int(population_size) < 1:
      raise UserError(f'evolution: population_size must be >= 1, got {population_size}')
    if crossover not in CROSSOVERS:
      raise UserError(f'evolution: crossover must be one of {", ".join(CROSSOVERS)}, '
                      f'got {crossover!r}')
    for name, p in (('mutation_probability', mutation_probability),
                    ('component_probability', component_probability)):
      if not 0.0 <= float(p) <= 1.0:
        raise UserError(f'evolution: {name} must be in [0, 1], got {p}')
    _check_sigma(sigma)
    if elitism:
      keep_selected = 'unchanged'
    if keep_selected not in KEEP_SELECTED:
      raise UserError(f'evolution: keep_selected must be one of {", ".join(KEEP_SELECTED)}, '
                      f'got {keep_selected!r}')
    if not 0 <= int(num_foreign) <= int(population_size):
      raise UserError(f'evolution: num_foreign must be in [0, population_size={population_size}]'
                      f', got {num_foreign}')
    self.z_dim, self.population_size, self.seed = int(z_dim), int(population_size), int(seed)
    self.crossover = crossover
    self.mutation_probability = float(mutation_probability)
    self.component_probability = float(component_probability)
    self.sigma, self.num_foreign = float(sigma), int(num_foreign)
    self.keep_selected = keep_selected
    self._rng = np.random.default_rng(self.seed)
    if initial_population is None:
      population_NZ = self._rng.standard_normal((self.population_size, self.z_dim))
    else:
      population_NZ = np.array(initial_population, np.float64)
      if population_NZ.shape != (self.population_size, self.z_dim):
        raise UserError(f'evolution: initial_population must have shape '
                        f'({self.population_size}, {self.z_dim}), got {population_NZ.shape}')
    n = self.population_size
    self._history = [Generation(population_NZ, ('initial',) * n, np.full((n, 2), -1))]
    # _rng_states[i]: the RNG state just before generation i + 1 was drawn (for undo).
    self._rng_states: list[dict[str, Any]] = []

  # ----------------------------------------------------------------------------------------------

  @property
  def population(self) -> np.ndarray:
    """The current population, float64 (N, Z) (a copy)."""
    return self._history[-1].population_NZ.copy()

  @property
  def generation(self) -> int:
    """0 for the first population, +1 per next_generation, -1 per undo."""
    return len(self._history) - 1

  @property
  def history(self) -> tuple[Generation, ...]:
    """Every generation so far, the first one first (the current one last)."""
    return tuple(self._history)

  def config(self) -> dict[str, Any]:
    return dict(z_dim=self.z_dim, population_size=self.population_size, seed=self.seed,
                crossover=self.crossover, mutation_probability=self.mutation_probability,
                component_probability=self.component_probability, sigma=self.sigma,
                num_foreign=self.num_foreign, keep_selected=self.keep_selected)

  def next_generation(self, selected_indices: Sequence[int], sigma: float | None = None
                      ) -> np.ndarray:
    """Breeds the next population from the selected rows of the current one; returns it.

    The selected vectors are kept (keep_selected 'mutated' or 'unchanged'). Each child: two
    parents drawn with replacement from the selection, crossed over (uniform: each component from
    either parent with probability 1/2; slerp: t ~ U(0, 1)). Then each child, and each kept
    vector under 'mutated', with probability mutation_probability gets N(0, sigma) noise on each
    component with probability component_probability. sigma (default: the constructor's) is for
    this generation only.
    """
    selected = self._check_selection(selected_indices)
    sigma = self.sigma if sigma is None else _check_sigma(sigma)
    parents_NZ = self._history[-1].population_NZ
    n, k = self.population_size, len(selected)
    num_kept = 0 if self.keep_selected == 'none' else k
    num_foreign = min(self.num_foreign, n - num_kept)
    num_children = n - num_kept - num_foreign
    self._rng_states.append(self._rng.bit_generator.state)
    rng = self._rng

    sel = np.array(selected, np.int64)
    pairs_C2 = sel[rng.integers(0, k, size=(num_children, 2))]
    a_CZ, b_CZ = parents_NZ[pairs_C2[:, 0]], parents_NZ[pairs_C2[:, 1]]
    if self.crossover == 'uniform':
      children_CZ = np.where(rng.random((num_children, self.z_dim)) < 0.5, a_CZ, b_CZ)
    else:
      children_CZ = slerp_rows(a_CZ, b_CZ, rng.random(num_children))
    kept_KZ = parents_NZ[sel[:num_kept]]
    # The rows that may mutate: the children, and under 'mutated' the kept vectors before them.
    mutable_MZ = (np.concatenate([kept_KZ, children_CZ]) if self.keep_selected == 'mutated' else
                  children_CZ)
    num_mutable = len(mutable_MZ)
    mutated_M = rng.random(num_mutable) < self.mutation_probability
    mask_MZ = (rng.random((num_mutable, self.z_dim)) < self.component_probability)
    noise_MZ = rng.normal(0.0, sigma, size=(num_mutable, self.z_dim))
    mutable_MZ = mutable_MZ + np.where(mask_MZ & mutated_M[:, None], noise_MZ, 0.0)
    foreign_FZ = rng.standard_normal((num_foreign, self.z_dim))

    mutated_N = np.concatenate([np.zeros(n - num_mutable - num_foreign, bool), mutated_M,
                                np.zeros(num_foreign, bool)])
    population_NZ = np.concatenate([kept_KZ[:n - num_mutable - num_foreign], mutable_MZ,
                                    foreign_FZ])
    kinds = ('elite',) * num_kept + ('child',) * num_children + ('foreign',) * num_foreign
    origins = tuple('mutant' if m else kind for m, kind in zip(mutated_N, kinds))
    parents_N2 = np.concatenate([np.repeat(sel[:num_kept, None], 2, axis=1), pairs_C2,
                                 np.full((num_foreign, 2), -1)]).astype(np.int64)
    self._history.append(Generation(population_NZ, origins, parents_N2, selected, float(sigma)))
    return self.population

  def undo(self) -> np.ndarray:
    """Back to the previous generation, RNG state included (the same selection then breeds the
    same population again); returns it. UserError at generation 0."""
    if len(self._history) < 2:
      raise UserError('evolution: nothing to undo (this is the first generation)')
    self._history.pop()
    self._rng.bit_generator.state = self._rng_states.pop()
    return self.population

  # ----------------------------------------------------------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready state: config, RNG state, every generation (floats round-trip exactly)."""
    return {
        'format': FORMAT, 'version': VERSION, 'config': self.config(),
        'rng_state': self._rng.bit_generator.state, 'rng_states': self._rng_states,
        'history': [{'population': g.population_NZ.tolist(), 'origins': list(g.origins),
                     'parents': g.parents_N2.tolist(), 'selected': list(g.selected),
                     'sigma': g.sigma} for g in self._history],
    }

  @classmethod
  def from_dict(cls, state: dict[str, Any]) -> 'Evolution':
    if not isinstance(state, dict) or state.get('format') != FORMAT:
      raise UserError(f'evolution: not a saved evolution (expected format {FORMAT!r})')
    if state.get('version') not in (1, VERSION):
      raise UserError(f'evolution: saved with version {state.get("version")}, '
                      f'this code reads versions 1 and {VERSION}')
    try:
      config = dict(state['config'])
      if state['version'] == 1:  # it bred as it did then
        config['keep_selected'] = 'unchanged' if config.pop('elitism') else 'none'
      evo = cls(**config)
      history = [Generation(np.array(g['population'], np.float64), tuple(g['origins']),
                            np.array(g['parents'], np.int64).reshape(-1, 2),
                            tuple(int(i) for i in g['selected']), g['sigma'])
                 for g in state['history']]
      if not history or len(state['rng_states']) != len(history) - 1:
        raise ValueError('history and RNG states disagree')
      shape = (evo.population_size, evo.z_dim)
      if any(g.population_NZ.shape != shape or len(g.origins) != shape[0] for g in history):
        raise ValueError(f'a population is not of shape {shape}')
      evo._history = history
      evo._rng_states = list(state['rng_states'])
      evo._rng.bit_generator.state = state['rng_state']
    except (KeyError, TypeError, ValueError) as e:
      raise UserError(f'evolution: bad saved state ({e})') from None
    return evo

  def save(self, path: str) -> None:
    """Writes the whole state as JSON, atomically (a temporary file, then os.replace)."""
    text = json.dumps(self.to_dict())
    files.atomic_write(path, lambda f: f.write(text), mode='w')

  @classmethod
  def load(cls, path: str) -> 'Evolution':
    """The Evolution saved at `path`; it continues exactly as the saved one would have."""
    try:
      with open(path) as f:
        state = json.load(f)
    except (OSError, ValueError) as e:
      raise UserError(f'{path}: cannot read a saved evolution ({e})') from None
    return cls.from_dict(state)

  # ----------------------------------------------------------------------------------------------

  def _check_selection(self, selected_indices: Sequence[int]) -> tuple[int, ...]:
    indices = np.asarray(selected_indices).reshape(-1)
    if indices.size and indices.dtype.kind not in 'iu':
      raise UserError(f'evolution: selection must be integer indices, got {selected_indices!r}')
    selected = tuple(int(i) for i in indices.tolist())
    if not selected:
      raise UserError('evolution: select at least one candidate to breed the next generation')
    bad = [i for i in selected if not 0 <= i < self.population_size]
    if bad:
      raise UserError(f'evolution: selected indices {bad} out of range '
                      f'0..{self.population_size - 1}')
    if len(set(selected)) != len(selected):
      raise UserError(f'evolution: selected indices repeat: {list(selected)}')
    return selected


def _check_sigma(sigma: float) -> float:
  if not float(sigma) >= 0.0:  # also rejects NaN
    raise UserError(f'evolution: sigma must be >= 0, got {sigma}')
  return float(sigma)
