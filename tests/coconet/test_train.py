"""Tests for coconet/train.py (data transforms, loss) and the tiny config end to end."""

import os

from absl import flags
from flax import nnx
import jax
import ml_collections
import numpy as np
import pytest

from common import generation
from common import training
from common.errors import UserError
from coconet import configs
from coconet import data
from coconet import evaluate
from coconet import sample
from coconet import train
from tests.coconet.helpers import make_piece


def _fake_pieces(config, split):
  """Stands in for the dataset loaders: small pieces of a few lengths, silences included."""
  del config
  pieces = [make_piece(n, seed=s) for s, n in enumerate((20, 9, 30, 12))]
  pieces[1][2:5, 2] = np.nan
  return tuple(pieces if split == 'train' else pieces[:2])


def _tiny_config(**overrides):
  config = configs.get_config('tiny')
  config.update(overrides)
  return config


def test_crop_and_transpose_stay_in_range():
  config = _tiny_config(crop_len=16, transpose_max=12)
  piece = make_piece(40)
  piece[:, 0] = data.MAX_PITCH - 1  # only a small upward shift is possible
  shifts = set()
  for seed in range(30):
    idx = train.crop_indices(piece, config, np.random.default_rng(seed))
    assert idx.shape == (16, 4) and idx.dtype == np.int32
    assert idx.min() >= 0 and idx.max() <= data.NUM_PITCHES - 1
    shifts.add(int(idx[0, 0]) - (data.MAX_PITCH - 1 - data.MIN_PITCH))
  assert max(shifts) == 1 and min(shifts) < -5
  short = train.crop_indices(make_piece(5), config, np.random.default_rng(0))
  assert (short[5:] == -1).all()  # padding is silent


def test_eval_segments_cover_every_frame():
  windows = train.eval_segments([make_piece(10), make_piece(3)], 4)
  assert [w.shape for w in windows] == [(4, 4)] * 4
  assert sum(int((~np.isnan(w)).all(axis=1).sum()) for w in windows) == 13


@pytest.mark.parametrize('loss_kind', train.LOSSES)
def test_loss_and_eval_fn(loss_kind):
  config = _tiny_config(crop_len=8, loss=loss_kind)
  config.model.num_filters = 8  # the shapes the other tests already compiled
  task = train.get_task(config)
  model = task.build_model(config, nnx.Rngs(0))
  batch = {'pitch_index': np.stack([train.crop_indices(p, config, np.random.default_rng(0))
                                    for p in _fake_pieces(config, 'train')])}
  loss, metrics = nnx.jit(lambda m, b, r: task.loss_fn(m, b, r, 0))(model, batch,
                                                                    jax.random.key(0))
  assert 0 < float(metrics['mask_fraction']) <= 1
  # An untrained net is near uniform: about log(46) per hidden note.
  assert abs(float(metrics['ce_per_masked']) - np.log(46)) < 0.5
  if loss_kind == 'rescaled_masked':
    valid = (batch['pitch_index'] >= 0).sum(axis=(1, 2)).mean()
    assert abs(float(loss) / valid - np.log(46)) < 0.5  # about N * log(46) per piece
  else:
    name = 'loss_total' if loss_kind == 'magenta_total' else 'loss_mask'
    assert float(loss) == float(metrics[name]) and np.isfinite(float(loss))
  if loss_kind != 'magenta_total':
    return
  model.eval()
  out = nnx.jit(task.eval_fn)(model, dict(batch, weight=np.array([1, 1, 0, 0], np.float32)),
                              jax.random.key(1))
  assert set(out) == {'loss', 'ce_per_masked'} and np.isfinite(float(out['loss']))


@pytest.mark.slow
def test_tiny_trains_samples_generates_and_evaluates(tmp_path, monkeypatch):
  monkeypatch.setattr(train, 'load_pieces', _fake_pieces)
  config = _tiny_config(num_train_steps=4, log_every_steps=2, eval_every_steps=4,
                        checkpoint_every_steps=4, sample_every_steps=4, sample_len=8,
                        sample_gibbs_steps=2)
  workdir = str(tmp_path / 'run')
  training.train_and_evaluate(train.get_task(config), config, workdir)
  assert os.path.exists(os.path.join(workdir, 'config.json'))
  samples = sorted(os.listdir(os.path.join(workdir, 'samples')))
  assert samples == ['step0000004_generate_00.mid', 'step0000004_harmonize_00.mid']

  loaded_config = training.read_config(workdir)
  model = training.load_model(train.get_task(loaded_config), loaded_config, workdir)
  pieces = sample.generate_pieces(model, loaded_config, generation.Request(
      task='harmonize', pitches=(67, 69, 71, 72), steps_per_note=2, num_samples=2, gibbs_steps=3,
      seed=1))
  assert [p.name for p in pieces] == ['harmonize_00', 'harmonize_01']
  assert all(len(p.sequence.notes) >= 4 for p in pieces)
  with pytest.raises(UserError, match='soprano range'):
    sample.generate_pieces(model, loaded_config, generation.Request(pitches=(40,)))
  results = evaluate.evaluate_from_flags(model, loaded_config, dict(
      split='valid', units=['note'], orders=['chronological'], bn_batches=1, max_pieces=1,
      crop_len=4, chunk_size=8))
  assert 2.0 < results['notewise_chronological']['nll_per_note'] < 6.0


def test_generate_cli_reports_user_errors_in_one_line(tmp_path, capsys):
  from experiments import generate  # pylint: disable=g-import-not-at-top
  assert generate.parse_pitches('60, 62,r,64') == (60, 62, None, 64)
  with pytest.raises(UserError, match="'6x'"):
    generate.parse_pitches('60,6x')
  argv = ['generate', f'--workdir={tmp_path}', '--pitches=60,62']
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  try:
    with pytest.raises(UserError, match='no config.json'):
      generate.main(argv[:1])
  finally:
    flags.FLAGS.unparse_flags()
