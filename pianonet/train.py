"""PianoNet training task: binary cross-entropy on the last positions of receptive-field windows.

A training example is a window of the concatenated training sequence that ends on a time-step
boundary: receptive_field + predicted_steps * num_keys key states. Its first window - 1 states are
the input; the loss covers the last predicted_steps * num_keys predictions, each of which sees a
full receptive field of real history (silence before the start of the data).

  python -m experiments.train --config=pianonet/configs.py:tiny --workdir=/tmp/pianonet_tiny
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Iterator

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import generation
from common import pipeline
from common import training
from pianonet import data
from pianonet import generate
from pianonet import model as model_lib

Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """Shape of training windows; all sizes in key states."""
  num_keys: int
  receptive_field: int
  num_predicted: int

  @property
  def length(self) -> int:
    return self.receptive_field + self.num_predicted

  @property
  def first_key(self) -> int:
    """Key index of a window's first state (windows end on a time-step boundary)."""
    return -self.length % self.num_keys


def window_spec(config: ml_collections.ConfigDict) -> WindowSpec:
  return WindowSpec(config.num_keys, model_lib.receptive_field(config.model),
                    config.predicted_steps * config.num_keys)


# Encoded splits, built once per process (eval runs many times).
_SPLITS: dict[tuple[str, str], data.SongSequence] = {}


def get_split(config: ml_collections.ConfigDict, split: str) -> data.SongSequence:
  """The encoded split (data.load_split), kept for the rest of the process."""
  key = json.dumps(data.split_settings(config, split), sort_keys=True) + str(
      config.get('cache_dir'))
  if key not in _SPLITS:
    start = time.perf_counter()
    seq = data.load_split(config, split)
    s = seq.stats
    logging.info('pianonet %s/%s: %d songs, %d copies, %d key states (%.1f h), key-down rate %.4f '
                 '(songs alone %.4f); notes kept %d, out of the key window %d, vanished %d, '
                 'merged %d, shifted %d; %.1f s', config.dataset, split, s.songs,
                 len(seq.song_starts), len(seq.keys_N),
                 seq.num_steps / config.steps_per_second / 3600, seq.key_down_rate,
                 s.key_down_rate, s.notes_kept, s.out_of_range, s.vanished, s.duplicates,
                 s.shifted, time.perf_counter() - start)
    _SPLITS[key] = seq
  return _SPLITS[key]


def calibrate_output_bias(config: ml_collections.ConfigDict) -> None:
  """Records config.train_key_down_rate, the key-down rate of the training sequence, when the
  model's output bias comes from it (model.output_bias_init None; see
  model.initial_output_bias) and it is not known yet, so that a new model starts at the data's
  base rate. A run that starts from other weights (init_from) needs none."""
  if (config.model.get('output_bias_init') is not None or
      config.get('train_key_down_rate') is not None or config.get('init_from')):
    return
  rate = get_split(config, 'train').key_down_rate
  config.train_key_down_rate = rate
  logging.info('pianonet: training key-down rate %.5f: output bias %.4f', rate,
               model_lib.output_bias_for_rate(rate))


