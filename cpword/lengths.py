"""Song lengths in CP words and in REMI events: how much shorter compound words make a sequence.

  python -m experiments.token_lengths --data=pop1k7 --split=train --output=lengths.json
  python -m experiments.token_lengths --data=pop1k7 --split=all    # every song

Songs are tokenised exactly as for training (train.tokenized_dataset: same chord handling, same
skipped pieces); REMI is the CP words' own REMI form (what representation='remi' trains on).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.errors import UserError
from cpword import configs
from cpword import tokens
from cpword import train


def _summary(lengths: np.ndarray) -> dict[str, float]:
  return {'mean': float(lengths.mean()), 'median': float(np.median(lengths)),
          'max': int(lengths.max()), 'min': int(lengths.min()), 'total': int(lengths.sum())}


SPLITS = ('train', 'valid', 'test')
# The original's MAX_LEN (CW:dataset/representations/uncond/cp/compile.py:84-86): it trains only
# on songs of fewer than MAX_LEN - 2 words.
ORIGINAL_MAX_LEN = 3584


def token_lengths(split: str = 'train', *, variant: str = 'small', data: str | None = None,
                  data_dir: str | None = None, limit: int | None = None) -> dict[str, Any]:
  """Per-split length statistics of CP words and REMI events (songs, mean, median, max, ratio),
  and how many songs the original's whole-song training keeps (< 3,582 words) with their mean.

  split: 'train' | 'valid' | 'test' | 'all' (the three together: every song of the data set).
  variant: a cpword config variant (its tokens and data settings); data overrides its dataset.
  """
  if split not in SPLITS + ('all',):
    raise UserError(f'token lengths: split {split!r} is not one of {", ".join(SPLITS)}, all')
  if limit is not None and limit < 1:
    raise UserError(f'token lengths: limit must be >= 1, got {limit}')
  config = configs.get_config(variant)
  config.representation = 'cp'
  if data:
    config.dataset = data
  if data_dir:
    config.data_dir = data_dir
  if limit is not None:
    config.max_pieces = limit
  vocab = tokens.vocab_from_config(config)
  songs = sum((train.tokenized_dataset(config, name)
               for name in (SPLITS if split == 'all' else (split,))), ())
  cp = np.array([len(words) for words in songs])
  kept = cp[cp < ORIGINAL_MAX_LEN - 2]
  remi = np.array([len(tokens.cp_to_remi(words, vocab)) for words in songs])
  notes = np.array([int((words[:, tokens.F['type']] == tokens.TYPE_NOTE).sum()) for words in songs])
  return {'data': config.dataset, 'split': split, 'songs': len(songs),
          'cp_words': _summary(cp), 'remi_events': _summary(remi), 'notes': _summary(notes),
          'kept_by_original': {'songs': len(kept), 'mean': float(kept.mean()) if len(kept) else 0.0},
          'remi_per_cp': float(remi.sum() / cp.sum()),
          'remi_per_cp_median_song': float(np.median(remi / cp))}


def format_table(stats: dict[str, Any]) -> str:
  """A few lines for the terminal."""
  lines = [f'{stats["data"]} {stats["split"]}: {stats["songs"]:,} songs',
           f'  {"":<12} {"mean":>9} {"median":>9} {"max":>9} {"total":>12}']
  for key, name in (('cp_words', 'CP words'), ('remi_events', 'REMI events'), ('notes', 'notes')):
    s = stats[key]
    lines.append(f'  {name:<12} {s["mean"]:>9,.1f} {s["median"]:>9,.1f} {s["max"]:>9,} '
                 f'{s["total"]:>12,}')
  lines.append(f'  REMI / CP    {stats["remi_per_cp"]:.3f} (all tokens), '
               f'{stats["remi_per_cp_median_song"]:.3f} (median song)')
  kept = stats['kept_by_original']
  lines.append(f'  {kept["songs"]:,} songs have fewer than {ORIGINAL_MAX_LEN - 2:,} CP words (the '
               f'original trains on those): mean {kept["mean"]:,.1f} words')
  return '\n'.join(lines)
