"""cpword evaluation: per-family metrics and nats per note, checked by hand on the tiny data."""

import sys

import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import UserError
from cpword import configs
from cpword import evaluate
from cpword import tokens
from cpword import train


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _by_hand(model, config, windows):
  """(summed NLL of every predicted field or event, number of note targets), window by window."""
  lo, hi = train.note_onset_range(config)
  nll, notes = 0.0, 0
  for window in windows:
    window_TF = window[:, None] if window.ndim == 1 else window
    inputs, targets = window_TF[None, :-1], window_TF[None, 1:]
    logits = model(jnp.asarray(inputs), jnp.asarray(targets[..., 0]))
    for i, family in enumerate(model.families):
      target_T = targets[0, :, i]
      log_p = _log_softmax(logits[family.name][0])[np.arange(len(target_T)), target_T]
      nll -= log_p[target_T != tokens.IGNORE].sum()
    notes += int(((targets[0, :, 0] >= lo) & (targets[0, :, 0] < hi)).sum())
  return nll, notes


def test_note_onset_range_counts_one_target_per_note():
  seq = train.synthetic_pieces(1, seed=5)[0]
  for representation in ('cp', 'remi'):
    config = configs.get_config('tiny')
    config.representation = representation
    vocab = tokens.vocab_from_config(config)
    song = tokens.encode_cp(seq, vocab)
    if representation == 'remi':
      song = tokens.cp_to_remi(song, vocab)[:, None]
    lo, hi = train.note_onset_range(config)
    assert ((song[:, 0] >= lo) & (song[:, 0] < hi)).sum() == len(seq.notes)


@pytest.mark.parametrize('representation', ['cp', 'remi'])
def test_nats_per_note_is_the_summed_nll_over_the_note_count(tiny_model, representation):
  config, model = tiny_model(representation)
  songs = train.tokenized_dataset(config, 'valid')
  windows = train.eval_windows(songs, config.data.seq_len, sys.maxsize)
  if len(windows) % config.batch_size == 0:
    windows = windows[:-1]  # a padded last batch: its padding must not count
  results = evaluate.window_metrics(model, config, windows)
  nll, notes = _by_hand(model, config, windows)
  assert results['notes'] == notes > 0
  np.testing.assert_allclose(results['nll_total'], nll, rtol=1e-4)
  np.testing.assert_allclose(results['nats_per_note'], nll / notes, rtol=1e-4)
  np.testing.assert_allclose(results['bits_per_note'], nll / notes / np.log(2), rtol=1e-4)
  assert results['windows'] == len(windows)


def test_evaluate_from_flags_prints_a_table_and_limits_songs(tiny_model, capsys):
  config, model = tiny_model('cp')
  config = config.copy_and_resolve_references()
  results = evaluate.evaluate_from_flags(model, config, dict(split='valid', max_pieces=2, seed=0))
  assert results['songs'] == 2 and results['split'] == 'valid'
  assert results['windows'] == len(train.eval_windows(
      train.tokenized_dataset(config, 'valid'), config.data.seq_len, sys.maxsize))
  out = capsys.readouterr().out
  assert 'nats/note' in out and '2 songs' in out
  for family in ('type', 'bar_beat', 'pitch', 'velocity'):
    assert f'  {family} ' in out
  assert '  emotion ' not in out  # no target uses it in the tiny data
  assert 0 < results['acc_type'] <= 1 and results['nats_per_note'] > 0


@pytest.mark.parametrize('options', [dict(max_pieces=0), dict(split='dev')])
def test_bad_options_are_user_errors(tiny_model, options):
  config, model = tiny_model('cp')
  with pytest.raises(UserError):
    evaluate.evaluate_from_flags(model, config.copy_and_resolve_references(), options)


def test_the_training_loops_eval_fn_reports_the_per_window_sums(tiny_model):
  config, model = tiny_model('cp')
  window = train.tokenized_dataset(config, 'valid')[0][:config.data.seq_len + 1]
  tokens_BT = np.stack([window, window])
  eval_fn = train.get_task(config).eval_fn
  both = eval_fn(model, {'tokens': tokens_BT, 'weight': jnp.array([1.0, 1.0])}, None)
  one = eval_fn(model, {'tokens': tokens_BT, 'weight': jnp.array([1.0, 0.0])}, None)
  nll, notes = _by_hand(model, config, [window])
  for metrics in (both, one):
    np.testing.assert_allclose(metrics['nll_per_window'], nll, rtol=1e-4)
    np.testing.assert_allclose(metrics['notes_per_window'], notes)


def test_song_statistics_by_hand():
  bar = tokens.make_word(type=tokens.TYPE_METRICAL, bar_beat=tokens.BAR)
  beat = tokens.make_word(type=tokens.TYPE_METRICAL, bar_beat=2, tempo=tokens.CONTI,
                          chord=tokens.CONTI)
  note = lambda v: tokens.make_word(type=tokens.TYPE_NOTE, pitch=40, duration=4, velocity=v)
  song = np.array([bar, beat, note(10), note(20), bar, beat, note(30)], np.int32)
  stats = evaluate.song_statistics([song])
  assert stats == {'songs': 1, 'notes_per_bar': 1.5, 'mean_velocity_bin': 20.0}


@pytest.mark.parametrize('representation', ['cp', 'remi'])
def test_emotion_report_generates_per_quadrant(tiny_model, representation):
  config, model = tiny_model(representation)
  vocab = tokens.vocab_from_config(config)
  song = tokens.encode_cp(train.synthetic_pieces(1, seed=1)[0], vocab, emotion='Q2')
  if representation == 'remi':
    song = tokens.cp_to_remi(song, vocab)
  report = evaluate.emotion_report(model, config, (song,), num_songs=2, num_words=48)
  assert list(report) == list(tokens.EMOTIONS)
  assert report['Q2']['data']['songs'] == 1 and report['Q1']['data']['songs'] == 0
  assert all(r['generated']['songs'] == 2 for r in report.values())
  assert report['Q2']['data']['notes_per_bar'] > 0
