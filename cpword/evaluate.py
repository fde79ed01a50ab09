"""Compound Word Transformer (and REMI) evaluation: per-family cross-entropy and accuracy, and the
negative log-likelihood per note, which CP and REMI models share.

  python -m experiments.evaluate --workdir=runs/cpword_small --split=valid
  python -m experiments.evaluate --workdir=runs/remi_small --split=valid --max_pieces=50
  python -m experiments.evaluate --workdir=pretrained/cpword_small --split=valid \
      --context_lengths=256,512,1024,2048

Every song of the split is cut into consecutive windows of data.seq_len tokens (the training
length), so every token after a song's first is predicted once, from the tokens before it in its
window (and after the song's emotion token, which leads every window as in training). NLL per
note = (summed cross-entropy of every predicted field of every word, or of every event) / (notes
among the targets: Note words for CP, Pitch events for REMI). Both representations encode the
same notes, so evaluated on the same songs the two figures compare directly (a REMI window of
seq_len events holds less music than a CP window of seq_len words, which counts against REMI:
less context per prediction).

`context_nll` scores the same target words (the 256 before word max(C) + 1 of every song that
long) given the C words before them, for several C: as generation conditions (the context slides
past the training length, sample.window_bases) and, for comparison, with all C words in one pass.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import pipeline
from common import training
from common.errors import UserError
from cpword import sample
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
  vocab = tokens.vocab_from_config(config)
  window, stride = sample.context_window(config)
  as_words = [s if s.ndim == 2 else tokens.remi_to_cp(s, vocab) for s in songs]
  report = {}
  for i, quadrant in enumerate(tokens.EMOTIONS):
    data = [w for w in as_words if tokens.emotion_of(w) == quadrant]
    start = sample.start_tokens(config, emotion=quadrant)
    generated = sample.generate(model, start, rng=jax.random.fold_in(jax.random.key(seed), i),
                                num_songs=num_songs, max_len=num_words,
                                settings=sample.settings_from_config(config),
                                min_len=num_words // 2, vocab=vocab, window=window,
                                stride=stride)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', tokens.TokenWarning)  # a note cut off at the length limit
      gen_words = [g if g.ndim == 2 else tokens.remi_to_cp(g, vocab) for g in generated]
    report[quadrant] = {'data': song_statistics(data), 'generated': song_statistics(gen_words)}
  return report


@functools.lru_cache(maxsize=4)
def _jitted_logits(graphdef: nnx.GraphDef):
  def logits(state, inputs_BTF, target_type_BT):
    return nnx.merge(graphdef, state)(inputs_BTF, target_type_BT)
  return jax.jit(logits)


def _target_nll(model: nnx.Module, chunks_BTF: np.ndarray, first: int,
                note_range: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """(summed NLL of the used fields, notes) per target position of one forward pass over
  chunks_BTF[:, :-1], for the targets chunks_BTF[:, first + 1:]."""
  graphdef, state = nnx.split(model)
  inputs_BTF, targets_BTF = chunks_BTF[:, :-1], chunks_BTF[:, 1:]
  logits = _jitted_logits(graphdef)(state, jnp.asarray(inputs_BTF),
                                    jnp.asarray(targets_BTF[..., 0]))
  nll_BT = 0.0
  for i, family in enumerate(model.families):
    target_BT = targets_BTF[..., i]
    ce_BT = np.asarray(optax.softmax_cross_entropy_with_integer_labels(
        logits[family.name].astype(jnp.float32), jnp.asarray(target_BT)))
    nll_BT = nll_BT + ce_BT * (target_BT != tokens.IGNORE)
  first_BT = targets_BTF[..., 0]
  notes_BT = (first_BT >= note_range[0]) & (first_BT < note_range[1])
  return nll_BT[:, first:], notes_BT[:, first:]


def context_nll(model: nnx.Module, config: ml_collections.ConfigDict,
                songs: tuple[np.ndarray, ...], context_lengths: list[int], *,
                target_words: int = 256, batch_size: int = 16) -> dict[str, Any]:
  """NLL per note of the same targets given C tokens of context, for every C in context_lengths.

  The targets are the `target_words` tokens before token E = max(context_lengths) + 1 of every song
  at least E tokens long (after its emotion token, which stays first); for a context C, tokens
  E - C - 1 .. E - 1 are read one by one, each predicting the next. 'windowed': as generation
  reads them (sample.generate's sliding window of config.data.seq_len tokens and
  sampling.window_stride); 'full': every token attends to all before it in one pass (None where
  C exceeds the model's max_len). Returns {'songs', 'target_words', 'notes', 'rows': [{'context',
  'windowed', 'full'} in nats per note]}.
  """
  if not context_lengths or min(context_lengths) < target_words:
    raise UserError(f'context lengths must be >= the {target_words} target words: '
                    f'{context_lengths}')
  vocab = tokens.vocab_from_config(config)
  notes = train.note_onset_range(config)
  window, stride = sample.context_window(config)
  end = max(context_lengths) + 1
  picked = []
  for song in songs:
    song_TF = song[:, None] if song.ndim == 1 else song
    pinned = song_TF[:1] if tokens.starts_with_emotion(song, vocab) else song_TF[:0]
    if len(song_TF) - len(pinned) >= end:
      picked.append((pinned, song_TF[len(pinned):len(pinned) + end]))
  if not picked:
    raise UserError(f'no song has the {end:,} tokens that a context of {end - 1:,} needs')
  pinned_len = len(picked[0][0])
  if any(len(p) != pinned_len for p, _ in picked):
    picked = [(p, b) for p, b in picked if len(p) == pinned_len]
  sample.check_window(window, stride, pinned_len, model.max_len)
  model.eval()
  rows, total_notes = [], None
  for context in sorted(context_lengths):
    first_target = context - target_words  # reading token n predicts n + 1
    bases = sample.window_bases(pinned_len + context, window, stride,
                                pinned_len)[pinned_len:] - pinned_len
    # Reading tokens with one base form a segment: one forward pass over pinned + [base, last].
    sums = {'windowed': 0.0, 'full': 0.0}
    note_count = 0
    for start in range(0, len(picked), batch_size):
      group = picked[start:start + batch_size]
      pinned_BPF = np.stack([p for p, _ in group])
      chunks_BTF = np.stack([b[end - context - 1:] for _, b in group])  # context + 1 tokens
      for base in np.unique(bases[first_target:]):
        reads = np.nonzero(bases == base)[0]
        reads = reads[reads >= first_target]
        piece = np.concatenate([pinned_BPF, chunks_BTF[:, base:reads[-1] + 2]], axis=1)
        # Padding after the targets changes nothing before it (causal) and keeps one shape.
        piece = np.pad(piece, [(0, 0), (0, window + 1 - piece.shape[1]), (0, 0)])
        nll, is_note = _target_nll(model, piece, pinned_len + reads[0] - base, notes)
        sums['windowed'] += float(nll.sum())
        note_count += int(is_note.sum())
      if context + pinned_len <= model.max_len:
        piece = np.concatenate([pinned_BPF, chunks_BTF], axis=1)
        nll, _ = _target_nll(model, piece, pinned_len + first_target, notes)
        sums['full'] += float(nll.sum())
      else:
        sums['full'] = None
    total_notes = note_count
    rows.append({'context': context, 'windowed': sums['windowed'] / max(note_count, 1),
                 'full': None if sums['full'] is None else sums['full'] / max(note_count, 1)})
  return {'songs': len(picked), 'target_words': target_words, 'notes': total_notes,
          'window': window, 'stride': stride, 'rows': rows}


def format_context_table(result: dict[str, Any], unit: str = 'words') -> str:
  lines = [f'NLL per note of the same {result["target_words"]} target {unit} of '
           f'{result["songs"]} songs ({result["notes"]:,} notes), by context length '
           f'(windowed: a context of at most {result["window"]}, sliding by {result["stride"]}, '
           'as generation reads it; full: all of it at once)',
           f'  {"context":>8} {"windowed":>9} {"full":>9}']
  for row in result['rows']:
    full = 'n/a' if row['full'] is None else f'{row["full"]:.3f}'
    lines.append(f'  {row["context"]:>8,} {row["windowed"]:>9.3f} {full:>9}')
  return '\n'.join(lines)


def evaluate_from_flags(model: nnx.Module, config: ml_collections.ConfigDict,
                        options: dict[str, Any]) -> dict:
  """Prints and returns per-family CE / accuracy and nats per note on a split.

  options: split (default 'valid'), data_dir, max_pieces (the first N songs of the split), seed;
  context_lengths: only the context table (context_nll) for these lengths.
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
  unit = 'events' if config.representation == 'remi' else 'words'
  if options.get('context_lengths'):
    try:
      lengths = [int(c) for c in options['context_lengths']]
    except ValueError:
      raise UserError(f'--context_lengths={",".join(options["context_lengths"])}: give whole '
                      'numbers of words, e.g. 256,512,1024,2048') from None
    result = context_nll(model, config, songs, lengths)
    print(f'cpword {config.get("variant", "")} ({config.representation}) on {config.dataset} '
          f'{split}')
    print(format_context_table(result, unit))
    return {'split': split, 'representation': config.representation, **result}
  windows = train.eval_windows(songs, seq_len, sys.maxsize, tokens.vocab_from_config(config))
  logging.info('cpword evaluate: %d songs, %d windows of %s/%s', len(songs), len(windows),
               config.dataset, split)
  results = {'split': split, 'representation': config.representation, 'songs': len(songs),
             'window_len': seq_len, **window_metrics(model, config, windows, seed)}

  if config.data.get('emotion'):
    results['emotion'] = emotion_report(
        model, config, songs, num_songs=int(options.get('num_samples') or 4),
        num_words=min(512, model.max_len), seed=seed)

  print(f'cpword {config.get("variant", "")} ({config.representation}) on {config.dataset} '
        f'{split}: {len(songs)} songs, {len(windows)} windows of {seq_len} {unit}')
  print(f'  {"family":<10} {"CE (nats)":>10} {"accuracy":>9}')
  for name in _present_families(model, windows):
    print(f'  {name:<10} {results["ce_" + name]:>10.4f} {results["acc_" + name]:>9.4f}')
  loss_kind = config.get('loss', 'original')
  what = ('sum over the families of their CE over every word, IGNORE fields included, / '
          f'{8 if config.data.get("emotion") else 7}' if loss_kind == 'original' else
          'mean over families')
  print(f'  {"loss":<10} {results["ce"]:>10.4f}            (config.loss={loss_kind!r}: {what})')
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
