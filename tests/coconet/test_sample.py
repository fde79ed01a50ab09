"""Tests for coconet/sample.py: given notes are kept, jitted Gibbs equals the reference loop."""

import jax
import numpy as np
import pytest

from common.errors import UserError
from coconet import data
from coconet import model as model_lib
from coconet import sample
from tests.coconet.helpers import forward
from tests.coconet.helpers import make_piece


def _in_range(pitches):
  return np.all((pitches >= data.MIN_PITCH) & (pitches <= data.MAX_PITCH))


def test_gibbs_schedule_and_block_sizes():
  p = sample.gibbs_schedule(10, pmax=0.9, pmin=0.1, alpha=0.7)
  np.testing.assert_allclose(p[:3], [0.9, 0.9 - 0.8 / 7, 0.9 - 1.6 / 7])
  np.testing.assert_allclose(p[7:], 0.1)  # n >= alpha * N: floor at pmin
  sizes = sample.gibbs_block_sizes(np.array([24, 3, 0]), 10)
  assert sizes.shape == (10, 3)
  np.testing.assert_array_equal(sizes[0], [22, 3, 0])  # round(0.9 * 24), capped at F
  np.testing.assert_array_equal(sizes[-1], [2, 1, 0])  # at least one while anything is free


@pytest.mark.parametrize('block', sample.BLOCKS)
def test_jitted_gibbs_equals_reference_loop(tiny_model, block):
  pieces = np.stack([make_piece(8, seed=s) for s in range(2)])
  roll = np.stack([data.pitches_to_roll(p) for p in pieces])
  free = np.zeros(pieces.shape, bool)
  free[0, :, 1:] = True  # harmonize the first piece
  free[1, 2:5] = True  # erase a region of the second
  key = jax.random.key(7)
  kwargs = dict(gibbs_steps=9, temperature=0.9, block=block)
  jitted = np.asarray(sample.gibbs_sample(tiny_model, key, roll, free, **kwargs))
  reference = sample.gibbs_sample_reference(tiny_model, key, roll, free, **kwargs)
  np.testing.assert_array_equal(jitted, reference)
  np.testing.assert_array_equal(jitted[~free[:, :, None, :].repeat(46, 2)],
                                roll[~free[:, :, None, :].repeat(46, 2)])
  other = np.asarray(sample.gibbs_sample(tiny_model, jax.random.key(8), roll, free, **kwargs))
  assert not np.array_equal(other, jitted)  # the comparison can fail


def test_bernoulli_blocks_follow_the_schedule():
  """The original's blocks: each free variable joins with probability p_n."""
  key = jax.random.key(0)
  free = np.ones((64, 32, 4), bool)
  free[:, :, 0] = False
  for n, p in ((0, 0.9), (5, 0.5), (9, 0.1)):
    block_key, _ = jax.random.split(jax.random.fold_in(key, n))
    chosen = (np.asarray(jax.random.uniform(block_key, free.shape)) < p) & free
    assert not chosen[:, :, 0].any()
    assert abs(chosen[:, :, 1:].mean() - p) < 0.02


@pytest.mark.parametrize('method', ['gibbs', 'ancestral'])
def test_progress_reports_do_not_change_the_draws(tiny_model, method, monkeypatch):
  monkeypatch.setattr(sample, 'PROGRESS_UPDATES', 4)
  piece = make_piece(8, seed=5)
  free = np.zeros((1, *piece.shape), bool)
  free[0, :, 1:] = True
  roll = data.pitches_to_roll(piece)[None]
  reports = []
  fn = sample.gibbs_sample if method == 'gibbs' else sample.ancestral_sample
  kwargs = dict(gibbs_steps=10) if method == 'gibbs' else dict(order='random')
  quiet = np.asarray(fn(tiny_model, jax.random.key(2), roll, free, **kwargs))
  reported = np.asarray(fn(tiny_model, jax.random.key(2), roll, free,
                           progress=lambda done, total: reports.append((done, total)), **kwargs))
  np.testing.assert_array_equal(quiet, reported)
  total = 10 if method == 'gibbs' else 24
  assert len(reports) == 4 and reports[-1] == (total, total)
  assert [done for done, _ in reports] == sorted({done for done, _ in reports})


