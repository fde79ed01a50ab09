"""MusicVAE's loss, data and TrainTask for common.training.

Loss per example: reconstruction cross-entropy summed over steps (and tracks) plus
beta * max(KL - free_bits * ln 2, 0), beta = (1 - beta_rate^step) * max_beta. Scheduled sampling
('inverse_sigmoid', rate k): with probability p = 1 - k / (k + exp(step / k)) a decoder input is the
model's own sample instead of the true previous token. Adam with learning rate
(lr - min_lr) * decay_rate^step + min_lr and global-norm clipping.
"""

from __future__ import annotations

import collections
import math
import os
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
from common.errors import UserError
from musicvae import data
from musicvae import model as model_lib
from musicvae import sample as sample_lib

_SPLIT_SEEDS = {'train': 0, 'valid': 1, 'test': 2, 'all': 3}


# ------------------------------------------------------------------------------------------------
# Data.


_SLICE_CACHE: dict[tuple, tuple[np.ndarray, collections.Counter]] = {}


def load_slices(config: ml_collections.ConfigDict, split: str
                ) -> tuple[np.ndarray, collections.Counter]:
  """All kept slices (int16 (N, T, K)) of `split` and the extraction statistics (cached)."""
  enc = data.encoding_from_config(config)
  limit = config.get('max_pieces')
  key = (config.dataset, config.get('data_dir'), split, enc, limit, config.encoding.get('dedupe'),
         config.get('num_synthetic'))
  if key not in _SLICE_CACHE:
    examples = _load_examples(config, split, enc)
    slices, stats = data.extract_slices(examples, enc,
                                        dedupe=config.encoding.get('dedupe', 'none'))
    logging.info('musicvae %s[%s]: %d %s slices of %d bars; %s', config.dataset, split,
                 len(slices), enc.kind, enc.num_bars, dict(sorted(stats.items())))
    _SLICE_CACHE[key] = (slices, stats)
  return _SLICE_CACHE[key]


def _load_examples(config: ml_collections.ConfigDict, split: str, enc: data.Encoding) -> list:
  if config.dataset == 'synthetic':
    return data.synthetic_melodies(config.get('num_synthetic', 32),
                                   num_bars=max(4, enc.num_bars + 2), seed=_SPLIT_SEEDS[split])
  from common import datasets  # pylint: disable=g-import-not-at-top  (slow import)
  kwargs = {'limit': config.get('max_pieces')} if config.get('max_pieces') else {}
  ds = datasets.get_dataset(config.dataset, config.get('data_dir'), split, **kwargs)
  if ds.skipped:
    logging.info('musicvae %s[%s]: %d files skipped (first: %s)', config.dataset, split,
                 len(ds.skipped), ds.skipped[0])
  return ds.examples


def _check_nonempty(slices: np.ndarray, config: ml_collections.ConfigDict, split: str,
                    stats: collections.Counter) -> None:
  if len(slices) == 0:
    raise UserError(f'musicvae: dataset {config.dataset!r} split {split!r} gave no '
                    f'{config.encoding.num_bars}-bar {config.encoding.kind} slice: '
                    f'{data.describe_extraction(stats, data.encoding_from_config(config))}')


