r"""Evaluates a trained model on a data split: loads --workdir's config.json and checkpoint.

  python -m experiments.evaluate --workdir=runs/coconet_small --split=test
  python -m experiments.evaluate --workdir=runs/coconet_small --split=test --units=note \
      --orders=chronological,random --ensemble_size=5 --max_pieces=10 --crop_len=64
  python -m experiments.evaluate --workdir=runs/pianonet_small --split=valid --num_samples=4

Each model's evaluate.py (experiments/registry.py) provides `evaluate_from_flags(model, config,
options: dict) -> dict`, which prints its own table; `options` holds this file's flag values.
"""

from __future__ import annotations

import json

from absl import flags

from common import configs
from common import files
from experiments import cli
from experiments import registry

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (config.json + checkpoints).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_SPLIT = flags.DEFINE_enum('split', 'test', ['train', 'valid', 'test'], 'Data split.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Override the config\'s data_dir.')
_UNITS = flags.DEFINE_list(
    'units', 'note,frame', 'coconet: NLL units: note; frame (as the original code scores a frame: '
    'each voice given the argmax guesses of the frame\'s earlier voices); frame_independent (the '
    'voices of a frame scored independently, far fewer forward passes).')
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
_CONTEXTS = flags.DEFINE_list(
    'context_lengths', None, 'cpword: instead of the split\'s loss, the NLL per note of the same '
    'target words given these many words of context, e.g. 256,512,1024,2048.')
flags.register_validator('context_lengths', lambda v: v is None or all(c.isdigit() for c in v),
                         message='give whole numbers of words, e.g. 256,512,1024,2048')
_OUTPUT = flags.DEFINE_string('output', None, 'Also write the results as JSON here.')
flags.mark_flags_as_required(['workdir'])


def main(argv: list[str]) -> None:
  del argv
  config = configs.read_config(_WORKDIR.value)
  _, _, evaluator = registry.entry(config).modules()
  model = registry.load_model(config, _WORKDIR.value, _STEP.value)
  options = dict(split=_SPLIT.value, data_dir=_DATA_DIR.value, units=_UNITS.value,
                 orders=_ORDERS.value, ensemble_size=_ENSEMBLE.value, max_pieces=_MAX_PIECES.value,
                 crop_len=_CROP_LEN.value, bn_batches=_BN_BATCHES.value, chunk_size=_CHUNK.value,
                 seed=_SEED.value, num_windows=_NUM_WINDOWS.value,
                 num_samples=_NUM_SAMPLES.value, seconds=_SECONDS.value,
                 context_lengths=_CONTEXTS.value)
  results = evaluator.evaluate_from_flags(model, config, options)
  if _OUTPUT.value:
    files.atomic_write(_OUTPUT.value, lambda f: json.dump(results, f, indent=2), mode='w')


if __name__ == '__main__':
  cli.run(main)