def test_long_harmonization_reports_progress_on_stderr(tiny_model, monkeypatch, capsys):
  """The command-line path (generate_pieces) shows a progress bar once a run is slow; delay 0
  here so that a long melody (1,024 steps, 64 bars) with few Gibbs steps stays quick."""
  from common import generation  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sample.ProgressBar, 'DELAY_SECONDS', 0.0)
  melody = tuple([67, 69, 71, 72] * 64)
  config = configs_tiny()
  pieces = sample.generate_pieces(tiny_model, config, generation.Request(
      pitches=melody, steps_per_note=4, gibbs_steps=10))
  assert len(pieces) == 1
  err = capsys.readouterr().err
  assert 'harmonize' in err and '10/10' in err


class _Terminal:
  def __init__(self):
    self.text = ''

  def write(self, text):
    self.text += text

  def flush(self):
    pass

  def isatty(self):
    return True


def test_progress_bar_lines_in_a_log_and_a_bar_on_a_terminal(monkeypatch):
  import io  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sample.ProgressBar, 'DELAY_SECONDS', 0.0)
  log = io.StringIO()
  progress = sample.ProgressBar('harmonize', file=log)
  for done in range(1, 6):
    progress(done, 5)
  lines = log.getvalue().splitlines()
  assert lines[0].startswith('harmonize: 1/5 steps') and lines[-1].startswith('harmonize: 5/5')
  assert '\r' not in log.getvalue()
  terminal = _Terminal()
  progress = sample.ProgressBar('generate', file=terminal)
  for done in range(1, 6):
    progress(done, 5)
  assert 'generate' in terminal.text and '5/5' in terminal.text
  monkeypatch.setattr(sample.ProgressBar, 'DELAY_SECONDS', 60.0)
  quiet = io.StringIO()
  progress = sample.ProgressBar('harmonize', file=quiet)
  for done in range(1, 6):
    progress(done, 5)
  assert quiet.getvalue() == ''  # a short run shows nothing


def configs_tiny():
  from coconet import configs  # pylint: disable=g-import-not-at-top
  return configs.get_config('tiny')


def test_sampler_options_default_to_the_original_code():
  from common import generation  # pylint: disable=g-import-not-at-top
  options = sample.sampler_options(generation.Request())
  assert options == dict(method='gibbs', temperature=0.99, pmax=0.9, pmin=0.1, alpha=0.7,
                         gibbs_steps=None)
  options = sample.sampler_options(generation.Request(sampler='ancestral', order='random'))
  assert options == dict(method='ancestral', temperature=0.99, order='random')
  assert sample.sampler_options(generation.Request(sampler='independent'))['method'] == \
      'independent'
  for bad, match in ((dict(pmin=0.5, pmax=0.2), 'pmin'), (dict(eta=0.0), 'eta'),
                     (dict(sampler='independent', pmax=0.5), 'apply to --sampler=gibbs'),
                     (dict(order='random'), 'applies to --sampler=ancestral'),
                     (dict(sampler='nade'), '--sampler=nade'), (dict(temperature=-1.0), '>= 0')):
    with pytest.raises(UserError, match=match):
      sample.sampler_options(generation.Request(**bad))


def test_jitted_gibbs_in_chunks_equals_reference_loop(tiny_model, monkeypatch):
  """With the forward pass run two pieces at a time (three pieces: one padded chunk), the jitted
  sampler still draws exactly what the whole-batch reference loop draws."""
  filters = max(layer.norm.num_features for layer in tiny_model.layers)
  two_pieces = 2 * 8 * data.NUM_PITCHES * filters * 4  # bytes of 2 pieces' activations, f32
  monkeypatch.setattr(model_lib, 'CPU_CHUNK_ACTIVATION_BYTES', two_pieces)
  assert model_lib.forward_chunk_size(tiny_model, (3, 8, data.NUM_PITCHES, 4)) == 2
  samplers = (sample._independent, sample._gibbs)
  for jitted_fn in samplers:
    jitted_fn.clear_cache()  # the chunk size is read when a sampler is traced
  pieces = np.stack([make_piece(8, seed=s) for s in range(3)])
  roll = np.stack([data.pitches_to_roll(p) for p in pieces])
  free = np.zeros(pieces.shape, bool)
  free[:, :, 1:] = True
  key = jax.random.key(3)
  kwargs = dict(gibbs_steps=6, temperature=0.9)
  try:
    jitted = np.asarray(sample.gibbs_sample(tiny_model, key, roll, free, **kwargs))
  finally:
    for jitted_fn in samplers:
      jitted_fn.clear_cache()
  reference = sample.gibbs_sample_reference(tiny_model, key, roll, free, **kwargs)
  np.testing.assert_array_equal(jitted, reference)


