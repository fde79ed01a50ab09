"""Negative log-likelihood of Coconet on a split, by the chain rule over an ordering.

Variables are (step, voice) pairs. An ordering reveals them group by group; the log-likelihood of a
piece is the sum over groups g of log p(group g | all groups revealed before g), each term read from
one forward pass whose mask hides group g and everything after it.
  note-wise   groups are single variables (the exact chain rule of the NADE ensemble member).
  frame-wise  (unit 'frame') as the original code computes it (Magenta lib_evaluation.py
              FrameEvaluator): frames are revealed in the order, and within a frame the voices in
              a random order; each voice is scored, log p(true pitch), given the frames before it
              (true notes) and the voices of its frame scored before it, which hold the model's
              ARGMAX predictions, not the true notes. So it conditions on the model's own guesses
              within a frame: not a likelihood of the frame, but the number the original reports.
              Every voice of the frame is hidden (silent ones too, which score 0 and are filled
              with the argmax like the others). An ensemble of K orderings is combined per FRAME,
              log (1/K) sum_k p_k(frame), and, as the original's --ensemble_size, for the
              chronological order too (its voice orders are random).
  frame_independent  groups are whole time steps: the 4 voices of a frame are scored from the same
              context (frame hidden), i.e. as independent given the past; a proper lower bound
              on nothing in particular, but it needs no guesses (this code's earlier 'frame').
  chronological  time-major order, soprano to bass within a step (frame-wise: frame by frame).
  random         a uniformly random ordering; for note and frame_independent an ensemble of K
                 orderings (default 5) is combined in probability space per piece,
                 log( (1/K) sum_k p_k(piece) ), as the orderless NADE ensemble of Uria et al.
                 (2014) that Coconet cites. '<name>_random_single' in the results is the plain
                 average of log p_k, for comparison.

The original's note-wise evaluator (NoteEvaluator) cannot run: it calls `self.draw_ordering`,
which it defines as `_draw_ordering`. Had it run, it would ensemble per note and count silent
voices as notes of log-likelihood 0; ours is the chain rule of the piece, ensembled per piece.

Silent variables (a resting voice, NaN in the data) cannot be scored by a softmax over pitch: note
and frame_independent keep them always given (never hidden) and do not count them. NLLs are in
nats, per sounding note ('nll_per_note') and per frame ('nll_per_frame', summed over the voices
of the frame; for unit 'frame' this is the original's unit mean).

Efficiency: one jitted call scores `chunk_size` chain steps of a piece at once (a batch of masks).
The cost is one forward pass per step: sum over pieces of (scored variables) passes note-wise,
(frames) passes frame_independent, 4 x (frames) frame-wise, times K for an ensemble. Use crop_len
/ max_pieces to bound it.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Iterator, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from common.errors import UserError
from coconet import data
from coconet import model as model_lib

UNITS = ('note', 'frame', 'frame_independent')
RESULT_NAMES = {'note': 'notewise', 'frame': 'framewise',
                'frame_independent': 'framewise_independent'}
ORDERS = ('chronological', 'random')


@functools.partial(jax.jit, static_argnames=('graphdef',))
def _chain_terms(graphdef, state, roll_TPI, rank_TI, d_C):
  """log p of the group revealed at each step d in d_C: (C,). Steps with no group give 0."""
  hidden_CTI = rank_TI[None] >= d_C[:, None, None]
  roll_CTPI = jnp.broadcast_to(roll_TPI[None], (d_C.shape[0], *roll_TPI.shape))
  logits = model_lib.logits_in_chunks(nnx.merge(graphdef, state), roll_CTPI,
                                      hidden_CTI.astype(jnp.float32))
  log_p_CTI = jnp.sum(jax.nn.log_softmax(logits, axis=2) * roll_CTPI, axis=2)
  current_CTI = rank_TI[None] == d_C[:, None, None]
  return jnp.sum(jnp.where(current_CTI, log_p_CTI, 0.0), axis=(1, 2))


@functools.partial(jax.jit, static_argnames=('graphdef',))
def _frame_terms(graphdef, state, roll_TPI, frame_at_T, voice_order_TI, k_C):
  """The original's frame-wise log-likelihood of the frames at order positions k_C: (C,).

  Example c sees the frames before position k_C[c] (true notes) and hides the rest; the voices
  of its frame are then scored one by one in voice_order_TI's order, each revealed with the
  model's argmax before the next. Positions past the last frame score 0.
  """
  steps, pitches, voices = roll_TPI.shape
  rank_T = jnp.zeros(steps, jnp.int32).at[frame_at_T].set(jnp.arange(steps, dtype=jnp.int32))
  valid_C = k_C < steps
  t_C = frame_at_T[jnp.minimum(k_C, steps - 1)]
  rows = jnp.arange(k_C.shape[0])
  hidden_CT = rank_T[None, :] >= k_C[:, None]
  mask_CTI = jnp.broadcast_to(hidden_CT[:, :, None], (k_C.shape[0], steps, voices))
  mask_CTI = mask_CTI.astype(jnp.float32)
  x_CTPI = jnp.broadcast_to(roll_TPI[None], (k_C.shape[0], *roll_TPI.shape))
  model = nnx.merge(graphdef, state)
  ll_C = jnp.zeros(k_C.shape[0], jnp.float32)
  for d in range(voices):
    logits = model_lib.logits_in_chunks(model, x_CTPI, mask_CTI)
    v_C = voice_order_TI[t_C, d]
    logits_CP = logits[rows, t_C, :, v_C]
    true_CP = roll_TPI[t_C, :, v_C]
    ll_C += jnp.sum(true_CP * jax.nn.log_softmax(logits_CP, axis=-1), axis=-1)
    guess_CP = jax.nn.one_hot(jnp.argmax(logits_CP, axis=-1), pitches, dtype=x_CTPI.dtype)
    x_CTPI = x_CTPI.at[rows, t_C, :, v_C].set(guess_CP)
    mask_CTI = mask_CTI.at[rows, t_C, v_C].set(0.0)
  return jnp.where(valid_C, ll_C, 0.0)


def frame_ordering(num_steps: int, order: str, rng: np.random.Generator,
                   voices: int = data.NUM_INSTRUMENTS) -> tuple[np.ndarray, np.ndarray]:
  """The original's frame-wise ordering (FrameEvaluator.draw_ordering): (frame at each position
  (T,), each frame's voices in scoring order (T, I)); voices are shuffled within every frame,
  frames only for order 'random'."""
  if order not in ORDERS:
    raise UserError(f'unknown order {order!r}; expected one of {", ".join(ORDERS)}')
  frames = np.arange(num_steps) if order == 'chronological' else rng.permutation(num_steps)
  voice_order = np.stack([rng.permutation(voices) for _ in range(num_steps)]) if num_steps \
      else np.zeros((0, voices), np.int64)
  return frames.astype(np.int32), voice_order.astype(np.int32)


def frame_log_likelihoods(model: nnx.Module, pitches_TI: np.ndarray, frame_at_T: np.ndarray,
                          voice_order_TI: np.ndarray, *, chunk_size: int = 32) -> np.ndarray:
  """Per-frame log-likelihoods (T,) as the original's FrameEvaluator computes them (in time
  order), in nats. Model in eval mode."""
  graphdef, state = nnx.split(nnx.view(model, use_running_average=True))
  roll_TPI = jnp.asarray(data.pitches_to_roll(pitches_TI))
  steps = len(pitches_TI)
  by_position = np.zeros(steps, np.float64)
  for start in range(0, steps, chunk_size):
    k_C = jnp.arange(start, start + chunk_size, dtype=jnp.int32)
    terms = np.asarray(_frame_terms(graphdef, state, roll_TPI, jnp.asarray(frame_at_T),
                                    jnp.asarray(voice_order_TI), k_C))
    stop = min(start + chunk_size, steps)
    by_position[start:stop] = terms[:stop - start]
  out = np.zeros(steps, np.float64)
  out[np.asarray(frame_at_T)] = by_position
  return out


def group_ranks(valid_TI: np.ndarray, unit: str, order: str,
                rng: np.random.Generator | None = None) -> np.ndarray:
  """int32 (T, I): the step at which each variable is revealed; -1 for silent (always given)."""
  valid_TI = np.asarray(valid_TI, bool)
  steps, voices = valid_TI.shape
  if unit not in UNITS:
    raise UserError(f'unknown unit {unit!r}; expected one of {", ".join(UNITS)}')
  if order not in ORDERS:
    raise UserError(f'unknown order {order!r}; expected one of {", ".join(ORDERS)}')
  if unit == 'frame':
    raise UserError("unit 'frame' is the original's evaluator (frame_log_likelihoods); "
                    "group_ranks serves 'note' and 'frame_independent'")
  if unit == 'note':
    num_groups = int(valid_TI.sum())
    position = np.arange(num_groups) if order == 'chronological' else rng.permutation(num_groups)
    rank = np.full(valid_TI.shape, -1, np.int32)
    rank[valid_TI] = position  # boolean indexing is time-major, soprano to bass
    return rank
  frames = np.arange(steps) if order == 'chronological' else rng.permutation(steps)
  rank = np.broadcast_to(frames[:, None], (steps, voices)).astype(np.int32)
  return np.where(valid_TI, rank, -1).astype(np.int32)


def piece_log_likelihood(model: nnx.Module, pitches_TI: np.ndarray, rank_TI: np.ndarray, *,
                         chunk_size: int = 32) -> float:
  """log p(piece) under the ordering `rank_TI` (see group_ranks), in nats. Model in eval mode."""
  graphdef, state = nnx.split(nnx.view(model, use_running_average=True))
  roll_TPI = jnp.asarray(data.pitches_to_roll(pitches_TI))
  rank_TI = jnp.asarray(rank_TI, jnp.int32)
  num_steps = int(np.max(np.asarray(rank_TI), initial=-1)) + 1
  total = 0.0
  for start in range(0, num_steps, chunk_size):
    # Always chunk_size steps per call (one compiled shape); steps past the end score nothing.
    d_C = jnp.arange(start, start + chunk_size, dtype=jnp.int32)
    total += float(jnp.sum(_chain_terms(graphdef, state, roll_TPI, rank_TI, d_C)))
  return total


def segments(pieces: Sequence[np.ndarray], crop_len: int | None) -> list[np.ndarray]:
  """Pieces cut into consecutive non-overlapping windows of crop_len (the last may be shorter)."""
  if not crop_len:
    return list(pieces)
  return [p[s:s + crop_len] for p in pieces for s in range(0, len(p), crop_len)]


def evaluate_pieces(model: nnx.Module, pieces: Sequence[np.ndarray], *,
                    units: Sequence[str] = UNITS, orders: Sequence[str] = ORDERS,
                    ensemble_size: int = 5, seed: int = 0, chunk_size: int = 32,
                    crop_len: int | None = None, max_pieces: int | None = None,
                    progress: bool = False) -> dict[str, dict[str, float]]:
  """NLLs of `pieces` ((T, 4) MIDI pitch arrays, NaN = silent) for each unit x order.

  Returns {'<name>_<order>': {'nll_per_note', 'nll_per_frame', 'num_pieces', 'num_frames',
  'num_notes'}}, plus '<name>_random_single' (mean over orderings, no ensembling); the name is
  RESULT_NAMES[unit] (notewise, framewise, framewise_independent).
  """
  pieces = list(pieces)[:max_pieces] if max_pieces else list(pieces)
  pieces = [p for p in segments(pieces, crop_len) if len(p)]
  rng = np.random.default_rng(seed)
  num_notes = sum(int((~np.isnan(p)).sum()) for p in pieces)
  num_frames = sum(len(p) for p in pieces)
  results: dict[str, dict[str, float]] = {}
  for unit in units:
    if unit not in UNITS:
      raise UserError(f'unknown unit {unit!r}; expected one of {", ".join(UNITS)}')
    for order in orders:
      k = ensemble_size if order == 'random' or unit == 'frame' else 1
      ll_PK = np.zeros((len(pieces), k))
      frames_PK = []  # unit 'frame': per-frame log-likelihoods, ensembled per frame
      bar = tqdm.tqdm(pieces, desc=f'{unit}wise {order}', unit='piece', disable=not progress,
                      mininterval=10 if not sys.stderr.isatty() else 0.1)
      for i, piece in enumerate(bar):
        valid = ~np.isnan(piece)
        per_frame = []
        for j in range(k):
          if unit == 'frame':
            frame_at, voice_order = frame_ordering(len(piece), order, rng)
            per_frame.append(frame_log_likelihoods(model, piece, frame_at, voice_order,
                                                   chunk_size=chunk_size))
            ll_PK[i, j] = per_frame[-1].sum()
          else:
            rank = group_ranks(valid, unit, order, rng)
            ll_PK[i, j] = piece_log_likelihood(model, piece, rank, chunk_size=chunk_size)
        frames_PK.append(per_frame)
      if unit == 'frame':
        ensemble = np.array([np.sum(_log_mean_exp_rows(np.stack(rows))) for rows in frames_PK])
      else:
        ensemble = np.array([_log_mean_exp(row) for row in ll_PK])
      name = RESULT_NAMES[unit]
      results[f'{name}_{order}'] = _summary(ensemble, num_notes, num_frames, len(pieces))
      if order == 'random':
        results[f'{name}_random_single'] = _summary(ll_PK.mean(axis=1), num_notes, num_frames,
                                                    len(pieces))
  return results


def _log_mean_exp_rows(values_KT: np.ndarray) -> np.ndarray:
  """log (1/K) sum_k exp(values[k, t]) for each t."""
  top = np.max(values_KT, axis=0)
  return top + np.log(np.mean(np.exp(values_KT - top), axis=0))


def _log_mean_exp(values: np.ndarray) -> float:
  top = np.max(values)
  return float(top + np.log(np.mean(np.exp(values - top))))


def _summary(ll_P: np.ndarray, num_notes: int, num_frames: int, num_pieces: int
             ) -> dict[str, float]:
  total = -float(np.sum(ll_P))
  return {'nll_per_note': total / max(num_notes, 1), 'nll_per_frame': total / max(num_frames, 1),
          'num_pieces': num_pieces, 'num_frames': num_frames, 'num_notes': num_notes}


def format_table(results: dict[str, dict[str, float]]) -> str:
  """A plain-text table of evaluate_pieces' results."""
  lines = [f'{"evaluation":<28} {"NLL/note":>9} {"NLL/frame":>10} {"pieces":>7} {"frames":>7}']
  for name, row in results.items():
    lines.append(f'{name:<28} {row["nll_per_note"]:>9.4f} {row["nll_per_frame"]:>10.4f} '
                 f'{row["num_pieces"]:>7d} {row["num_frames"]:>7d}')
  return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# Command line (experiments/evaluate.py dispatches here on config.task == 'coconet')


