"""MusicVAE evaluation: reconstruction accuracy (teacher-forced and free-running) and the KL on a
split, next to the accuracy and cross-entropy of a model that ignores the music.

  python -m experiments.evaluate --workdir=runs/mel_2bar_small --split=test

Teacher-forced: every decoder input is the true previous token. Sampled: the decoder runs on its
own argmax outputs from z = mu(x), as in the paper's "sampling" column. Both count per-step token
accuracy over all steps (and tracks). The baseline predicts every step with the training split's
token frequencies (its accuracy is the most frequent token's share, mostly "no event").
"""

from __future__ import annotations

import math
from typing import Any

from absl import logging
from flax import nnx
import numpy as np

from common import pipeline
from common import training
from common.errors import UserError
from musicvae import data
from musicvae import train


def unigram_baseline(train_NTK: np.ndarray, eval_NTK: np.ndarray, vocab_sizes) -> dict[str, float]:
  """Per-token cross-entropy (nats) and accuracy on `eval_NTK` of predicting every step with the
  token frequencies of `train_NTK` (per track; add-one smoothed)."""
  ce, correct = 0.0, 0.0
  for k, vocab in enumerate(vocab_sizes):
    counts = np.bincount(train_NTK[..., k].ravel(), minlength=vocab) + 1.0
    log_p = np.log(counts / counts.sum())
    targets = eval_NTK[..., k].ravel()
    ce += -float(np.mean(log_p[targets]))
    correct += float(np.mean(targets == np.argmax(counts)))
  num_tracks = len(vocab_sizes)
  return {'baseline_ce_per_step': ce / num_tracks, 'baseline_accuracy': correct / num_tracks}


def evaluate_slices(model: nnx.Module, config: Any, slices_NTK: np.ndarray, seed: int = 0
                    ) -> dict[str, float]:
  """train.eval_fn's weighted means over `slices_NTK` (recon loss, accuracies, KL)."""
  batches = pipeline.make_eval_batches(
      slices_NTK, lambda x: {'tokens': x.astype(np.int32)},
      batch_size=config.get('eval_batch_size') or config.batch_size)
  return training.evaluate_model(train.eval_fn, model, batches, seed=seed)


def evaluate_from_flags(model: nnx.Module, config: Any, options: dict[str, Any]) -> dict:
  """Prints and returns reconstruction accuracies, KL and the unigram baseline on a split.

  options: split, data_dir, max_pieces (evaluate at most this many slices, evenly spaced), seed.
  """
  if options.get('data_dir'):
    config.data_dir = options['data_dir']
  cap = options.get('max_pieces')
  if cap is not None and int(cap) < 1:
    raise UserError(f'musicvae evaluate: --max_pieces must be >= 1, got {cap}.')
  split = options.get('split') or 'test'
  slices, stats = train.load_slices(config, split)
  if len(slices) == 0:
    raise UserError(f'musicvae evaluate: the {split} split of {config.dataset} has no '
                    f'{config.encoding.num_bars}-bar slice: '
                    f'{data.describe_extraction(stats, data.encoding_from_config(config))}.')
  if cap and len(slices) > int(cap):
    slices = slices[np.linspace(0, len(slices) - 1, int(cap)).astype(int)]
  logging.info('musicvae evaluate: %d slices of %s/%s', len(slices), config.dataset, split)
  metrics = evaluate_slices(model, config, slices, seed=int(options.get('seed') or 0))
  train_slices, _ = train.load_slices(config, 'train')
  num_steps = slices.shape[1]
  results = {'split': split, 'slices': int(len(slices)), **metrics,
             'kl_bits': metrics['kl'] / math.log(2.0),
             'recon_loss_per_step': metrics['recon_loss'] / (num_steps * slices.shape[2]),
             **unigram_baseline(train_slices, slices, model.vocab_sizes)}
  print(f'musicvae {config.variant} on {config.dataset} {split}: {len(slices)} slices of '
        f'{config.encoding.num_bars} bars ({num_steps} steps)')
  print(f'  teacher-forced accuracy  {results["accuracy"]:.4f}')
  print(f'  sampled accuracy         {results["sampled_accuracy"]:.4f}  (argmax decoding from mu)')
  print(f'  reconstruction loss      {results["recon_loss_per_step"]:.4f} nats/step')
  print(f'  KL(q(z|x) || p(z))       {results["kl"]:.2f} nats ({results["kl_bits"]:.1f} bits)')
  print(f'  baseline (token freqs)   accuracy {results["baseline_accuracy"]:.4f}, '
        f'{results["baseline_ce_per_step"]:.4f} nats/step')
  return results
