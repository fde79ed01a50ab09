"""Compound Word Transformer (and REMI) evaluation: per-family cross-entropy and accuracy, and the
negative log-likelihood per note, which CP and REMI models share.

  python -m experiments.evaluate --workdir=runs/cpword_small --split=valid
  python -m experiments.evaluate --workdir=runs/remi_small --split=valid --max_pieces=50

Every song of the split is cut into consecutive windows of data.seq_len tokens (the training
length), so every token after a song's first is predicted once, from the tokens before it in its
window. NLL per note = (summed cross-entropy of every predicted field of every word, or of every
event) / (notes among the targets: Note words for CP, Pitch events for REMI). Both representations
encode the same notes, so evaluated on the same songs the two figures compare directly (a REMI
window of seq_len events holds less music than a CP window of seq_len words, which counts against
REMI: less context per prediction).
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any

from absl import logging
from flax import nnx
import jax
import ml_collections
import numpy as np

from common import pipeline
from common import training
from common.errors import UserError
from cpword import tokens
from cpword import train


def window_metrics(model: nnx.Module, config: ml_collections.ConfigDict,
                   windows: list[np.ndarray], seed: int = 0) -> dict[str, float]:
  """train.make_eval_fn's weighted means over `windows`, plus the totals and nats per note."""
  batch_size = config.get('eval_batch_size') or config.batch_size
  batches = pipeline.make_eval_batches(windows, lambda w: {'tokens': w}, batch_size=batch_size)
  metrics = training.evaluate_model(train.make_eval_fn(config), model, batches, seed=seed)
  total_nll = metrics['nll_per_window'] * len(windows)
  num_notes = metrics['notes_per_window'] * len(windows)
  per_note = total_nll / num_notes if num_notes > 0 else None
  return metrics | {
      'windows': len(windows), 'nll_total': total_nll, 'notes': int(round(num_notes)),
      'nats_per_note': per_note,
      'bits_per_note': per_note / math.log(2.0) if per_note is not None else None}


def _present_families(model: nnx.Module, windows: list[np.ndarray]) -> list[str]:
  """The families with at least one predicted (non-ignored) target in the windows."""
  targets = np.stack(windows)[:, 1:]
  if targets.ndim == 2:
    targets = targets[..., None]
  used = (targets != tokens.IGNORE).any(axis=(0, 1))
  return [f.name for f, u in zip(model.families, used) if u]


def song_statistics(words_list: list[np.ndarray]) -> dict[str, float]:
  """Notes per bar and mean velocity bin over CP songs (what separates calm from excited music)."""
  notes, bars, velocity = 0, 0, 0.0
  for words in words_list:
    kind = words[:, tokens.F['type']]
    is_note = kind == tokens.TYPE_NOTE
    notes += int(is_note.sum())
    bars += int(((kind == tokens.TYPE_METRICAL) & (words[:, tokens.F['bar_beat']] == tokens.BAR)
                 ).sum())
    velocity += float(words[is_note, tokens.F['velocity']].sum())
  return {'songs': len(words_list), 'notes_per_bar': notes / max(bars, 1),
          'mean_velocity_bin': velocity / max(notes, 1)}


def emotion_report(model: nnx.Module, config: ml_collections.ConfigDict,
                   songs: tuple[np.ndarray, ...], *, num_songs: int, num_words: int,
                   seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
  """Per EMOPIA quadrant: the statistics of the split's songs and of `num_songs` songs generated
  with that quadrant's emotion token, so one can see whether the condition is followed."""
  from cpword import sample  # pylint: disable=g-import-not-at-top
  vocab = tokens.vocab_from_config(config)
  as_words = [s if s.ndim == 2 else tokens.remi_to_cp(s, vocab) for s in songs]
  report = {}
  for i, quadrant in enumerate(tokens.EMOTIONS):
    data = [w for w in as_words if tokens.emotion_of(w) == quadrant]
    start = sample.start_tokens(config, emotion=quadrant)
    generated = sample.generate(model, start, rng=jax.random.fold_in(jax.random.key(seed), i),
                                num_songs=num_songs, max_len=num_words,
                                settings=sample.settings_from_config(config),
                                min_len=num_words // 2, vocab=vocab)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', tokens.TokenWarning)  # a note cut off at the length limit
      gen_words = [g if g.ndim == 2 else tokens.remi_to_cp(g, vocab) for g in generated]
    report[quadrant] = {'data': song_statistics(data), 'generated': song_statistics(gen_words)}
  return report


def evaluate_from_flags(model: nnx.Module, config: ml_collections.ConfigDict,
                        options: dict[str, Any]) -> dict:
  """Prints and returns per-family CE / accuracy and nats per note on a split.

  options: split (default 'valid'), data_dir, max_pieces (the first N songs of the split), seed.
  """
  split = options.get('split') or 'valid'
  if split not in ('train', 'valid', 'test'):
    raise UserError(f"cpword evaluate: split {split!r} is not one of 'train', 'valid', 'test'.")
  cap = options.get('max_pieces')
  if cap is not None and int(cap) < 1:
    raise UserError(f'cpword evaluate: --max_pieces must be >= 1, got {cap}.')
  seed = int(options.get('seed') or 0)
  if options.get('data_dir'):
    config.data_dir = options['data_dir']
  if cap is not None:
    limit = config.get('max_pieces')
    config.max_pieces = int(cap) if limit is None else min(int(limit), int(cap))
  seq_len = config.data.seq_len
  songs = train.tokenized_dataset(config, split)
  windows = train.eval_windows(songs, seq_len, sys.maxsize)
  logging.info('cpword evaluate: %d songs, %d windows of %s/%s', len(songs), len(windows),
               config.dataset, split)
  results = {'split': split, 'representation': config.representation, 'songs': len(songs),
             'window_len': seq_len, **window_metrics(model, config, windows, seed)}

  if config.data.get('emotion'):
    results['emotion'] = emotion_report(
        model, config, songs, num_songs=int(options.get('num_samples') or 4),
        num_words=min(512, model.max_len), seed=seed)

  unit = 'events' if config.representation == 'remi' else 'words'
  print(f'cpword {config.get("variant", "")} ({config.representation}) on {config.dataset} '
        f'{split}: {len(songs)} songs, {len(windows)} windows of {seq_len} {unit}')
  print(f'  {"family":<10} {"CE (nats)":>10} {"accuracy":>9}')
  for name in _present_families(model, windows):
    print(f'  {name:<10} {results["ce_" + name]:>10.4f} {results["acc_" + name]:>9.4f}')
  print(f'  {"mean":<10} {results["ce"]:>10.4f}            (the training loss: mean over families)')
  if results['nats_per_note'] is None:
    print('  NLL        n/a (no notes among the targets)')
  else:
    print(f'  NLL        {results["nats_per_note"]:.4f} nats/note ({results["bits_per_note"]:.4f} '
          f'bits; {results["nll_total"]:,.1f} nats over {results["notes"]:,} notes)')
  if 'emotion' in results:
    print('  emotion    data: notes/bar, velocity bin | generated: notes/bar, velocity bin')
    for quadrant, stats in results['emotion'].items():
      d, g = stats['data'], stats['generated']
      print(f'  {quadrant:<10} {d["notes_per_bar"]:6.2f} {d["mean_velocity_bin"]:6.2f} '
            f'({d["songs"]} songs) | {g["notes_per_bar"]:6.2f} {g["mean_velocity_bin"]:6.2f} '
            f'({g["songs"]} songs)')
  return results
