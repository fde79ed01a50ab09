"""A headless simulated user for Deep Interactive Evolution: how many generations does it take to
reach a hidden target, with evolution (musicvae.evolve) vs plain random sampling?

    python -m experiments.simulate_evolution                                   # latent space, z 8
    python -m experiments.simulate_evolution --workdir=runs/mel_2bar_small     # in the music

Each trial (one seed) hides a target z*. Every generation the user is shown `population_size`
candidates, and the trial ends as soon as one of them is similar enough to the target
(similarity >= threshold). Otherwise the user picks the `num_selected` most similar candidates
and the method makes the next population: evolution breeds it from the picks; random sampling
ignores them and draws fresh N(0, I) vectors. Both methods show the same first population.

Similarity ("measure"):
  cosine     cosine similarity of the latent vectors (no model needed).
  tokens     share of (step, track) tokens of a candidate's argmax decoding equal to the target's.
  notes      F1 of the non-empty events at the same step (a note onset with its pitch, a
             note-off, a drum-hit set) of a candidate's decoding against the target's.
  attribute  1 - |a - v| for an attribute a of the decoded melody (track 0; musicvae.sample
             ATTRIBUTES: note density, average interval, ...) and a target value v: the user who
             wants, say, a melody with 14 onsets in 2 bars. With threshold 0.99 a note density
             (onsets per 16th step) must be met exactly.
For tokens and notes the target's music is the argmax decoding of z*, so the target is always
reachable (at z*). z* is the posterior mean of a melody from the model's eval split ('eval') or
z* ~ N(0, I) ('prior'; the only choice without a model).

All trials advance in lockstep, so each generation decodes every live candidate in one batched,
jitted call (one compile for the whole run).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from common.errors import UserError
from musicvae import evolve

METHODS = ('evolution', 'random')
MEASURES = ('cosine', 'tokens', 'notes', 'attribute')
TARGETS = ('eval', 'prior')
_TARGET_SALT = 2018  # targets come from their own RNG stream, apart from the methods' streams
_PRIOR_SAMPLES = 4096  # prior_hit_rate's sample size

# scorer(trial_ids (M,), z (M, N, Z)) -> similarity to each trial's target (M, N)
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------------------------
# Similarities and the simulated user.


def cosine_similarity(z_MNZ: np.ndarray, target_MZ: np.ndarray) -> np.ndarray:
  """Cosine similarity of each candidate to its trial's target -> (M, N); 0 for a zero vector."""
  dot = np.einsum('mnz,mz->mn', z_MNZ, target_MZ)
  norms = np.linalg.norm(z_MNZ, axis=-1) * np.linalg.norm(target_MZ, axis=-1)[:, None]
  return dot / np.where(norms > 0, norms, np.inf)


def token_accuracy(tokens_MNTK: np.ndarray, target_MTK: np.ndarray) -> np.ndarray:
  """Share of (step, track) tokens equal to the target's -> (M, N)."""
  return np.mean(tokens_MNTK == target_MTK[:, None], axis=(2, 3))


def event_f1(tokens_MNTK: np.ndarray, target_MTK: np.ndarray) -> np.ndarray:
  """F1 of the non-empty tokens (events) at the same step and track -> (M, N); 1 if both silent."""
  target = target_MTK[:, None]
  hits = np.sum((tokens_MNTK == target) & (target != 0), axis=(2, 3))
  total = np.sum(tokens_MNTK != 0, axis=(2, 3)) + np.sum(target != 0, axis=(2, 3))
  return np.where(total > 0, 2.0 * hits / np.maximum(total, 1), 1.0)


