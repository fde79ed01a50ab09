"""cpword evaluation: per-family metrics and nats per note, checked by hand on the tiny data."""

import sys

from flax import nnx
import jax
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


def _random_songs(model, num_songs, length, seed=0):
  rng = np.random.default_rng(seed)
  songs = []
  for _ in range(num_songs):
    song = np.stack([rng.integers(2, 4, length)] +
                    [rng.integers(0, f.vocab_size, length) for f in model.families[1:]], -1)
    songs.append(song.astype(np.int32))
  return tuple(songs)


@pytest.mark.parametrize('emotion', [False, True])
def test_context_nll_scores_the_same_targets_as_generation_reads_them(tiny_model, emotion):
  """The windowed NLL equals one full pass over each target's own context (the slow path)."""
  from cpword import sample  # pylint: disable=g-import-not-at-top
  config, model = tiny_model('cp')
  config = config.copy_and_resolve_references()
  config.sampling.window_stride = 5
  window, stride = config.data.seq_len, 5
  songs = _random_songs(model, 2, 120)
  if emotion:
    songs = tuple(np.concatenate([[tokens.make_word(type=tokens.TYPE_EMOTION, emotion=2)], s])
                  for s in songs)
  songs += _random_songs(model, 1, 60, seed=1)  # too short: left out
  contexts, targets = [16, 32, 100], 16
  result = evaluate.context_nll(model, config, songs, contexts, target_words=targets,
                                batch_size=2)
  assert result['songs'] == 2
  lo, hi = train.note_onset_range(config)
  pinned = int(emotion)
  end = max(contexts) + 1
  graphdef, state = nnx.split(model)
  # Contexts zero-padded to the window after their words (causal: the padding is unseen).
  padded_logits = jax.jit(lambda state, x, t: nnx.merge(graphdef, state)(x, t))
  for row in result['rows']:
    nll, notes = 0.0, 0
    for song in songs[:2]:
      chunk = song[pinned:pinned + end][end - row['context'] - 1:]
      bases = sample.window_bases(pinned + row['context'], window, stride, pinned)
      for n in range(row['context'] - targets, row['context']):
        base = bases[pinned + n] - pinned
        context = np.concatenate([song[:pinned], chunk[base:n + 1]])
        assert len(context) <= window
        target = chunk[n + 1]
        target_types = np.concatenate([context[1:, 0], target[:1]])
        pad = window - len(context)
        logits = padded_logits(state, jnp.asarray(np.pad(context, [(0, pad), (0, 0)])[None]),
                               jnp.asarray(np.pad(target_types, (0, pad))[None]))
        for i, family in enumerate(model.families):
          if target[i] != tokens.IGNORE:
            nll -= _log_softmax(logits[family.name][0, len(context) - 1])[target[i]]
        notes += int(lo <= target[0] < hi)
    np.testing.assert_allclose(row['windowed'], nll / notes, rtol=1e-4)
    if pinned + row['context'] <= window:  # the window never slides
      np.testing.assert_allclose(row['full'], row['windowed'], rtol=1e-5)
  assert result['rows'][-1]['full'] is not None  # 100 words fit the tiny model's max_len 128
  text = evaluate.format_context_table(result)
  assert 'windowed' in text and '100' in text
  with pytest.raises(UserError, match='no song has'):
    evaluate.context_nll(model, config, songs, [400], target_words=targets)
