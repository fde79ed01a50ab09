"""Training task of the Compound Word Transformer (CP) and of the REMI baseline.

A dataset is tokenised once per process (CP words or REMI events per song). Training takes random
windows of seq_len + 1 tokens, or (data.whole_songs) whole songs padded to seq_len + 1, as the
original: songs longer than that are left out, and by default batches come in the original's
fixed order, longest songs first (data.song_order). Padding is 0, so a target whose type (CP) or
event (REMI) is 0 is padding.

CP loss (config.loss): 'original' (CW:workspace/uncond/cp-linear/main-cp.py:295-330, 587): each
family's cross-entropy over every real position, IGNORE targets included, the 7 families summed
and divided by 7 (8 with emotion); 'masked_mean': each family's cross-entropy over the fields its
words use, averaged over the families present. The field heads are teacher-forced on the target
type. REMI loss: cross-entropy over non-padding events. Evaluation reports the same per family,
and the NLL per note, on fixed windows.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Iterator

from flax import nnx
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common import datasets
from common import generation
from common import midi
from common import pipeline
from common import training
from common.errors import UserError
from cpword import model as model_lib
from cpword import sample
from cpword import tokens

_EMOTION_IN_NAME = re.compile(r'^(Q[1-4])_')
LOSSES = ('original', 'masked_mean')
SONG_ORDERS = ('longest_first', 'shuffled')


build_model = model_lib.build_model


# ------------------------------------------------------------------------------------------------
# Data.


def synthetic_pieces(num_pieces: int, seed: int = 0) -> list[midi.NoteSequence]:
  """Small on-grid pop-like pieces (chord on each bar, a melody of 8ths); the 'tiny' data set."""
  rng = np.random.default_rng(seed)
  pieces = []
  progression = [(0, 4, 7), (9, 12, 16), (5, 9, 12), (7, 11, 14)]
  for _ in range(num_pieces):
    seq = midi.NoteSequence()
    qpm = float(rng.choice([80, 101, 119, 140]))
    seq.tempos.add(time=0.0, qpm=qpm)
    sec_per_step = 60.0 / qpm / 4
    key = int(rng.integers(48, 60))
    for bar in range(int(rng.integers(2, 5))):
      chord = progression[bar % 4]
      for p in chord:
        seq.notes.add(pitch=key + p, velocity=61, start_time=bar * 16 * sec_per_step,
                      end_time=(bar * 16 + 16) * sec_per_step)
      for step in range(0, 16, 2):
        p = key + 12 + chord[int(rng.integers(0, 3))]
        seq.notes.add(pitch=p, velocity=89, start_time=(bar * 16 + step) * sec_per_step,
                      end_time=(bar * 16 + step + 2) * sec_per_step)
    seq.total_time = max(n.end_time for n in seq.notes)
    pieces.append(seq)
  return pieces


def _with_chord_markers(seq: midi.NoteSequence, data_dir: str | None, name: str,
                        piece_id: str) -> midi.NoteSequence:
  root = data_dir or datasets.default_data_dir(name)
  for path in (os.path.join(root, piece_id), os.path.join(root, name, piece_id)):
    if os.path.exists(path):
      return tokens.add_chord_markers(seq, path)
  return seq


@functools.lru_cache(maxsize=8)
def _tokenized(data_name: str, data_dir: str | None, split: str, limit: int | None,
               representation: str, vocab_json: str, emotion: bool, chords: str,
               num_workers: int | None) -> tuple[np.ndarray, ...]:
  vocab = tokens.Vocab.from_json(vocab_json)
  if data_name == 'synthetic':
    count = {'train': 16, 'valid': 4, 'test': 4}.get(split, 24)
    seed = {'train': 0, 'valid': 1, 'test': 2}.get(split, 3)
    seqs = synthetic_pieces(count if limit is None else min(count, limit), seed)
    ids = [f'synthetic/{i}' for i in range(len(seqs))]
  else:
    kwargs = {'limit': limit}
    if num_workers is not None:
      kwargs['num_workers'] = num_workers
    ds = datasets.get_dataset(data_name, data_dir, split, **kwargs)
    seqs, ids = ds.examples, ds.ids
  out = []
  for seq, piece_id in zip(seqs, ids):
    try:
      if data_name in ('pop1k7', 'pop909') and chords in ('auto', 'annotations'):
        seq = _with_chord_markers(seq, data_dir, data_name, piece_id)
      emotion_tag = None
      if emotion:
        match = _EMOTION_IN_NAME.match(os.path.basename(piece_id))
        emotion_tag = match.group(1) if match else None
      words = tokens.encode_cp(seq, vocab, emotion=emotion_tag, chords=chords)
    except (UserError, ValueError, IndexError) as e:
      logging.warning('cpword: skipped %s (%s)', piece_id, e)
      continue
    out.append(tokens.cp_to_remi(words, vocab) if representation == 'remi' else words)
  if not out:
    raise UserError(f'cpword: no usable pieces in {data_name} split {split}')
  return tuple(out)


def tokenized_dataset(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, ...]:
  """Every song of `split` as CP words (N, F) or REMI events (N,), tokenised once per process."""
  d = config.data
  return _tokenized(config.dataset, config.get('data_dir'), split, config.get('max_pieces'),
                    config.representation,
                    tokens.vocab_from_config(config).to_json(), bool(d.get('emotion', False)),
                    d.get('chords', 'auto'), d.get('num_workers'))


starts_with_emotion = tokens.starts_with_emotion


def _window_transform(seq_len: int, vocab: tokens.Vocab):
  def transform(song: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if starts_with_emotion(song, vocab):
      # Most windows start mid-song; keeping the emotion token first in every window lets the
      # model learn the condition from all of them, not from the few that start at the top.
      rest = pipeline.random_crop(song[1:], seq_len, rng, pad_value=0)
      window = np.concatenate([song[:1], rest])
    else:
      window = pipeline.random_crop(song, seq_len + 1, rng, pad_value=0)
    return {'tokens': window.astype(np.int32)}
  return transform


def pad_song(song: np.ndarray, length: int) -> np.ndarray:
  """A song (N[, F]) padded with 0 (padding) to `length` tokens."""
  pad = [(0, length - len(song))] + [(0, 0)] * (song.ndim - 1)
  return np.pad(song, pad).astype(np.int32)


def whole_songs(songs: tuple[np.ndarray, ...], seq_len: int) -> list[np.ndarray]:
  """The songs that fit one sequence of seq_len + 1 tokens (seq_len predictions), as the original
  keeps only songs shorter than MAX_LEN - 2 (CW:dataset/representations/uncond/cp/compile.py)."""
  return [song for song in songs if len(song) <= seq_len + 1]


def eval_windows(songs: tuple[np.ndarray, ...], seq_len: int, max_windows: int,
                 vocab: tokens.Vocab | None = None) -> list[np.ndarray]:
  """Consecutive windows of seq_len + 1 tokens (overlapping by one), padded with 0.

  With `vocab`, a song that starts with an emotion token keeps it first in every window (and the
  rest of each window is seq_len consecutive tokens), as in training: every window carries the
  condition.
  """
  windows = []
  for song in songs:
    if vocab is not None and starts_with_emotion(song, vocab):
      # [emotion] + seq_len tokens: every token after the emotion is a target once.
      cuts = [np.concatenate([song[:1], song[1 + start:1 + start + seq_len]])
              for start in range(0, max(len(song) - 1, 1), seq_len)]
    else:
      cuts = [song[start:start + seq_len + 1] for start in range(0, max(len(song) - 1, 1), seq_len)]
    for window in cuts:
      windows.append(pad_song(window, seq_len + 1))
      if len(windows) >= max_windows:
        return windows
  return windows


def _ordered_iterator(songs: list[np.ndarray], seq_len: int, batch_size: int,
                      process_index: int, process_count: int) -> Iterator[dict]:
  """The original's batches: songs longest first, batch b = songs [bB, bB + B) in every epoch,
  no shuffling; the len % B shortest songs are never used (CW:workspace/uncond/cp-linear/
  main-cp.py:552-584)."""
  if batch_size % process_count:
    raise UserError(f'batch_size {batch_size} must be a multiple of the process count '
                    f'{process_count}')
  order = sorted(range(len(songs)), key=lambda i: -len(songs[i]))  # stable: ties keep file order
  used = len(order) // batch_size * batch_size
  if not used:
    raise UserError(f'cpword: {len(songs)} whole songs, fewer than one batch of {batch_size}')
  ds = grain.MapDataset.range(used).repeat(None).map(
      lambda i: {'tokens': pad_song(songs[order[i % used]], seq_len + 1)})
  ds = ds.batch(batch_size // process_count, drop_remainder=True)
  ds = ds.slice(slice(process_index, None, process_count))
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


def train_iterator(config, process_index: int, process_count: int) -> Iterator[dict]:
  songs = tokenized_dataset(config, 'train')
  seq_len = config.data.seq_len
  if config.data.get('whole_songs'):
    kept = whole_songs(songs, seq_len)
    logging.info('cpword: %d of %d training songs fit %d tokens', len(kept), len(songs),
                 seq_len + 1)
    if config.data.get('song_order', 'longest_first') == 'longest_first':
      return _ordered_iterator(kept, seq_len, config.batch_size, process_index, process_count)
    return pipeline.make_train_iterator(
        kept, lambda song, rng: {'tokens': pad_song(song, seq_len + 1)},
        batch_size=config.batch_size, seed=config.seed, process_index=process_index,
        process_count=process_count)
  return pipeline.make_train_iterator(
      songs, _window_transform(seq_len, tokens.vocab_from_config(config)),
      batch_size=config.batch_size,
      seed=config.seed, process_index=process_index, process_count=process_count)


def eval_batches(config, process_index: int, process_count: int):
  songs = tokenized_dataset(config, 'valid')
  windows = eval_windows(songs, config.data.seq_len, config.data.max_eval_windows,
                         tokens.vocab_from_config(config))
  return pipeline.make_eval_batches(windows, lambda w: {'tokens': w},
                                    batch_size=config.batch_size, process_index=process_index,
                                    process_count=process_count)


# ------------------------------------------------------------------------------------------------
# Loss.


def family_losses(model: model_lib.Transformer, tokens_BT: jax.Array,
                  weight_B: jax.Array | None = None, note_range: tuple[int, int] | None = None,
                  *, loss: str = 'original', emotion: bool = False
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, metrics) of a batch of windows (B, T+1[, F]); a target whose first field is 0 is
  padding.

  loss 'original': every family's mean cross-entropy over the real positions (IGNORE targets
  count), summed over the families and divided by their number: 7, or 8 with `emotion` (the
  emotion family is left out without it). 'masked_mean': each family's mean over its non-IGNORE
  targets, averaged over the families present in the batch. The metrics hold 'ce' (the loss),
  per family 'ce_<family>' and 'acc_<family>' over the fields the words use.
  With `note_range` (see `note_onset_range`) the metrics also hold 'nll_per_window', the summed
  cross-entropy of every used field or event, and 'notes_per_window', the number of note
  targets, each averaged over the batch's (weighted) windows: sums per window, so that the
  training loop's weighted means over batches stay exact and their ratio is nats per note.
  """
  if loss not in LOSSES:
    raise UserError(f"config.loss={loss!r}: use one of {', '.join(map(repr, LOSSES))}")
  if tokens_BT.ndim == 2:
    tokens_BT = tokens_BT[..., None]
  inputs_BTF, targets_BTF = tokens_BT[:, :-1], tokens_BT[:, 1:]
  logits = model(inputs_BTF, targets_BTF[..., 0])
  weight_B = jnp.ones(tokens_BT.shape[0]) if weight_B is None else weight_B
  real_BT = (targets_BTF[..., 0] != 0) * weight_B[:, None]
  num_real = jnp.maximum(jnp.sum(real_BT), 1.0)
  metrics, total, present, nll, original = {}, 0.0, 0.0, 0.0, []
  for i, family in enumerate(model.families):
    target_BT = targets_BTF[..., i]
    mask_BT = (target_BT != tokens.IGNORE) * weight_B[:, None]
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(
        logits[family.name].astype(jnp.float32), target_BT)
    count = jnp.sum(mask_BT)
    ce = jnp.sum(ce_BT * mask_BT) / jnp.maximum(count, 1.0)
    correct_BT = jnp.argmax(logits[family.name], -1) == target_BT
    metrics[f'ce_{family.name}'] = ce
    metrics[f'acc_{family.name}'] = jnp.sum(correct_BT * mask_BT) / jnp.maximum(count, 1.0)
    total += ce * (count > 0)
    present += (count > 0)
    nll += jnp.sum(ce_BT * mask_BT)
    if family.name != 'emotion' or emotion:
      original.append(jnp.sum(ce_BT * real_BT) / num_real)
  if loss == 'original':
    value = sum(original) / len(original)
  else:
    value = total / jnp.maximum(present, 1.0)
  metrics['ce'] = value
  if note_range is not None:
    first_BT = targets_BTF[..., 0]
    is_note_BT = (first_BT >= note_range[0]) & (first_BT < note_range[1])
    windows = jnp.sum(weight_B)
    per_window = jnp.where(windows > 0, 1.0 / jnp.maximum(windows, 1e-9), 0.0)
    metrics['nll_per_window'] = nll * per_window
    metrics['notes_per_window'] = jnp.sum(is_note_BT * weight_B[:, None]) * per_window
  return value, metrics