def select_closest(similarity_N: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k most similar candidates, most similar first (ties: lower index first)."""
  return np.argsort(-np.asarray(similarity_N), kind='stable')[:k]


def latent_scorer(targets_SZ: np.ndarray) -> Scorer:
  """Cosine similarity in latent space to targets_SZ[trial]."""
  return lambda trial_ids, z_MNZ: cosine_similarity(z_MNZ, targets_SZ[trial_ids])


def music_scorer(decode: Callable[[np.ndarray], np.ndarray], target_tokens_STK: np.ndarray,
                 measure: str = 'tokens') -> Scorer:
  """Similarity of the decoded candidates to target_tokens_STK[trial] ('tokens' or 'notes').

  decode: z (B, Z) -> tokens (B, T, K), e.g. make_decoder(model).
  """
  similarity = {'tokens': token_accuracy, 'notes': event_f1}.get(measure)
  if similarity is None:
    raise UserError(f'simulate: music measure must be tokens or notes, got {measure!r}')

  def score(trial_ids: np.ndarray, z_MNZ: np.ndarray) -> np.ndarray:
    m, n, z_dim = z_MNZ.shape
    tokens = decode(z_MNZ.reshape(m * n, z_dim))
    return similarity(tokens.reshape(m, n, *tokens.shape[1:]), target_tokens_STK[trial_ids])

  return score


def attribute_scorer(decode: Callable[[np.ndarray], np.ndarray],
                     attribute: Callable[[np.ndarray], float], value: float) -> Scorer:
  """1 - |attribute(track 0 of the decoded candidate) - value|, the same value for every trial.

  decode: z (B, Z) -> tokens (B, T, K), e.g. make_decoder(model); attribute: tokens (T,) -> float,
  e.g. musicvae.sample.note_density.
  """
  def score(trial_ids: np.ndarray, z_MNZ: np.ndarray) -> np.ndarray:
    del trial_ids  # one target value for all trials
    m, n, z_dim = z_MNZ.shape
    tokens_BTK = decode(z_MNZ.reshape(m * n, z_dim))
    values = np.array([attribute(tokens_TK[:, 0]) for tokens_TK in tokens_BTK], np.float64)
    return 1.0 - np.abs(values - value).reshape(m, n)

  return score


def make_decoder(model: Any, batch_size: int = 160) -> Callable[[np.ndarray], np.ndarray]:
  """z (B, Z) -> argmax tokens int32 (B, T, K), jitted once for `batch_size` rows: larger inputs
  go in chunks, and the last chunk is padded, so any B reuses the one compiled program."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from common import precision  # pylint: disable=g-import-not-at-top
  from musicvae import model as model_lib  # pylint: disable=g-import-not-at-top

  graphdef, state = nnx.split(model)
  dtype = precision.inference_dtype(batch_size)

  @jax.jit
  def decode_batch(state, z_BZ):
    # Temperature 0 is argmax, so the key is never used for sampling.
    model = model_lib.inference_copy(nnx.merge(graphdef, state), dtype)
    return model.sample(z_BZ, jax.random.key(0), 0.0)[0]

  def decode(z_NZ: np.ndarray) -> np.ndarray:
    z_NZ = np.asarray(z_NZ, np.float32)
    out = []
    for i in range(0, len(z_NZ), batch_size):
      chunk = z_NZ[i:i + batch_size]
      padded = np.zeros((batch_size, z_NZ.shape[1]), np.float32)
      padded[:len(chunk)] = chunk
      out.append(np.asarray(decode_batch(state, padded))[:len(chunk)])
    return (np.concatenate(out) if out else
            np.zeros((0, model.num_steps, len(model.vocab_sizes)), np.int32))

  return decode


# ------------------------------------------------------------------------------------------------
# Trials.


@dataclasses.dataclass
class MethodResult:
  """One method over all seeds: generations to target (None = not reached within the cap) and the
  best similarity each trial saw."""
  method: str
  generations: list[int | None]
  best_similarity: list[float]
  max_generations: int

  @property
  def misses(self) -> int:
    return sum(g is None for g in self.generations)

  @property
  def mean_generations(self) -> float:
    """Mean generations to target, a miss counted as max_generations."""
    return float(np.mean([self.max_generations if g is None else g for g in self.generations]))

  def summary(self) -> dict[str, Any]:
    return {'method': self.method, 'mean_generations': self.mean_generations,
            'misses': self.misses, 'trials': len(self.generations),
            'mean_best_similarity': float(np.mean(self.best_similarity)),
            'generations': self.generations, 'best_similarity': self.best_similarity}


def prior_targets(seeds: Sequence[int], z_dim: int) -> np.ndarray:
  """z* ~ N(0, I) per seed -> (S, Z), from a stream apart from the methods' own."""
  return np.stack([np.random.default_rng([_TARGET_SALT, s]).standard_normal(z_dim)
                   for s in seeds])


def run_trials(method: str, scorer: Scorer, *, z_dim: int, seeds: Sequence[int],
               max_generations: int = 50, population_size: int = 8, num_selected: int = 2,
               threshold: float = 0.9, **evolution_kwargs: Any) -> MethodResult:
  """Runs one trial per seed (trial i has seed seeds[i] and the scorer's target i).

  A trial reaches the target at generation g (1 = the first population shown) when a candidate
  of that population has similarity >= threshold. evolution_kwargs go to evolve.Evolution
  (sigma, crossover, num_foreign, keep_selected, mutation_probability, component_probability).
  """
  if method not in METHODS:
    raise UserError(f'simulate: method must be one of {", ".join(METHODS)}, got {method!r}')
  if max_generations < 1:
    raise UserError(f'simulate: max_generations must be >= 1, got {max_generations}')
  if not 1 <= num_selected <= population_size:
    raise UserError(f'simulate: num_selected must be in 1..population_size={population_size}, '
                    f'got {num_selected}')
  num = len(seeds)
  if method == 'evolution':
    evolutions = [evolve.Evolution(z_dim, population_size, seed=int(s), **evolution_kwargs)
                  for s in seeds]
    populations = [e.population for e in evolutions]
  else:
    # The same first population as evolution (its Generator's first draw), then fresh draws.
    rngs = [np.random.default_rng(int(s)) for s in seeds]
    populations = [r.standard_normal((population_size, z_dim)) for r in rngs]
  generations: list[int | None] = [None] * num
  best = np.full(num, -np.inf)
  live = np.arange(num)
  for generation in range(1, max_generations + 1):
    similarity_MN = scorer(live, np.stack([populations[i] for i in live]))
    still_live = []
    for i, sim_N in zip(live, similarity_MN):
      best[i] = max(best[i], float(np.max(sim_N)))
      if np.max(sim_N) >= threshold:
        generations[i] = generation
        continue
      still_live.append(i)
      if generation == max_generations:
        continue
      if method == 'evolution':
        populations[i] = evolutions[i].next_generation(select_closest(sim_N, num_selected))
      else:
        populations[i] = rngs[i].standard_normal((population_size, z_dim))
    live = np.array(still_live, np.int64)
    if not len(live):
      break
  return MethodResult(method, generations, best.tolist(), max_generations)


def compare(scorer: Scorer, *, z_dim: int, seeds: Sequence[int], **kwargs: Any
            ) -> dict[str, Any]:
  """Evolution and random sampling on the same targets -> summary dict (see format_table)."""
  results = {}
  for method in METHODS:
    start = time.time()
    results[method] = run_trials(method, scorer, z_dim=z_dim, seeds=seeds, **kwargs).summary()
    results[method]['seconds'] = time.time() - start
  evo, rnd = results['evolution']['mean_generations'], results['random']['mean_generations']
  return {'methods': results, 'ratio_random_over_evolution': rnd / evo, 'seeds': list(seeds),
          'z_dim': z_dim, 'max_generations': kwargs.get('max_generations', 50), **kwargs}


def format_table(summary: dict[str, Any]) -> str:
  cap = summary.get('max_generations')
  lines = [f'{"method":<10} {"mean generations":>16} {"misses":>8} {"best similarity":>16}']
  for name, r in summary['methods'].items():
    lines.append(f'{name:<10} {r["mean_generations"]:>16.2f} {r["misses"]:>5}/{r["trials"]:<2} '
                 f'{r["mean_best_similarity"]:>16.3f}')
  lines.append(f'ratio random/evolution: {summary["ratio_random_over_evolution"]:.2f} '
               f'(a miss counts as {cap} generations)')
  return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# Entry point.


def simulate_main(workdir: str | None = None, *, step: int | None = None,
                  measure: str | None = None, target: str | None = None, num_seeds: int = 20,
                  seed: int = 0, z_dim: int = 8, attribute: str | None = None,
                  attribute_value: float | None = None, max_generations: int = 50,
                  population_size: int = 8, num_selected: int = 2,
                  threshold: float = 0.9, **evolution_kwargs: Any) -> dict[str, Any]:
  """Builds the targets and the scorer, runs both methods, prints the table, returns the summary.

  workdir: a trained MusicVAE run (then measure defaults to 'tokens' and target to 'eval'); None
  runs in latent space with z_dim (measure 'cosine', target 'prior'). Measure 'attribute' takes
  attribute (a name in musicvae.sample.ATTRIBUTES) and attribute_value instead of a target.
  Seeds seed..seed+num_seeds-1.
  evolution_kwargs go to evolve.Evolution (sigma, crossover, num_foreign, keep_selected, ...).
  """
  if num_seeds < 1:
    raise UserError(f'simulate: num_seeds must be >= 1, got {num_seeds}')
  if population_size < 1:
    raise UserError(f'simulate: population_size must be >= 1, got {population_size}')
  seeds = list(range(seed, seed + num_seeds))
  measure = measure or ('tokens' if workdir else 'cosine')
  if measure not in MEASURES:
    raise UserError(f'simulate: measure must be one of {", ".join(MEASURES)}, got {measure!r}')
  if measure == 'attribute':
    _check_attribute_target(workdir, target, attribute, attribute_value)
    target = f'{attribute}={attribute_value:g}'
  else:
    if attribute is not None or attribute_value is not None:
      raise UserError('simulate: --attribute and --attribute_value go with --measure=attribute')
    target = target or ('eval' if workdir else 'prior')
    if target not in TARGETS:
      raise UserError(f'simulate: target must be one of {", ".join(TARGETS)}, got {target!r}')
  if not workdir:
    if measure != 'cosine' or target != 'prior':
      raise UserError('simulate: measures tokens/notes and target eval need a trained model '
                      '(--workdir)')
    if z_dim < 1:
      raise UserError(f'simulate: z_dim must be >= 1, got {z_dim}')
    scorer = latent_scorer(prior_targets(seeds, z_dim))
    description = f'latent space (z {z_dim}), cosine similarity'
  else:
    scorer, z_dim, description = _model_scorer(workdir, step, measure, target, seeds,
                                               population_size, threshold, attribute,
                                               attribute_value)
  settings = dict(max_generations=max_generations, population_size=population_size,
                  num_selected=num_selected, threshold=threshold)
  summary = compare(scorer, z_dim=z_dim, seeds=seeds, **settings, **evolution_kwargs)
  summary.update(measure=measure, target=target, workdir=workdir, description=description)
  print(f'Deep Interactive Evolution, simulated user: {description} >= {threshold:g}; '
        f'{num_seeds} seeds, at most {max_generations} generations of {population_size}, '
        f'{num_selected} selected')
  print(format_table(summary))
  return summary


def _check_attribute_target(workdir: str | None, target: str | None, attribute: str | None,
                            attribute_value: float | None) -> None:
  from musicvae import sample as sample_lib  # pylint: disable=g-import-not-at-top
  if not workdir:
    raise UserError('simulate: measure attribute needs a trained model (--workdir)')
  if target is not None:
    raise UserError('simulate: measure attribute takes --attribute_value, not --target')
  if attribute not in sample_lib.ATTRIBUTES or attribute_value is None:
    raise UserError('simulate: measure attribute needs --attribute (one of '
                    f'{", ".join(sample_lib.ATTRIBUTES)}) and --attribute_value')


def prior_hit_rate(scorer: Scorer, z_dim: int, threshold: float, num: int = _PRIOR_SAMPLES
                   ) -> float:
  """Share of `num` prior samples z ~ N(0, I) (a fixed stream) that reach the threshold: random
  sampling with populations of N then needs 1 / (1 - (1 - rate)^N) generations on average."""
  z_1NZ = np.random.default_rng([_TARGET_SALT, num]).standard_normal((1, num, z_dim))
  return float(np.mean(scorer(np.zeros(1, np.int64), z_1NZ) >= threshold))


def _model_scorer(workdir: str, step: int | None, measure: str, target: str,
                  seeds: Sequence[int], population_size: int, threshold: float,
                  attribute: str | None, attribute_value: float | None
                  ) -> tuple[Scorer, int, str]:
  from common import training  # pylint: disable=g-import-not-at-top
  from musicvae import data  # pylint: disable=g-import-not-at-top
  from musicvae import sample as sample_lib  # pylint: disable=g-import-not-at-top
  from musicvae import train  # pylint: disable=g-import-not-at-top
  config = training.read_config(workdir)
  if config.get('task') != 'musicvae':
    raise UserError(f'{workdir}: a {config.get("task")} run, not a MusicVAE one')
  model = training.load_model(train.get_task(config), config, workdir, step)
  z_dim = model.z_dim
  if measure == 'attribute':
    if model.vocab_sizes[0] != data.MELODY_CLASSES:
      raise UserError(f'{workdir}: attributes are defined on melodies; this model has no melody '
                      'track')
    decode = make_decoder(model, batch_size=len(seeds) * population_size)
    scorer = attribute_scorer(decode, sample_lib.ATTRIBUTES[attribute], attribute_value)
    rate = prior_hit_rate(scorer, z_dim, threshold)
    if rate > 0:
      expected = 1 / (1 - (1 - rate) ** population_size)
      odds = (f'{100 * rate:.2f}% of prior samples reach the threshold, so random sampling '
              f'needs ~{expected:.1f} generations on average')
    else:
      odds = f'no prior sample of {_PRIOR_SAMPLES:,} reaches the threshold'
    return scorer, z_dim, (f'{config.variant} decodings (argmax), {attribute} '
                           f'{attribute_value:g}: {odds}; similarity 1 - |{attribute} - '
                           f'{attribute_value:g}|')
  if target == 'eval':
    slices_NTK = train.eval_examples(config)
    picks = [int(np.random.default_rng([_TARGET_SALT, s]).integers(len(slices_NTK)))
             for s in seeds]
    _, targets_SZ, _ = sample_lib.encode_tokens(model, slices_NTK[picks].astype(np.int32))
    source = f'posterior means of {config.dataset} {config.get("eval_split", "valid")} slices'
  else:
    targets_SZ = prior_targets(seeds, z_dim)
    source = 'z* ~ N(0, I)'
  if measure == 'cosine':
    return latent_scorer(np.asarray(targets_SZ, np.float64)), z_dim, (
        f'{config.variant} latent space (z {z_dim}, {source}), cosine similarity')
  decode = make_decoder(model, batch_size=len(seeds) * population_size)
  target_tokens_STK = decode(targets_SZ)
  return music_scorer(decode, target_tokens_STK, measure), z_dim, (
      f'{config.variant} decodings (argmax; targets: {source}), {measure} similarity')