class TrainWindows:
  """Random windows: example i is a chunk of end steps; its transform picks one end in it."""

  def __init__(self, keys_N: np.ndarray, spec: WindowSpec, predicted_steps: int, chunk_steps: int):
    self.keys_N, self.spec, self.chunk_steps = keys_N, spec, max(1, chunk_steps)
    self.first_end = predicted_steps  # the targets must be real data
    self.num_steps = len(keys_N) // spec.num_keys
    self.num_chunks = max(1, -(-(self.num_steps - self.first_end + 1) // self.chunk_steps))

  def __len__(self) -> int:
    return self.num_chunks

  def __call__(self, chunk: int, rng: np.random.Generator) -> Batch:
    lo = self.first_end + chunk * self.chunk_steps
    hi = max(lo + 1, min(lo + self.chunk_steps, self.num_steps + 1))
    end_step = int(rng.integers(lo, hi))
    return {'keys': data.window(self.keys_N, end_step * self.spec.num_keys, self.spec.length)}

  def batch(self, chunks_B: np.ndarray, epochs_B: np.ndarray, seed: int) -> Batch:
    """The windows of a whole batch at once (make_batched_train_iterator): one random end step in
    each chunk, the windows gathered in one indexing of the key states."""
    lo_B = self.first_end + chunks_B * self.chunk_steps
    hi_B = np.maximum(lo_B + 1, np.minimum(lo_B + self.chunk_steps, self.num_steps + 1))
    u_B = pipeline.example_uniforms(seed, epochs_B, chunks_B, 1)[:, 0]
    end_B = lo_B + np.minimum((u_B * (hi_B - lo_B)).astype(np.int64), hi_B - lo_B - 1)
    start_B = end_B * self.spec.num_keys - self.spec.length
    positions_BW = start_B[:, None] + np.arange(self.spec.length)
    keys_BW = np.asarray(self.keys_N[np.clip(positions_BW, 0, None)], np.uint8)
    keys_BW[positions_BW < 0] = 0  # before the sequence: silence, as data.window pads
    return {'keys': keys_BW}


def eval_window_ends(num_steps: int, predicted_steps: int, num_windows: int) -> list[int]:
  """Evenly spaced end steps over a sequence (fixed, so evaluations are comparable)."""
  ends = np.linspace(predicted_steps, num_steps, num=max(1, num_windows)).round().astype(int)
  return sorted(set(ends.tolist()))


def train_iterator(config: ml_collections.ConfigDict, process_index: int, process_count: int
                   ) -> Iterator[Batch]:
  seq = get_split(config, 'train')
  windows = TrainWindows(seq.keys_N, window_spec(config), config.predicted_steps,
                         config.window_chunk_steps)
  if config.get('batched_input', True):
    return pipeline.make_batched_train_iterator(
        len(windows), lambda chunks, epochs: windows.batch(chunks, epochs, config.seed),
        batch_size=config.batch_size, seed=config.seed, process_index=process_index,
        process_count=process_count)
  return pipeline.make_train_iterator(range(len(windows)), windows, batch_size=config.batch_size,
                                      seed=config.seed, process_index=process_index,
                                      process_count=process_count)


def window_batches(config: ml_collections.ConfigDict, seq: data.SongSequence, num_windows: int,
                   process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """Batches of `num_windows` evenly spaced windows of a split (see eval_window_ends)."""
  spec = window_spec(config)
  ends = eval_window_ends(seq.num_steps, config.predicted_steps, num_windows)
  return pipeline.make_eval_batches(
      ends, lambda end: {'keys': data.window(seq.keys_N, end * spec.num_keys, spec.length)},
      batch_size=config.batch_size, process_index=process_index, process_count=process_count)


def eval_batches(config: ml_collections.ConfigDict, process_index: int, process_count: int
                 ) -> Iterator[Batch]:
  return window_batches(config, get_split(config, 'valid'), config.num_eval_windows,
                        process_index, process_count)


def predictions(model: model_lib.PianoNet, keys_BW: jax.Array, spec: WindowSpec
                ) -> tuple[jax.Array, jax.Array]:
  """(logits, targets) of the predicted positions of each window, both (B, num_predicted)."""
  logits_BN = model(keys_BW[:, :-1], spec.first_key, num_outputs=spec.num_predicted)
  targets_BN = keys_BW[:, -spec.num_predicted:].astype(jnp.float32)
  return logits_BN, targets_BN


def _metrics(logits_BN: jax.Array, targets_BN: jax.Array, weight_B: jax.Array
             ) -> dict[str, jax.Array]:
  def mean(x_BN):
    return jnp.sum(jnp.mean(x_BN, axis=1) * weight_B) / jnp.maximum(jnp.sum(weight_B), 1e-9)
  bce = mean(optax.sigmoid_binary_cross_entropy(logits_BN, targets_BN))
  return {
      'bce': bce,
      'bits_per_key_state': bce / math.log(2),
      'accuracy': mean(((logits_BN > 0) == (targets_BN > 0.5)).astype(jnp.float32)),
      'predicted_down_rate': mean(jax.nn.sigmoid(logits_BN)),
      'target_down_rate': mean(targets_BN),
  }


def make_loss_fn(config: ml_collections.ConfigDict):
  spec = window_spec(config)

  def loss_fn(model, batch, rng, step):
    del rng, step
    logits_BN, targets_BN = predictions(model, batch['keys'], spec)
    metrics = _metrics(logits_BN, targets_BN, jnp.ones(logits_BN.shape[0]))
    return metrics['bce'], metrics

  return loss_fn


def make_eval_fn(config: ml_collections.ConfigDict):
  spec = window_spec(config)

  def eval_fn(model, batch, rng):
    del rng
    logits_BN, targets_BN = predictions(model, batch['keys'], spec)
    return _metrics(logits_BN, targets_BN, batch['weight'])

  return eval_fn


def make_sample_hook(config: ml_collections.ConfigDict):
  """Writes a few seconds of continuation of the start of a validation song as MIDI."""

  def sample_hook(model, step, workdir):
    enc = data.encoding_from_config(config)
    seq = get_split(config, 'valid')
    field = model.receptive_field
    # Seed with the first receptive field of a validation song (with the silence before it).
    song_start = seq.song_starts[0] if seq.song_starts else 0
    seed_keys = generate.seed_from_sequence(
        seq.keys_N, song_start + generate.seed_length(field, enc.num_keys), field, enc.num_keys)
    num_new = int(round(config.sample_seconds * enc.steps_per_second)) * enc.num_keys
    new_BN = generate.generate_fast(
        model, seed_keys[None], num_new, jax.random.key(config.seed + step),
        temperature=config.temperature, thresholds=tuple(config.edge_thresholds))
    keys_N = np.concatenate([seed_keys, np.asarray(new_BN[0])])
    piece = generation.Piece(f'pianonet_step{step:08d}', generate.keys_to_sequence(keys_N, enc))
    generation.write_pieces([piece], os.path.join(workdir, 'samples'))

  return sample_hook


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> model_lib.PianoNet:
  return model_lib.build_model(config, rngs)


def get_task(config: ml_collections.ConfigDict) -> training.TrainTask:
  """PianoNet's TrainTask for common.training.train_and_evaluate (calibrates the output bias of a
  new run first: calibrate_output_bias)."""
  calibrate_output_bias(config)
  logging.info('pianonet %s: receptive field %d key states (%.2f s), %d parameters',
               config.get('variant', '?'), model_lib.receptive_field(config.model),
               model_lib.receptive_field(config.model) / config.num_keys / config.steps_per_second,
               model_lib.num_params(config.model, config.num_keys))
  return training.TrainTask(
      build_model=build_model,
      loss_fn=make_loss_fn(config),
      train_iterator=train_iterator,
      eval_fn=make_eval_fn(config),
      eval_batches=eval_batches,
      sample_hook=make_sample_hook(config))