def train_iterator(config: ml_collections.ConfigDict, process_index: int, process_count: int
                   ) -> Iterator[dict[str, np.ndarray]]:
  slices, stats = load_slices(config, 'train')
  _check_nonempty(slices, config, 'train', stats)
  enc = data.encoding_from_config(config)
  max_shift = config.encoding.get('max_transpose', 0)

  if config.get('batched_input', True):
    make_batch = transposed_batches(slices, enc, max_shift, config.seed)
    return pipeline.make_batched_train_iterator(
        len(slices), make_batch, batch_size=config.batch_size, seed=config.seed,
        process_index=process_index, process_count=process_count)

  def transform(x_TK: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if max_shift:
      x_TK = data.transpose(x_TK, enc, int(rng.choice(data.valid_transpositions(
          x_TK, enc, max_shift))))
    return {'tokens': x_TK.astype(np.int32)}

  return pipeline.make_train_iterator(slices, transform, batch_size=config.batch_size,
                                      seed=config.seed, process_index=process_index,
                                      process_count=process_count)


def transposed_batches(slices_NTK: np.ndarray, enc: data.Encoding, max_shift: int, seed: int):
  """make_batch(indices_B, epochs_B) for make_batched_train_iterator: the slices, each pitched
  track moved by a shift drawn uniformly from those that keep it in range (what
  data.valid_transpositions lists: a contiguous range), numpy over the whole batch."""
  pitched = [k for k, track in enumerate(enc.tracks) if track != 'drums']
  notes_NTP = slices_NTK[:, :, pitched].astype(np.int32)
  has_note = notes_NTP >= 2
  any_note_N = has_note.any(axis=(1, 2))
  lowest_N = np.where(has_note, notes_NTP, data.MELODY_CLASSES).min(axis=(1, 2))
  highest_N = np.where(has_note, notes_NTP, 0).max(axis=(1, 2))
  low_N = np.where(any_note_N, np.maximum(-max_shift, 2 - lowest_N), 0)
  high_N = np.where(any_note_N, np.minimum(max_shift, data.MELODY_CLASSES - 1 - highest_N), 0)

  def make_batch(indices_B: np.ndarray, epochs_B: np.ndarray) -> dict[str, np.ndarray]:
    tokens_BTK = slices_NTK[indices_B].astype(np.int32)
    if max_shift and pitched:
      u_B = pipeline.example_uniforms(seed, epochs_B, indices_B, 1)[:, 0]
      span_B = high_N[indices_B] - low_N[indices_B] + 1
      shift_B = low_N[indices_B] + np.minimum((u_B * span_B).astype(np.int64), span_B - 1)
      tracks = tokens_BTK[:, :, pitched]
      tokens_BTK[:, :, pitched] = np.where(tracks >= 2, tracks + shift_B[:, None, None], tracks)
    return {'tokens': tokens_BTK}

  return make_batch


def eval_examples(config: ml_collections.ConfigDict) -> np.ndarray:
  """The eval split's slices, at most config.max_eval_examples of them (evenly spaced)."""
  split = config.get('eval_split', 'valid')
  slices, stats = load_slices(config, split)
  _check_nonempty(slices, config, split, stats)
  cap = config.get('max_eval_examples')
  if cap and len(slices) > cap:
    slices = slices[np.linspace(0, len(slices) - 1, cap).astype(int)]
  return slices


def eval_batches(config: ml_collections.ConfigDict, process_index: int, process_count: int):
  return pipeline.make_eval_batches(
      eval_examples(config), lambda x: {'tokens': x.astype(np.int32)},
      batch_size=config.get('eval_batch_size') or config.batch_size,
      process_index=process_index, process_count=process_count)


# ------------------------------------------------------------------------------------------------
# Loss pieces.


def kl_divergence(mu_BZ: jax.Array, sigma_BZ: jax.Array) -> jax.Array:
  """KL(N(mu, sigma^2) || N(0, I)) per example (nats), (B,)."""
  return jnp.sum(0.5 * (mu_BZ**2 + sigma_BZ**2 - 1.0) - jnp.log(sigma_BZ), axis=-1)


def free_bits_kl_cost(kl_B: jax.Array, free_bits: float) -> jax.Array:
  """max(KL - free_bits * ln 2, 0) per example: KL below the free bits costs nothing."""
  return jnp.maximum(kl_B - free_bits * math.log(2.0), 0.0)


def beta_schedule(step: jax.Array | int, max_beta: float, beta_rate: float) -> jax.Array:
  return (1.0 - jnp.power(beta_rate, jnp.asarray(step, jnp.float32))) * max_beta


def sampling_probability(step: jax.Array | int, schedule: str, rate: float) -> jax.Array:
  """Probability of feeding the model's own sample: 'constant' (= rate) or 'inverse_sigmoid'."""
  step = jnp.asarray(step, jnp.float32)
  if schedule == 'constant':
    return jnp.asarray(rate, jnp.float32)
  if schedule == 'inverse_sigmoid':
    # 1 - k / (k + exp(step / k)) = sigmoid(step / k - ln k), without overflow for large steps.
    return jax.nn.sigmoid(step / rate - math.log(rate))
  raise UserError(f'unknown sampling_schedule {schedule!r}; use constant or inverse_sigmoid')


def reconstruction(logits_BTV: jax.Array, tokens_BTK: jax.Array, vocab_sizes
                   ) -> tuple[jax.Array, jax.Array]:
  """-> (cross-entropy summed over steps and tracks (B,), token accuracy per example (B,))."""
  ce_B, correct_B = 0.0, 0.0
  for k, logits in enumerate(model_lib.split_tracks(logits_BTV, vocab_sizes)):
    target = tokens_BTK[..., k]
    ce_B = ce_B + jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, target), axis=-1)
    correct_B = correct_B + jnp.sum(jnp.argmax(logits, -1) == target, axis=-1)
  return ce_B, correct_B / (tokens_BTK.shape[1] * tokens_BTK.shape[2])


def make_loss_fn(config: ml_collections.ConfigDict):
  loss_config = config.loss

  def loss_fn(model: model_lib.MusicVAE, batch: dict, rng: jax.Array, step: jax.Array):
    tokens = batch['tokens']
    p_sample = sampling_probability(step, loss_config.sampling_schedule,
                                    loss_config.sampling_rate)
    logits, mu, sigma, _ = model(tokens, rng, p_sample)
    recon_B, accuracy_B = reconstruction(logits, tokens, model.vocab_sizes)
    kl_B = kl_divergence(mu, sigma)
    beta = beta_schedule(step, loss_config.max_beta, loss_config.beta_rate)
    kl_cost = jnp.mean(free_bits_kl_cost(kl_B, loss_config.free_bits))
    loss = jnp.mean(recon_B) + beta * kl_cost
    return loss, {'recon_loss': jnp.mean(recon_B), 'kl': jnp.mean(kl_B),
                  'kl_bits': jnp.mean(kl_B) / math.log(2.0), 'beta': beta,
                  'accuracy': jnp.mean(accuracy_B), 'sampling_probability': p_sample}

  return loss_fn


