r"""Simulated user for Deep Interactive Evolution: generations to a hidden target, evolution vs
random sampling (fresh N(0, I) populations), averaged over seeds. See musicvae/simulate.py.

  python -m experiments.simulate_evolution --z_dim=8                  # latent space, no model
  python -m experiments.simulate_evolution --workdir=pretrained/mel_2bar_small --threshold=0.9 \
      --num_seeds=20 --max_generations=50 --output=runs/eval/evolution.json
  python -m experiments.simulate_evolution --z_dim=8 --keep_selected=none   # the earlier default
  python -m experiments.simulate_evolution --workdir=runs/mel_2bar_small --measure=notes \
      --target=prior --sigma=0.3 --crossover=slerp
  python -m experiments.simulate_evolution --workdir=pretrained/mel_2bar_small \
      --measure=attribute --attribute=note_density --attribute_value=0.4375 --threshold=0.99
"""

from __future__ import annotations

import json

from absl import flags

from common import files
from experiments import cli
from musicvae import evolve
from musicvae import simulate

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained MusicVAE run; without it the '
                               'simulation runs in a latent space of --z_dim (cosine similarity).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_MEASURE = flags.DEFINE_enum('measure', None, list(simulate.MEASURES),
                             'Similarity to the target (default: tokens with --workdir, else '
                             'cosine). tokens: share of equal decoded tokens; notes: F1 of the '
                             'decoded events; cosine: in latent space; attribute: 1 - |a - v| '
                             'for --attribute a of the decoded melody and --attribute_value v.')
_TARGET = flags.DEFINE_enum('target', None, list(simulate.TARGETS),
                            'Hidden target z* (default: eval with --workdir, else prior). eval: '
                            'posterior mean of an eval-split melody; prior: z* ~ N(0, I).')
_ATTRIBUTE = flags.DEFINE_string('attribute', None, 'With --measure=attribute: the attribute the '
                                 'user wants (note_density, average_interval, syncopation_16th, '
                                 'syncopation_8th or c_diatonic).')
_ATTRIBUTE_VALUE = flags.DEFINE_float('attribute_value', None, 'With --measure=attribute: the '
                                      "value the user wants (note density: onsets per 16th).")
_THRESHOLD = flags.DEFINE_float('threshold', 0.9, 'Similarity at which the target is reached.')
_NUM_SEEDS = flags.DEFINE_integer('num_seeds', 20, 'Trials (one target and seed each).')
_SEED = flags.DEFINE_integer('seed', 0, 'First seed; trials use seed .. seed + num_seeds - 1.')
_MAX_GENERATIONS = flags.DEFINE_integer('max_generations', 50, 'Generations before giving up.')
_POPULATION = flags.DEFINE_integer('population_size', 8, 'Candidates shown per generation.')
_NUM_SELECTED = flags.DEFINE_integer('num_selected', 2,
                                     'Candidates the simulated user picks (the most similar).')
_Z_DIM = flags.DEFINE_integer('z_dim', 8, 'Latent size without --workdir.')
_SIGMA = flags.DEFINE_float('sigma', 0.5, 'Evolution: mutation noise scale.')
_CROSSOVER = flags.DEFINE_enum('crossover', 'uniform', list(evolve.CROSSOVERS),
                               'Evolution: crossover.')
_NUM_FOREIGN = flags.DEFINE_integer('num_foreign', 2, 'Evolution: fresh N(0, I) vectors per '
                                    'generation.')
_KEEP_SELECTED = flags.DEFINE_enum('keep_selected', 'mutated', list(evolve.KEEP_SELECTED),
                                   'Evolution: what becomes of the selected vectors. mutated (the '
                                   'write-up): kept in the next population and mutated like the '
                                   'children; unchanged: kept as they are; none: an all-new '
                                   'population.')
_MUTATION_P = flags.DEFINE_float('mutation_probability', 0.5, 'Evolution: P(a child mutates).')
_COMPONENT_P = flags.DEFINE_float('component_probability', 0.5,
                                  'Evolution: P(a component of a mutating child gets noise).')
_OUTPUT = flags.DEFINE_string('output', None, 'Also write the results as JSON here.')


def main(argv: list[str]) -> None:
  del argv
  summary = simulate.simulate_main(
      _WORKDIR.value, step=_STEP.value, measure=_MEASURE.value, target=_TARGET.value,
      num_seeds=_NUM_SEEDS.value, seed=_SEED.value, z_dim=_Z_DIM.value,
      attribute=_ATTRIBUTE.value, attribute_value=_ATTRIBUTE_VALUE.value,
      max_generations=_MAX_GENERATIONS.value, population_size=_POPULATION.value,
      num_selected=_NUM_SELECTED.value, threshold=_THRESHOLD.value, sigma=_SIGMA.value,
      crossover=_CROSSOVER.value, num_foreign=_NUM_FOREIGN.value,
      keep_selected=_KEEP_SELECTED.value, mutation_probability=_MUTATION_P.value,
      component_probability=_COMPONENT_P.value)
  if _OUTPUT.value:
    text = json.dumps(summary, indent=2)
    files.atomic_write(_OUTPUT.value, lambda f: f.write(text), mode='w')
    print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  cli.run(main)
