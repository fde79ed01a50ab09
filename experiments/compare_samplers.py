r"""Coconet's samplers side by side, scored automatically (coconet/compare.py says how).

  python -m experiments.compare_samplers --workdir=pretrained/coconet_small \
      --scorer_workdir=runs/coconet_scorer_seed1 --num_pieces=16 --length=32

Every sampler harmonizes the same held-out sopranos and generates from scratch with the same seed;
the table gives each one's NLL per note under the scorer (a Coconet trained separately) and the
total-variation distance of its note statistics to the held-out chorales.
"""

from __future__ import annotations

from absl import flags

from common import configs
from common import runtime
from common.errors import UserError
from experiments import cli
from experiments import registry

_WORKDIR = flags.DEFINE_string('workdir', None, 'The Coconet whose samplers are compared.')
_SCORER = flags.DEFINE_string('scorer_workdir', None, 'A separately trained Coconet that scores '
                              'the pieces (another seed); default: --workdir itself.')
_SAMPLERS = flags.DEFINE_list('samplers', 'gibbs,ancestral_chronological,ancestral_random,'
                              'independent', 'Samplers to compare.')
_NUM_PIECES = flags.DEFINE_integer('num_pieces', 16, 'Pieces per sampler and condition.')
_LENGTH = flags.DEFINE_integer('length', 32, 'Length of each piece in 16th steps.')
_GIBBS_STEPS = flags.DEFINE_integer('gibbs_steps', None, 'Gibbs steps (default: T * 4).')
_SPLIT = flags.DEFINE_enum('split', 'test', ['valid', 'test'], 'Held-out split.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed, the same for every sampler.')
_OUTPUT = flags.DEFINE_string('output', None, 'Also write the results as JSON here.')


def main(argv: list[str]) -> None:
  del argv
  if not _WORKDIR.value:
    raise UserError('missing --workdir (a trained Coconet)')
  config = configs.read_config(_WORKDIR.value)
  if config.get('task') != 'coconet':
    raise UserError(f'{_WORKDIR.value} is a {config.get("task")} run, not a Coconet')
  scorer_dir = _SCORER.value or _WORKDIR.value
  scorer_config = configs.read_config(scorer_dir)
  if _NUM_PIECES.value < 1 or _LENGTH.value < 1:
    raise UserError('--num_pieces and --length must be >= 1')
  runtime.configure_process()
  import json  # pylint: disable=g-import-not-at-top
  from coconet import compare  # pylint: disable=g-import-not-at-top
  from coconet import train  # pylint: disable=g-import-not-at-top
  model = registry.load_model(config, _WORKDIR.value)
  scorer = registry.load_model(scorer_config, scorer_dir)
  held_out = train.load_pieces(config, _SPLIT.value)
  results = compare.compare(model, scorer, held_out, samplers=_SAMPLERS.value,
                            num_pieces=_NUM_PIECES.value, length=_LENGTH.value,
                            seed=_SEED.value, gibbs_steps=_GIBBS_STEPS.value,
                            progress=lambda what: print(f'sampling {what}', flush=True))
  print(f'{config.dataset} {_SPLIT.value}: {_NUM_PIECES.value} pieces of {_LENGTH.value} steps '
        f'per sampler; NLL under {scorer_dir}')
  print(compare.format_table(results))
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  cli.run(main, configure_process=False)
