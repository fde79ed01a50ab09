"""Tests for coconet/compare.py: note statistics, total variation, one small comparison."""

import numpy as np
import pytest

from common.errors import UserError
from coconet import compare
from tests.coconet.helpers import make_piece

NAN = np.nan


def test_note_histograms_read_runs_as_notes():
  piece = np.array([[72, 60, 55, 48], [72, 60, 55, 48], [74, NAN, 55, 36], [67, 62, 55, 36]],
                   np.float32)
  hist = compare.note_histograms([piece], voices=(0, 1))
  # soprano: C5 (2 steps), D5, G4; alto: C4 (2 steps), rest, D4
  np.testing.assert_allclose(hist['pitch_class'][[0, 2, 7]], np.array([4, 2, 1]) / 7)
  interval = dict(zip(range(-12, 13), hist['interval']))
  assert interval[2] == pytest.approx(2 / 3) and interval[-7] == pytest.approx(1 / 3)
  np.testing.assert_allclose(hist['length'][:2], [3 / 5, 2 / 5])  # lengths 1,1,1 and 2,2
  assert hist['range'].shape == (2, 46) and hist['range'][1, 60 - 36] == pytest.approx(2 / 3)


def test_total_variation():
  assert compare.total_variation([0.5, 0.5], [0.5, 0.5]) == 0.0
  assert compare.total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
  assert compare.total_variation([[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]) == 0.5


def test_compare_runs_every_sampler_on_the_same_conditions(tiny_model):
  held_out = [make_piece(12, seed=s) for s in range(3)]
  results = compare.compare(tiny_model, tiny_model, held_out,
                            samplers=('gibbs', 'independent'), num_pieces=2, length=8,
                            gibbs_steps=4)
  assert set(results) == {'harmonize', 'generate'}
  for rows in results.values():
    assert set(rows) == {'bach', 'gibbs', 'independent'}
    for row in rows.values():
      assert np.isfinite(row['nll_per_note']) and 0 <= row['mean_tv'] <= 1
  table = compare.format_table(results)
  assert '| harmonize | gibbs |' in table and 'mean_tv' in table
  with pytest.raises(UserError, match='unknown sampler'):
    compare.compare(tiny_model, tiny_model, held_out, samplers=('nade',))
  with pytest.raises(UserError, match='only 3 held-out pieces'):
    compare.compare(tiny_model, tiny_model, held_out, num_pieces=5, length=8)
