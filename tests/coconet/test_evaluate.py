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


@pytest.mark.parametrize('unit', ['note', 'frame'])
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