def test_harmonize_keeps_the_soprano_exactly(tiny_model):
  soprano = data.soprano_from_melody([67, 69, 71, None], steps_per_note=2)
  out = sample.harmonize(tiny_model, jax.random.key(0), soprano, num_samples=2, gibbs_steps=9)
  assert out.shape == (2, 8, 4)
  np.testing.assert_array_equal(out[:, :, 0], np.broadcast_to(soprano, (2, 8)))
  assert _in_range(out[:, :, 1:]) and not np.isnan(out[:, :, 1:]).any()
  assert not np.array_equal(out[0], out[1])  # two different samples


@pytest.mark.parametrize('method', ['independent', 'ancestral', 'gibbs'])
def test_complete_changes_only_erased_variables(tiny_model, method):
  piece = make_piece(8, seed=1)
  piece[0, 3] = np.nan  # a given rest stays a rest
  erase = np.zeros(piece.shape, bool)
  erase[3:6, :] = True
  erase[:, 2] = True
  erase[0, 3] = False
  out = sample.complete(tiny_model, jax.random.key(1), piece, erase, method=method,
                        gibbs_steps=4, order='random')
  np.testing.assert_array_equal(out[0][~erase], piece[~erase])
  assert _in_range(out[0][erase])


def test_ancestral_chronological_argmax_equals_brute_force(tiny_model):
  """Greedy ancestral sampling, one variable at a time with explicit masks in Python."""
  piece = make_piece(3, seed=2)
  free = np.zeros(piece.shape, bool)
  free[1:, 1:] = True
  out = sample.complete(tiny_model, jax.random.key(0), piece, free, method='ancestral',
                        temperature=0.0)[0]
  pitches = piece.copy()
  pitches[free] = np.nan
  remaining = free.copy()
  for t, i in zip(*np.nonzero(free)):  # time-major, soprano to bass
    logits = forward(tiny_model, data.pitches_to_roll(pitches)[None], remaining[None])
    pitches[t, i] = data.MIN_PITCH + int(np.argmax(logits[0, t, :, i]))
    remaining[t, i] = False
  np.testing.assert_array_equal(out, pitches)


def test_sample_pitches_draws_over_pitch_and_takes_the_argmax_at_temperature_0():
  """Both branches of the draw: the inverse-CDF draw along the pitch axis, and the argmax."""
  from common import sampling  # pylint: disable=g-import-not-at-top
  logits = jax.random.normal(jax.random.key(3), (2, 5, data.NUM_PITCHES, 4)) * 3
  key = jax.random.key(4)
  np.testing.assert_array_equal(sample.sample_pitches(key, logits, 0.0),
                                np.argmax(np.asarray(logits), axis=2))
  np.testing.assert_array_equal(
      sample.sample_pitches(key, logits, 0.5),
      sampling.categorical(key, np.swapaxes(np.asarray(logits), 2, 3) / 0.5))


def test_generate_upsample_revoice(tiny_model):
  key = jax.random.key(3)
  scratch = sample.generate_from_scratch(tiny_model, key, 8, num_samples=2, gibbs_steps=9)
  assert scratch.shape == (2, 8, 4) and _in_range(scratch)
  quarter = make_piece(8, seed=3)[::4]
  up = sample.upsample(tiny_model, key, quarter, gibbs_steps=4)
  assert up.shape == (1, 8, 4)
  np.testing.assert_array_equal(up[0, ::4], quarter)
  piece = make_piece(8, seed=4)
  revoiced = sample.revoice(tiny_model, key, piece, keep_voices=(0, 3), gibbs_steps=4)
  np.testing.assert_array_equal(revoiced[0][:, [0, 3]], piece[:, [0, 3]])
  assert _in_range(revoiced) and not np.array_equal(revoiced[0], piece)


def test_bad_arguments_raise_user_errors(tiny_model):
  piece = make_piece(4)
  with pytest.raises(UserError, match='sampling method'):
    sample.complete(tiny_model, jax.random.key(0), piece, np.ones(piece.shape, bool),
                    method='magic')
  with pytest.raises(UserError, match='order'):
    sample.complete(tiny_model, jax.random.key(0), piece, np.ones(piece.shape, bool),
                    method='ancestral', order='sideways')
