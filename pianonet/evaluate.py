"""PianoNet evaluation: binary cross-entropy against the base-rate baseline, and the key-down
rate of generated continuations against the data's.

  python -m experiments.evaluate --workdir=runs/pianonet_small --split=valid
"""

from __future__ import annotations

import math
import time
from typing import Any

from absl import logging
from flax import nnx
import jax
import numpy as np

from common import training
from common.errors import UserError
from pianonet import data
from pianonet import generate
from pianonet import train


def base_rate_bce(rate: float) -> float:
  """Cross-entropy (nats per key state) of always predicting the key-down rate itself: the best
  a model that ignores the music can do."""
  rate = min(max(rate, 1e-9), 1 - 1e-9)
  return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def window_bce(model: nnx.Module, config: Any, seq: data.SongSequence, num_windows: int
               ) -> dict[str, float]:
  """Mean BCE (and the rest of the training metrics) over evenly spaced windows of a split."""
  metrics = training.evaluate_model(train.make_eval_fn(config), model,
                                    train.window_batches(config, seq, num_windows))
  num_ends = len(train.eval_window_ends(seq.num_steps, config.predicted_steps, num_windows))
  return metrics | {'windows': num_ends}


def generated_down_rate(model: nnx.Module, config: Any, seq: data.SongSequence, *,
                        num_samples: int, seconds: float, seed: int) -> dict[str, float]:
  """Continues the opening receptive field of `num_samples` songs by `seconds` each (batched,
  Fast-WaveNet) and measures the key-down rate of what was generated."""
  enc = data.encoding_from_config(config)
  field = model.receptive_field
  seed_len = generate.seed_length(field, enc.num_keys)
  starts = seq.song_starts or [0]
  picks = [starts[i * len(starts) // num_samples] for i in range(num_samples)]
  seeds = np.stack([generate.seed_from_sequence(seq.keys_N, start + seed_len, field,
                                                enc.num_keys) for start in picks])
  num_new = int(round(seconds * enc.steps_per_second)) * enc.num_keys
  start = time.perf_counter()
  new_BN = np.asarray(generate.generate_fast(
      model, seeds, num_new, jax.random.key(seed), temperature=config.temperature,
      thresholds=tuple(config.edge_thresholds)))
  return {'generated_down_rate': float(new_BN.mean()),
          'generated_down_rate_per_sample': [float(r) for r in new_BN.mean(axis=1)],
          'seed_down_rate': float(seeds.mean()), 'generated_seconds': seconds,
          'generated_samples': num_samples, 'generation_wall_s': time.perf_counter() - start}


def evaluate_from_flags(model: nnx.Module, config: Any, options: dict[str, Any]) -> dict:
  """Prints and returns BCE vs the base rate and generated vs data key-down rates on a split.

  options: split, data_dir, num_windows, num_samples, seconds, seed.
  """
  if options.get('data_dir'):
    config.data_dir = options['data_dir']
  num_windows = int(options.get('num_windows', 256))
  num_samples = int(options.get('num_samples', 4))
  seconds = float(options.get('seconds', 10.0))
  if num_windows < 1 or num_samples < 1 or seconds <= 0:
    raise UserError(f'pianonet evaluate: need --num_windows >= 1, --num_samples >= 1 and '
                    f'--seconds > 0, got {num_windows}, {num_samples} and {seconds:g}.')
  split = options.get('split') or 'valid'
  seq = train.get_split(config, split)
  if seq.num_steps <= config.predicted_steps:
    raise UserError(f'pianonet evaluate: the {split} split is too short to evaluate.')
  logging.info('pianonet evaluate: %d windows of %s/%s', num_windows, config.dataset, split)
  metrics = window_bce(model, config, seq, num_windows)
  data_rate = float(np.mean(seq.keys_N))
  window_rate = metrics['target_down_rate']
  results = {
      'split': split, **metrics,
      'base_rate_bce': base_rate_bce(window_rate),
      'data_down_rate': data_rate,
  }
  results |= generated_down_rate(model, config, seq, num_samples=num_samples, seconds=seconds,
                                 seed=int(options.get('seed') or 0))
  print(f'pianonet {config.dataset} {split}: {results["windows"]} windows x '
        f'{config.predicted_steps} predicted steps')
  print(f'  BCE            {results["bce"]:.4f} nats/key state '
        f'({results["bits_per_key_state"]:.4f} bits)')
  print(f'  base-rate BCE  {results["base_rate_bce"]:.4f} nats/key state '
        f'(constant prediction of the windows\' key-down rate {window_rate:.4f})')
  print(f'  key-down rate  data {data_rate:.4f} (whole split), generated '
        f'{results["generated_down_rate"]:.4f} ({results["generated_samples"]} continuations x '
        f'{results["generated_seconds"]:g} s)')
  return results
