"""Coconet's piece of the shared training loop: data, orderless-NADE loss, eval and samples.

Batches carry pitch indices, 'pitch_index' int32 (B, crop_len, 4) with -1 = silent (or padding past
the end of a short piece); the loss builds the one-hot rolls on the device. A training example is a
random crop of a chorale, optionally transposed by a random number of semitones that keeps every
note in 36..81.

The loss (config.loss):
  magenta_total   Magenta's objective (lib_graph.py compute_loss, optimize_mask_only=False, the
                  default there): masks drawn over all T x 4 variables, silent ones included; the
                  cross-entropy of EVERY variable, hidden or given, times (T * 4) / (number hidden)
                  of its piece, summed and divided by (B * T * 4).
  magenta_mask    the same over the hidden variables only (optimize_mask_only=True).
  rescaled_masked this code's earlier loss: masks over the sounding variables only, the hidden
                  ones' cross-entropy times (sounding / hidden) per piece, averaged over pieces
                  (a per-piece orderless NLL estimate). Runs recorded before `loss` existed keep it.
The evaluation loss is always rescaled_masked under orderless masks (an NLL estimate).
"""

from __future__ import annotations

import collections
import functools
import os
from typing import Any, Iterator, Sequence

from absl import logging

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import generation
from common import masking
from common import training
from common.errors import UserError
from coconet import data
from coconet import model as model_lib
from coconet import sample as sample_lib

Batch = dict[str, Any]


def chorales(examples: Sequence[Any], ids: Sequence[str]
             ) -> tuple[list[np.ndarray], dict[str, list[str]]]:
  """The (T, 4) pitch arrays of a data set's examples: chorale arrays as they are, MIDI
  NoteSequences through data.four_part_pitches. Returns (pieces, skipped), skipped mapping each
  reason ('not four parts', ...) to the ids of the pieces it dropped."""
  pieces, skipped = [], collections.defaultdict(list)
  for example, name in zip(examples, ids):
    if isinstance(example, np.ndarray):
      pieces.append(np.asarray(example, np.float32))
      continue
    try:
      pieces.append(data.four_part_pitches(example, name=name))
    except UserError as e:
      message = str(e)
      reason = ('not four parts' if 'not 4 (SATB)' in message else
                'no pitched notes' if 'no pitched notes' in message else 'out of range')
      skipped[reason].append(name)
  return pieces, dict(skipped)


@functools.lru_cache(maxsize=8)
def _load(name: str, data_dir: str | None, split: str, max_pieces: int | None) -> tuple:
  from common import datasets  # pylint: disable=g-import-not-at-top
  kwargs = {} if max_pieces is None else {'limit': int(max_pieces)}
  dataset = datasets.get_dataset(name, data_dir, split, **kwargs)
  pieces, skipped = chorales(dataset.examples, dataset.ids)
  for path, _ in dataset.skipped:
    skipped.setdefault('unreadable', []).append(path)
  if skipped:
    total = len(pieces) + sum(len(v) for v in skipped.values())
    reasons = '; '.join(f'{len(ids)} {reason} (e.g. {ids[0]})' for reason, ids in skipped.items())
    logging.warning('%s %s: %d of %d pieces are four-part chorales; skipped %s', name, split,
                    len(pieces), total, reasons)
  return tuple(pieces), skipped


def load_pieces(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, ...]:
  """The (T, 4) pitch arrays of a split (cached: music21 parsing is slow). MIDI pieces that are
  not four-part chorales are skipped with a logged count per reason (see `chorales`); UserError
  when the training split keeps none."""
  pieces, skipped = _load(config.dataset, config.get('data_dir'), split,
                          config.get('max_pieces'))
  if not pieces and split == 'train':
    reasons = '; '.join(f'{len(ids)} {reason} (e.g. {ids[0]})' for reason, ids in skipped.items())
    raise UserError(f'{config.dataset}: no four-part pieces in the train split to learn from'
                    f'{": " + reasons if reasons else ""}. Coconet learns chorales of exactly '
                    'four parts (one MIDI track or instrument per voice)')
  return pieces


def transpose_shift(pitches_TI: np.ndarray, max_shift: int, rng: np.random.Generator) -> int:
  """A uniform shift in -max_shift..max_shift that keeps the notes in MIN_PITCH..MAX_PITCH."""
  if max_shift <= 0 or np.isnan(pitches_TI).all():
    return 0
  low, high = np.nanmin(pitches_TI), np.nanmax(pitches_TI)
  lo = int(max(-max_shift, data.MIN_PITCH - low))
  hi = int(min(max_shift, data.MAX_PITCH - high))
  return int(rng.integers(lo, hi + 1)) if lo <= hi else 0