def make_loss_fn(config: ml_collections.ConfigDict):
  """loss_fn(model, batch, rng, step) for common.training: config.loss of the batch."""
  kind, emotion = config.get('loss', 'original'), bool(config.data.get('emotion', False))

  def loss_fn(model, batch, rng, step):
    del rng, step  # dropout draws from the model's own RNG stream, which the loop carries
    return family_losses(model, jnp.asarray(batch['tokens']), loss=kind, emotion=emotion)
  return loss_fn


def note_onset_range(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """[lo, hi) of the first target field's values that start a note: the Note type of a CP word,
  or the Pitch events of REMI (one per note in either representation)."""
  if config.representation == 'remi':
    start, _, count = tokens.vocab_from_config(config).remi_ranges['pitch']
    return start, start + count
  return tokens.TYPE_NOTE, tokens.TYPE_NOTE + 1


def make_eval_fn(config: ml_collections.ConfigDict):
  """eval_fn(model, batch, rng): per-family CE and accuracy, plus the per-window NLL and note
  counts whose ratio is nats per note (comparable between CP and REMI)."""
  notes = note_onset_range(config)

  kind, emotion = config.get('loss', 'original'), bool(config.data.get('emotion', False))

  def eval_fn(model, batch, rng):
    del rng
    _, metrics = family_losses(model, jnp.asarray(batch['tokens']), batch['weight'], notes,
                               loss=kind, emotion=emotion)
    return metrics
  return eval_fn


def sample_hook(config: ml_collections.ConfigDict, model, step: int, workdir: str) -> None:
  """Writes config.sampling.num_songs songs to <workdir>/samples/step_<step>/; no EOS before half
  of sampling.max_words, so that an early model's songs show its music rather than end at once."""
  request = generation.Request(num_samples=config.sampling.num_songs, seed=step,
                               min_length=config.sampling.max_words // 2)
  generation.write_pieces(sample.generate_pieces(model, config, request),
                          os.path.join(workdir, 'samples', f'step_{step}'))


def get_task(config: ml_collections.ConfigDict) -> training.TrainTask:
  """The TrainTask; data is tokenised lazily, on the first call of an iterator."""
  model_lib.families_from_config(config)  # fail early on a bad representation or bins
  if config.get('loss', 'original') not in LOSSES:
    raise UserError(f"config.loss={config.loss!r}: use one of {', '.join(map(repr, LOSSES))}")
  order = config.data.get('song_order', 'longest_first')
  if order not in SONG_ORDERS:
    raise UserError(f"config.data.song_order={order!r}: use one of "
                    f"{', '.join(map(repr, SONG_ORDERS))}")
  return training.TrainTask(
      build_model=build_model, loss_fn=make_loss_fn(config), train_iterator=train_iterator,
      eval_fn=make_eval_fn(config), eval_batches=eval_batches,
      sample_hook=functools.partial(sample_hook, config))
