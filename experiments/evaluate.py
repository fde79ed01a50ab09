r"""Evaluates a trained model on a data split: loads --workdir's config.json and checkpoint.

  python -m experiments.evaluate --workdir=runs/coconet_small --split=test
  python -m experiments.evaluate --workdir=runs/coconet_small --split=test --units=note \
      --orders=chronological,random --ensemble_size=5 --max_pieces=10 --crop_len=64
  python -m experiments.evaluate --workdir=runs/pianonet_small --split=valid --num_samples=4

Dispatch: `<config.task>/evaluate.py` provides `evaluate_from_flags(model, config, options: dict)
-> dict` (it prints its own table); `options` holds this file's flag values by name.
"""

from __future__ import annotations

import importlib
import json
import os

from absl import flags

from common import training
from common.errors import UserError
from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (config.json + checkpoints).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_SPLIT = flags.DEFINE_enum('split', 'test', ['train', 'valid', 'test'], 'Data split.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Override the config\'s data_dir.')
_UNITS = flags.DEFINE_list('units', 'note,frame', 'coconet: NLL units, note and/or frame.')
_ORDERS = flags.DEFINE_list('orders', 'chronological,random',
                            'coconet: orderings, chronological and/or random.')
_ENSEMBLE = flags.DEFINE_integer('ensemble_size', 5, 'Random orderings averaged per piece.')
_MAX_PIECES = flags.DEFINE_integer('max_pieces', None, 'Evaluate only the first N pieces.')
_CROP_LEN = flags.DEFINE_integer('crop_len', None,
                                 'Cut pieces into windows of this many steps (default: whole).')
_BN_BATCHES = flags.DEFINE_integer(
    'bn_batches', 20, 'Training batches to re-estimate batch-norm statistics on before '
    'evaluating (0 = keep the moving averages).')
_CHUNK = flags.DEFINE_integer('chunk_size', 32, 'Chain-rule steps per forward batch.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed (orderings, batch-norm batches).')
_NUM_WINDOWS = flags.DEFINE_integer('num_windows', 256,
                                    'pianonet: evenly spaced evaluation windows.')
_NUM_SAMPLES = flags.DEFINE_integer(
    'num_samples', 4, 'pianonet: continuations generated for the key-down rate; cpword runs '
    'with emotion: songs generated per quadrant.')
_SECONDS = flags.DEFINE_float('seconds', 10.0, 'pianonet: seconds per generated continuation.')
_OUTPUT = flags.DEFINE_string('output', None, 'Also write the results as JSON here.')
flags.mark_flags_as_required(['workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise flags.UsageError(f'unexpected arguments: {argv[1:]}')
  config = training.read_config(_WORKDIR.value)
  model = training.load_model(training.get_task(config), config, _WORKDIR.value, _STEP.value)
  evaluator = importlib.import_module(f'{config.task}.evaluate')
  if not hasattr(evaluator, 'evaluate_from_flags'):
    raise UserError(f'{config.task} has no command-line evaluation')
  options = dict(split=_SPLIT.value, data_dir=_DATA_DIR.value, units=_UNITS.value,
                 orders=_ORDERS.value, ensemble_size=_ENSEMBLE.value, max_pieces=_MAX_PIECES.value,
                 crop_len=_CROP_LEN.value, bn_batches=_BN_BATCHES.value, chunk_size=_CHUNK.value,
                 seed=_SEED.value, num_windows=_NUM_WINDOWS.value,
                 num_samples=_NUM_SAMPLES.value, seconds=_SECONDS.value)
  results = evaluator.evaluate_from_flags(model, config, options)
  if _OUTPUT.value:
    tmp = _OUTPUT.value + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(results, f, indent=2)
    os.replace(tmp, _OUTPUT.value)


if __name__ == '__main__':
  cli.run(main)