def crop_indices(pitches_TI: np.ndarray, config: ml_collections.ConfigDict,
                 rng: np.random.Generator) -> np.ndarray:
  """A training example: random crop (NaN-padded), random transposition -> int32 indices."""
  from common import pipeline  # pylint: disable=g-import-not-at-top
  crop = pipeline.random_crop(np.asarray(pitches_TI, np.float32), config.crop_len, rng)
  crop = crop + transpose_shift(crop, config.get('transpose_max', 0), rng)
  return data.pitches_to_indices(crop)


def eval_segments(pieces, crop_len: int) -> list[np.ndarray]:
  """Every piece cut into consecutive windows of crop_len, the last padded with NaN (silent)."""
  out = []
  for piece in pieces:
    for start in range(0, len(piece), crop_len):
      window = np.full((crop_len, data.NUM_INSTRUMENTS), np.nan, np.float32)
      chunk = piece[start:start + crop_len]
      window[:len(chunk)] = chunk
      out.append(window)
  return out


def _rolls(batch: Batch) -> tuple[jax.Array, jax.Array]:
  idx_BTI = batch['pitch_index']
  roll_BTPI = jax.nn.one_hot(idx_BTI, data.NUM_PITCHES, axis=2, dtype=jnp.float32)  # -1 -> zeros
  return roll_BTPI, idx_BTI >= 0


LOSSES = ('magenta_total', 'magenta_mask', 'rescaled_masked')


def magenta_losses(logits_BTPI: jax.Array, roll_BTPI: jax.Array, mask_BTI: jax.Array,
                   lengths_B: jax.Array | None = None) -> dict[str, jax.Array]:
  """Magenta's loss_total, loss_mask and loss_unmask (lib_graph.py compute_loss, softmax loss,
  rescale_loss=True); steps at or past a piece's length (default: T) count nowhere."""
  batch, steps, _, voices = roll_BTPI.shape
  lengths_B = jnp.full((batch,), steps, jnp.float32) if lengths_B is None else lengths_B
  pad_BT1 = (jnp.arange(steps)[None, :] < lengths_B[:, None]).astype(jnp.float32)[:, :, None]
  mask_BTI = pad_BT1 * mask_BTI.astype(jnp.float32)
  unmask_BTI = pad_BT1 * (1.0 - mask_BTI)
  ce_BTI = -jnp.sum(jax.nn.log_softmax(logits_BTPI.astype(jnp.float32), axis=2) * roll_BTPI,
                    axis=2) * pad_BT1
  variables_B = lengths_B * voices
  mask_size_B = jnp.sum(mask_BTI, axis=(1, 2))
  unmask_size_B = jnp.sum(unmask_BTI, axis=(1, 2))
  rescaled_BTI = ce_BTI * (variables_B / jnp.maximum(mask_size_B, 1.0))[:, None, None]
  return {
      'loss_total': jnp.sum(rescaled_BTI) / jnp.sum(variables_B),
      'loss_mask': jnp.sum(mask_BTI * rescaled_BTI) / jnp.maximum(jnp.sum(mask_size_B), 1.0),
      'loss_unmask': (jnp.sum(unmask_BTI * rescaled_BTI)
                      / jnp.maximum(jnp.sum(unmask_size_B), 1.0)),
  }


