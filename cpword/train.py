"""Training task of the Compound Word Transformer (CP) and of the REMI baseline.

A dataset is tokenised once per process (CP words or REMI events per song), then training takes
random windows of seq_len + 1 tokens. CP loss: the mean over families of each family's cross-entropy
over its non-ignored fields, with the field heads teacher-forced on the target type; REMI loss:
cross-entropy over non-padding events. Evaluation reports the same per family on fixed windows.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Iterator

from flax import nnx
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


def starts_with_emotion(song: np.ndarray, vocab: tokens.Vocab) -> bool:
  """Whether a song's first CP word (or REMI event) is an EMOPIA emotion token."""
  if len(song) == 0:
    return False
  if song.ndim == 2:
    return bool(song[0, tokens.F['type']] == tokens.TYPE_EMOTION)
  start, _, count = vocab.remi_ranges['emotion']
  return bool(start <= song[0] < start + count)


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


def eval_windows(songs: tuple[np.ndarray, ...], seq_len: int, max_windows: int) -> list[np.ndarray]:
  """Consecutive windows of seq_len + 1 tokens (overlapping by one), padded with 0."""
  windows = []
  for song in songs:
    for start in range(0, max(len(song) - 1, 1), seq_len):
      window = song[start:start + seq_len + 1]
      pad = [(0, seq_len + 1 - len(window))] + [(0, 0)] * (song.ndim - 1)
      windows.append(np.pad(window, pad).astype(np.int32))
      if len(windows) >= max_windows:
        return windows
  return windows


def train_iterator(config, process_index: int, process_count: int) -> Iterator[dict]:
  songs = tokenized_dataset(config, 'train')
  return pipeline.make_train_iterator(
      songs, _window_transform(config.data.seq_len, tokens.vocab_from_config(config)),
      batch_size=config.batch_size,
      seed=config.seed, process_index=process_index, process_count=process_count)


def eval_batches(config, process_index: int, process_count: int):
  songs = tokenized_dataset(config, 'valid')
  windows = eval_windows(songs, config.data.seq_len, config.data.max_eval_windows)
  return pipeline.make_eval_batches(windows, lambda w: {'tokens': w},
                                    batch_size=config.batch_size, process_index=process_index,
                                    process_count=process_count)


# ------------------------------------------------------------------------------------------------
# Loss.


def family_losses(model: model_lib.Transformer, tokens_BT: jax.Array,
                  weight_B: jax.Array | None = None, note_range: tuple[int, int] | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(loss, metrics) of a batch of windows (B, T+1[, F]); target 0 = ignored.

  CP: loss = mean over the families present in the batch of their mean cross-entropy.
  With `note_range` (see `note_onset_range`) the metrics also hold 'nll_per_window', the summed
  cross-entropy of every predicted field or event, and 'notes_per_window', the number of note
  targets, each averaged over the batch's (weighted) windows: sums per window, so that the
  training loop's weighted means over batches stay exact and their ratio is nats per note.
  """
  if tokens_BT.ndim == 2:
    tokens_BT = tokens_BT[..., None]
  inputs_BTF, targets_BTF = tokens_BT[:, :-1], tokens_BT[:, 1:]
  logits = model(inputs_BTF, targets_BTF[..., 0])
  weight_B = jnp.ones(tokens_BT.shape[0]) if weight_B is None else weight_B
  metrics, total, present, nll = {}, 0.0, 0.0, 0.0
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
  loss = total / jnp.maximum(present, 1.0)
  metrics['ce'] = loss
  if note_range is not None:
    first_BT = targets_BTF[..., 0]
    is_note_BT = (first_BT >= note_range[0]) & (first_BT < note_range[1])
    windows = jnp.sum(weight_B)
    per_window = jnp.where(windows > 0, 1.0 / jnp.maximum(windows, 1e-9), 0.0)
    metrics['nll_per_window'] = nll * per_window
    metrics['notes_per_window'] = jnp.sum(is_note_BT * weight_B[:, None]) * per_window
  return loss, metrics


def loss_fn(model, batch, rng, step):
  del rng, step  # dropout draws from the model's own RNG stream, which the loop carries
  return family_losses(model, jnp.asarray(batch['tokens']))


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

  def eval_fn(model, batch, rng):
    del rng
    _, metrics = family_losses(model, jnp.asarray(batch['tokens']), batch['weight'], notes)
    return metrics
  return eval_fn


def sample_hook(config: ml_collections.ConfigDict, model, step: int, workdir: str) -> None:
  """Writes config.sampling.num_songs songs to <workdir>/samples/step_<step>/."""
  request = generation.Request(num_samples=config.sampling.num_songs, seed=step)
  generation.write_pieces(sample.generate_pieces(model, config, request),
                          os.path.join(workdir, 'samples', f'step_{step}'))


def get_task(config: ml_collections.ConfigDict) -> training.TrainTask:
  """The TrainTask; data is tokenised lazily, on the first call of an iterator."""
  model_lib.families_from_config(config)  # fail early on a bad representation
  return training.TrainTask(
      build_model=build_model, loss_fn=loss_fn, train_iterator=train_iterator,
      eval_fn=make_eval_fn(config), eval_batches=eval_batches,
      sample_hook=functools.partial(sample_hook, config))
