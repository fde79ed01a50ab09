"""Tests for coconet/evaluate.py: the batched chain rule equals a brute-force computation."""

import jax
import numpy as np
import pytest

from coconet import data
from coconet import evaluate
from tests.coconet.helpers import forward
from tests.coconet.helpers import make_piece


def _brute_force_log_likelihood(model, piece, groups):
  """Chain rule in plain Python: reveal `groups` (lists of (t, i)) one after the other."""
  hidden = ~np.isnan(piece)  # silent variables are always given
  roll = data.pitches_to_roll(piece)[None]
  total = 0.0
  for group in groups:
    logits = forward(model, roll, hidden[None])[0]
    log_p = np.asarray(jax.nn.log_softmax(logits, axis=1))
    for t, i in group:
      total += log_p[t, int(piece[t, i]) - data.MIN_PITCH, i]
    for t, i in group:
      hidden[t, i] = False
  return total


@pytest.mark.parametrize('unit', ['note', 'frame_independent'])
@pytest.mark.parametrize('order', ['chronological', 'random'])
def test_chain_rule_matches_brute_force(tiny_model, unit, order):
  piece = make_piece(3, seed=5)
  piece[1, 2] = np.nan  # a silent tenor is neither hidden nor scored
  valid = ~np.isnan(piece)
  rank = evaluate.group_ranks(valid, unit, order, np.random.default_rng(1))
  assert rank[1, 2] == -1
  groups = [list(zip(*np.nonzero(rank == d))) for d in range(rank.max() + 1)]
  if unit == 'note':
    assert all(len(g) == 1 for g in groups) and len(groups) == 11
  else:
    assert [len(g) for g in groups] == [4 if t != 1 else 3 for t in np.argsort(rank[:, 0])]
  expected = _brute_force_log_likelihood(tiny_model, piece, groups)
  got = evaluate.piece_log_likelihood(tiny_model, piece, rank, chunk_size=4)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def _magenta_frame_evaluator(model, piece, ts, ds):
  """Magenta's FrameEvaluator.__call__ (lib_evaluation.py) in NumPy, given its ordering (ts, ds):
  per-frame log-likelihoods (T,)."""
  pianoroll = data.pitches_to_roll(piece)
  tt, pp, ii = pianoroll.shape
  dd = ii
  bb = tt
  xs = np.tile(pianoroll[None], [bb, 1, 1, 1])
  mask = []
  mask_scratch = np.ones([tt, pp, ii], dtype=np.float32)
  for j, (t, d) in enumerate(zip(ts, ds)):
    if j % dd != 0:
      continue
    mask.append(mask_scratch.copy())
    mask_scratch[t, :, :] = 0
  mask = np.array(mask)
  lls = np.zeros([tt, dd], dtype=np.float64)
  xs_scratch = xs.copy()
  for d_idx in range(dd):
    logits = forward(model, xs_scratch, mask[:, :, 0, :])
    pxhats = np.asarray(jax.nn.softmax(logits, axis=2))
    t, d = ts[d_idx::dd], ds[d_idx::dd]
    xs_scratch[np.arange(bb), t, :, d] = np.eye(pp)[np.argmax(pxhats[np.arange(bb), t, :, d],
                                                              axis=1)]
    mask[np.arange(bb), t, :, d] = 0
    index = (np.arange(bb), t, slice(None), d)
    lls[t, d] = np.log(np.where(xs[index], pxhats[index], 1)).sum(axis=1)
  return lls.sum(axis=1)


@pytest.mark.parametrize('order', ['chronological', 'random'])
def test_framewise_is_the_original_frame_evaluator(tiny_model, order):
  piece = make_piece(6, seed=8)
  piece[2, 1] = np.nan  # a silent alto: hidden, argmax-filled, scores 0
  frame_at, voice_order = evaluate.frame_ordering(len(piece), order, np.random.default_rng(2))
  if order == 'chronological':
    np.testing.assert_array_equal(frame_at, np.arange(6))
  assert sorted(voice_order[0]) == [0, 1, 2, 3]
  # The same ordering in the original's form: (t, d) pairs, frame by frame.
  ts = np.repeat(frame_at, 4)
  ds = voice_order[frame_at].reshape(-1)
  expected = _magenta_frame_evaluator(tiny_model, piece, ts, ds)
  got = evaluate.frame_log_likelihoods(tiny_model, piece, frame_at, voice_order, chunk_size=4)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  # Conditioning on guesses differs from conditioning on the truth (the independent scoring).
  rank = evaluate.group_ranks(~np.isnan(piece), 'frame_independent', 'chronological')
  assert not np.isclose(got.sum(), evaluate.piece_log_likelihood(tiny_model, piece, rank))


def test_framewise_results_ensemble_per_frame(tiny_model):
  pieces = [make_piece(3, seed=6)]
  results = evaluate.evaluate_pieces(tiny_model, pieces, units=('frame',),
                                     orders=('chronological',), ensemble_size=2, seed=1,
                                     chunk_size=4)
  rng = np.random.default_rng(1)
  lls = np.stack([evaluate.frame_log_likelihoods(
      tiny_model, pieces[0], *evaluate.frame_ordering(3, 'chronological', rng), chunk_size=4)
                  for _ in range(2)])
  per_frame = np.log(np.exp(lls).mean(axis=0))
  np.testing.assert_allclose(results['framewise_chronological']['nll_per_frame'],
                             -per_frame.mean(), rtol=1e-5)


def test_evaluate_pieces_ensemble(tiny_model):
  pieces = [make_piece(3, seed=6), make_piece(3, seed=7)[:2]]
  results = evaluate.evaluate_pieces(tiny_model, pieces, units=('note',), orders=('random',),
                                     ensemble_size=3, seed=4, chunk_size=4)
  rng = np.random.default_rng(4)
  ll = np.array([[evaluate.piece_log_likelihood(
      tiny_model, p, evaluate.group_ranks(~np.isnan(p), 'note', 'random', rng), chunk_size=4)
                  for _ in range(3)] for p in pieces])
  ensemble = np.log(np.exp(ll).mean(axis=1)).sum()
  row = results['notewise_random']
  assert row['num_notes'] == 20 and row['num_frames'] == 5 and row['num_pieces'] == 2
  np.testing.assert_allclose(row['nll_per_note'], -ensemble / 20, rtol=1e-5)
  np.testing.assert_allclose(results['notewise_random_single']['nll_per_frame'],
                             -ll.mean(axis=1).sum() / 5, rtol=1e-5)
  # Jensen: the probability-space ensemble is never worse than the average ordering.
  assert row['nll_per_note'] <= results['notewise_random_single']['nll_per_note'] + 1e-9
  assert 'notewise_random' in evaluate.format_table(results)


def test_segments():
  pieces = [np.zeros((10, 4)), np.zeros((3, 4))]
  assert [len(s) for s in evaluate.segments(pieces, 4)] == [4, 4, 2, 3]
  assert len(evaluate.segments(pieces, None)) == 2