def training_loss(model: nnx.Module, batch: Batch, rng: jax.Array, mask_kind: str, loss: str
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The training objective `loss` (one of LOSSES) of one batch under fresh masks."""
  if loss == 'rescaled_masked':
    return masked_loss(model, batch, rng, mask_kind)
  if loss not in LOSSES:
    raise ValueError(f'unknown loss {loss!r}; expected one of {", ".join(LOSSES)}')
  roll_BTPI, valid_BTI = _rolls(batch)
  mask_BTI = masking.sample_mask(mask_kind, rng, valid_BTI.shape)  # over every variable
  logits_BTPI = model(roll_BTPI, mask_BTI)
  losses = magenta_losses(logits_BTPI, roll_BTPI, mask_BTI)
  terms = masking.masked_cross_entropy_terms(logits_BTPI, roll_BTPI, mask_BTI, class_axis=2)
  metrics = dict(losses, ce_per_masked=jnp.sum(terms['ce_sum'])
                 / jnp.maximum(jnp.sum(terms['num_masked']), 1.0),
                 mask_fraction=jnp.mean(mask_BTI))
  return (losses['loss_total'] if loss == 'magenta_total' else losses['loss_mask']), metrics


def masked_loss(model: nnx.Module, batch: Batch, rng: jax.Array, mask_kind: str,
                weight_B: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The rescaled masked cross-entropy of one batch under freshly drawn masks."""
  roll_BTPI, valid_BTI = _rolls(batch)
  mask_BTI = masking.sample_mask(mask_kind, rng, valid_BTI.shape, valid=valid_BTI)
  logits_BTPI = model(roll_BTPI, mask_BTI)
  return masking.rescaled_masked_cross_entropy(logits_BTPI, roll_BTPI, mask_BTI, class_axis=2,
                                               weight_B=weight_B)


def get_task(config: ml_collections.ConfigDict) -> training.TrainTask:
  """The TrainTask for `python -m experiments.train --config=coconet/configs.py:<variant>`."""

  def build_model(cfg: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
    return model_lib.build_model(cfg.model, rngs,
                                 mixed_precision=bool(cfg.get('mixed_precision', False)))

  loss_kind = config.get('loss', 'magenta_total')
  if loss_kind not in LOSSES:
    raise UserError(f'--config.loss={loss_kind!r}: expected one of {", ".join(LOSSES)}')

  def loss_fn(model, batch, rng, step):
    del step
    return training_loss(model, batch, rng, config.mask, loss_kind)

  def train_iterator(cfg, process_index: int, process_count: int) -> Iterator[Batch]:
    from common import pipeline  # pylint: disable=g-import-not-at-top
    pieces = load_pieces(cfg, 'train')
    transform = lambda piece, rng: {'pitch_index': crop_indices(piece, cfg, rng)}
    return pipeline.make_train_iterator(pieces, transform, batch_size=cfg.batch_size,
                                        seed=cfg.seed, process_index=process_index,
                                        process_count=process_count)

  def eval_fn(model, batch, rng):
    # Always orderless masks: the eval loss is then the orderless NLL estimate whatever the
    # training masks were.
    loss, metrics = masked_loss(model, batch, rng, 'orderless', weight_B=batch['weight'])
    return {'loss': loss, 'ce_per_masked': metrics['ce_per_masked']}

  def eval_batches(cfg, process_index: int, process_count: int):
    from common import pipeline  # pylint: disable=g-import-not-at-top
    windows = eval_segments(load_pieces(cfg, cfg.get('eval_split', 'valid')), cfg.crop_len)
    limit = cfg.get('eval_max_windows')
    windows = windows[:limit] if limit else windows
    return pipeline.make_eval_batches(
        windows, lambda w: {'pitch_index': data.pitches_to_indices(w)},
        batch_size=cfg.batch_size, process_index=process_index, process_count=process_count)

  def sample_hook(model, step: int, workdir: str) -> None:
    write_samples(model, config, step, workdir)

  return training.TrainTask(build_model=build_model, loss_fn=loss_fn,
                            train_iterator=train_iterator, eval_fn=eval_fn,
                            eval_batches=eval_batches, sample_hook=sample_hook)


def write_samples(model: nnx.Module, config: ml_collections.ConfigDict, step: int,
                  workdir: str) -> list[str]:
  """Harmonizes a validation soprano and generates from scratch into workdir/samples/."""
  length = config.get('sample_len', config.crop_len)
  gibbs_steps = config.get('sample_gibbs_steps')
  key = jax.random.fold_in(jax.random.key(config.seed), step)
  outputs = {}
  pieces = [p for p in load_pieces(config, config.get('eval_split', 'valid'))
            if not np.isnan(p[:length, 0]).any()]
  if pieces:
    soprano = pieces[0][:length, 0]
    outputs['harmonize'] = sample_lib.harmonize(model, key, soprano, gibbs_steps=gibbs_steps)
  outputs['generate'] = sample_lib.generate_from_scratch(model, jax.random.fold_in(key, 1), length,
                                                         gibbs_steps=gibbs_steps)
  samples = [generation.Piece(f'step{step:07d}_{task}_{i:02d}', data.pitches_to_sequence(p))
             for task, out in outputs.items() for i, p in enumerate(np.asarray(out))]
  return generation.write_pieces(samples, os.path.join(workdir, 'samples'))