def eval_fn(model: model_lib.MusicVAE, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
  """Teacher-forced and free-running (argmax from mu) reconstruction, KL; weighted means."""
  tokens, weight = batch['tokens'], batch['weight']
  mu, sigma = model.encode(tokens)
  recon_B, accuracy_B = reconstruction(model.reconstruct_logits(mu, tokens), tokens,
                                       model.vocab_sizes)
  sampled, _ = model.sample(mu, rng, 0.0)
  sampled_accuracy_B = jnp.mean(sampled == tokens, axis=(1, 2))
  kl_B = kl_divergence(mu, sigma)

  def mean(x_B):
    return jnp.sum(x_B * weight) / jnp.maximum(jnp.sum(weight), 1.0)

  return {'recon_loss': mean(recon_B), 'accuracy': mean(accuracy_B),
          'sampled_accuracy': mean(sampled_accuracy_B), 'kl': mean(kl_B)}


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  lr, min_lr = config.learning_rate, config.get('min_learning_rate', 1e-5)
  decay = config.get('decay_rate', 0.9999)
  schedule = lambda step: (lr - min_lr) * jnp.power(decay, step) + min_lr
  return optax.chain(optax.clip_by_global_norm(config.get('grad_clip_norm', 1.0)),
                     optax.adam(schedule))


# ------------------------------------------------------------------------------------------------
# Task.


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> model_lib.MusicVAE:
  enc = data.encoding_from_config(config)
  m = config.model
  roll_input = enc.kind == 'drums' and config.encoding.get('roll_input', True)
  model = model_lib.MusicVAE(
      vocab_sizes=enc.vocab_sizes, num_steps=enc.num_steps, z_dim=m.z_dim,
      encoder_sizes=tuple(m.encoder_sizes), decoder_sizes=tuple(m.decoder_sizes),
      conductor_sizes=tuple(m.get('conductor_sizes') or ()), bar_steps=data.STEPS_PER_BAR,
      encoder_input='drum_roll' if roll_input else 'one_hot',
      forget_bias=m.get('forget_bias', model_lib.ORIGINAL_FORGET_BIAS),
      sigma_epsilon=m.get('sigma_epsilon', 0.0), rngs=rngs)
  return model_lib.use_mixed_precision(model) if config.get('mixed_precision') else model


def make_sample_hook(config: ml_collections.ConfigDict):
  """Writes a few prior samples as MIDI under workdir/samples/step_<N>/."""

  def hook(model: model_lib.MusicVAE, step: int, workdir: str) -> None:
    seqs = sample_lib.sample(model, config.sample.get('num_samples', 4),
                             jax.random.key(step), data.encoding_from_config(config),
                             temperature=config.sample.get('temperature', 0.5))
    pieces = [generation.Piece(f'sample_{i:03d}', seq) for i, seq in enumerate(seqs)]
    generation.write_pieces(pieces, os.path.join(workdir, 'samples', f'step_{step}'))

  return hook


def write_attribute_vectors(model: model_lib.MusicVAE, config: ml_collections.ConfigDict,
                            workdir: str) -> str | None:
  """Computes the five attribute vectors on the evaluation split and writes them beside the
  checkpoints (sample.ATTRIBUTE_VECTORS_FILE), so that generation needs no data; returns the
  path, or None for models without a melody track (drums)."""
  if model.vocab_sizes[0] != data.MELODY_CLASSES:
    return None
  try:
    vectors = sample_lib.compute_attribute_vectors(model, eval_examples(config))
  except UserError as e:  # e.g. an evaluation split too small or too uniform
    logging.warning('No attribute vectors: %s', e)
    return None
  path = os.path.join(workdir, sample_lib.ATTRIBUTE_VECTORS_FILE)
  sample_lib.save_attribute_vectors(path, vectors)
  logging.info('Wrote the attribute vectors to %s', path)
  return path


def load_assets(workdir: str) -> dict[str, Any]:
  """What ships beside a MusicVAE checkpoint: {'attribute_vectors': {name: (Z,)}} if present."""
  path = os.path.join(workdir, sample_lib.ATTRIBUTE_VECTORS_FILE)
  if not os.path.exists(path):
    return {}
  return {'attribute_vectors': sample_lib.load_attribute_vectors(path)}


def get_task(config: ml_collections.ConfigDict) -> training.TrainTask:
  """MusicVAE's TrainTask for common.training.train_and_evaluate."""
  return training.TrainTask(
      build_model=build_model,
      loss_fn=make_loss_fn(config),
      train_iterator=train_iterator,
      eval_fn=eval_fn,
      eval_batches=eval_batches,
      make_optimizer=make_optimizer,
      sample_hook=make_sample_hook(config),
      finish_hook=lambda model, workdir: write_attribute_vectors(model, config, workdir),
      shipped_files=(sample_lib.ATTRIBUTE_VECTORS_FILE,))


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Parameter counts of the config's model (abstract init: no memory, no compute)."""
  model = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))
  return {'params': model_lib.num_params(model),
          'encoder': model_lib.num_params(model.encoder),
          'decoder': model_lib.num_params(model.decoder)}