def bn_inputs(config: Any, num_batches: int, seed: int = 0) -> Iterator[tuple[np.ndarray,
                                                                               np.ndarray]]:
  """Training crops with training masks, for re-estimating batch-norm statistics."""
  from common import masking  # pylint: disable=g-import-not-at-top
  from coconet import train  # pylint: disable=g-import-not-at-top
  pieces = train.load_pieces(config, 'train')
  if not pieces:
    return
  rng = np.random.default_rng(seed)
  key = jax.random.key(seed)
  for b in range(num_batches):
    picks = rng.integers(len(pieces), size=config.batch_size)
    idx = np.stack([train.crop_indices(pieces[i], config, rng) for i in picks])
    mask = masking.sample_mask(config.mask, jax.random.fold_in(key, b), idx.shape, valid=idx >= 0)
    yield data.indices_to_roll(idx), np.asarray(mask)


def evaluate_from_flags(model: nnx.Module, config: Any, options: dict[str, Any]
                        ) -> dict[str, dict[str, float]]:
  """Re-estimates batch norm on training data, then evaluates a split; prints and returns it.

  options: split, units, orders, ensemble_size, max_pieces, crop_len, bn_batches, seed,
  chunk_size, data_dir.
  """
  from coconet import train  # pylint: disable=g-import-not-at-top
  if options.get('data_dir'):
    config.data_dir = options['data_dir']
  bn_batches = options.get('bn_batches')
  bn_batches = 20 if bn_batches is None else int(bn_batches)
  if bn_batches > 0:
    model_lib.reestimate_batch_norm_stats(model, bn_inputs(config, bn_batches,
                                                           options.get('seed') or 0))
  split = options.get('split') or 'test'
  pieces = train.load_pieces(config, split)
  if not pieces:
    raise UserError(f'dataset {config.dataset} split {split} has no pieces')
  results = evaluate_pieces(
      model, pieces, units=options.get('units') or UNITS, orders=options.get('orders') or ORDERS,
      ensemble_size=int(options.get('ensemble_size') or 5), seed=options.get('seed') or 0,
      chunk_size=int(options.get('chunk_size') or 32), crop_len=options.get('crop_len'),
      max_pieces=options.get('max_pieces'), progress=True)
  print(f'{config.dataset} {split}, batch-norm statistics from {bn_batches} training batches')
  print(format_table(results))
  return results
