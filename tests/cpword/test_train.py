"""The training task: data windows, per-family losses, a few steps that reduce the loss."""

import os
from flax import nnx
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import training
from common.errors import UserError
from cpword import configs
from cpword import tokens
from cpword import train


def test_configs():
  paper = configs.get_config('paper')
  assert (paper.model.num_layers, paper.model.d_model, paper.model.num_heads,
          paper.model.ffn_dim, paper.model.dropout) == (12, 512, 8, 2048, 0.1)
  assert paper.task == 'cpword' and paper.representation == 'cp'
  assert dict(paper.model.embed_dims) == dict(type=32, bar_beat=64, tempo=128, chord=256,
                                              pitch=512, duration=128, velocity=128, emotion=32)
  assert configs.get_config('small_remi').representation == 'remi'
  assert configs.get_config('tiny_emotion').dataset == 'emopia'
  with pytest.raises(UserError, match="unknown config variant 'huge'"):
    configs.get_config('huge')
  assert isinstance(train.get_task(paper), training.TrainTask)


@pytest.mark.parametrize('representation', ['cp', 'remi'])
def test_emotion_token_leads_every_training_window(representation):
  vocab = tokens.Vocab()
  seqs = train.synthetic_pieces(1, seed=0)
  song = tokens.encode_cp(seqs[0], vocab, emotion='Q3')
  if representation == 'remi':
    song = tokens.cp_to_remi(song, vocab)
  assert train.starts_with_emotion(song, vocab) and len(song) > 40
  transform = train._window_transform(16, vocab)  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  windows = [transform(song, rng)['tokens'] for _ in range(20)]
  assert all(len(w) == 17 and w[0].tolist() == song[0].tolist() for w in windows)
  assert len({w[1:].tobytes() for w in windows}) > 1  # the rest is still a random crop
  plain = train._window_transform(16, vocab)(song[1:], rng)['tokens']  # pylint: disable=protected-access
  assert not train.starts_with_emotion(plain, vocab)


@pytest.mark.parametrize('representation', ['cp', 'remi'])
def test_batches_and_eval_windows(representation):
  config = configs.get_config('tiny')
  config.representation = representation
  batch = next(train.train_iterator(config, 0, 1))
  shape = (config.batch_size, config.data.seq_len + 1)
  assert batch['tokens'].shape == (shape + (tokens.NUM_FAMILIES,) if representation == 'cp'
                                   else shape)
  evals = list(train.eval_batches(config, 0, 1))
  assert evals and all(b['tokens'].shape == batch['tokens'].shape for b in evals)
  assert evals[0]['weight'].sum() > 0


def _log_p(logits_TV, target_T):
  x = np.asarray(logits_TV, np.float64)
  x = x - x.max(-1, keepdims=True)
  x -= np.log(np.exp(x).sum(-1, keepdims=True))
  return x[np.arange(len(target_T)), target_T]


def test_masked_mean_loss_is_the_mean_of_per_family_ce_over_used_fields(tiny_model):
  config, model = tiny_model('cp')
  songs = train.tokenized_dataset(config, 'train')
  window = songs[0][:config.data.seq_len + 1]
  loss, metrics = train.family_losses(model, jnp.asarray(window[None]), loss='masked_mean')
  logits = model(jnp.asarray(window[None, :-1]), jnp.asarray(window[None, 1:, 0]))
  per_family = []
  for i, family in enumerate(tokens.FAMILIES):
    target = window[1:, i]
    used = target != tokens.IGNORE
    if used.any():
      per_family.append(-_log_p(logits[family][0], target)[used].mean())
      np.testing.assert_allclose(metrics[f'ce_{family}'], per_family[-1], rtol=1e-4)
  assert len(per_family) == len(tokens.FAMILIES) - 1  # the tiny set has no emotion
  np.testing.assert_allclose(loss, np.mean(per_family), rtol=1e-4)


@pytest.mark.parametrize('emotion', [False, True])
def test_original_loss_counts_ignore_targets_and_divides_the_family_sum_by_7(tiny_model, emotion):
  """CW:workspace/uncond/cp-linear/main-cp.py:295-330, 587: per family sum(CE * mask) /
  sum(mask) over the batch, mask 1 on real positions only; (the 7 family losses) / 7."""
  config, model = tiny_model('cp')
  songs = train.tokenized_dataset(config, 'train')
  short = songs[1][:20]  # padded: its padding must not count
  batch = np.stack([songs[0][:config.data.seq_len + 1],
                    train.pad_song(short, config.data.seq_len + 1)])
  loss, _ = train.family_losses(model, jnp.asarray(batch), loss='original', emotion=emotion)
  logits = model(jnp.asarray(batch[:, :-1]), jnp.asarray(batch[:, 1:, 0]))
  targets = batch[:, 1:]
  real = targets[..., tokens.F['type']] != 0
  assert real.sum() == config.data.seq_len + len(short) - 1
  families = tokens.FAMILIES if emotion else tokens.FAMILIES[:-1]
  per_family = []
  for family in families:
    i = tokens.F[family]
    nll = np.concatenate([-_log_p(logits[family][b], targets[b, :, i])[real[b]] for b in range(2)])
    per_family.append(nll.sum() / real.sum())
  assert len(per_family) == (8 if emotion else 7)
  np.testing.assert_allclose(loss, sum(per_family) / len(per_family), rtol=1e-4)
  masked, _ = train.family_losses(model, jnp.asarray(batch), loss='masked_mean')
  assert not np.isclose(loss, masked)


def test_whole_songs_come_padded_in_the_originals_fixed_order():
  config = configs.get_config('tiny')
  config.data.whole_songs = True
  songs = train.tokenized_dataset(config, 'train')
  lengths = sorted((len(s) for s in songs), reverse=True)
  config.data.seq_len = lengths[0] - 2  # the longest songs do not fit
  kept = train.whole_songs(songs, config.data.seq_len)
  assert len(kept) == len(songs) - lengths.count(lengths[0]) >= config.batch_size
  iterator = train.train_iterator(config, 0, 1)
  used = len(kept) // config.batch_size * config.batch_size
  seen = [row for _ in range(2 * used // config.batch_size) for row in next(iterator)['tokens']]
  order = sorted(kept, key=len, reverse=True)[:used]
  for row, song in zip(seen, order + order):  # two epochs, same order, no shuffling
    assert row.shape == (config.data.seq_len + 1, tokens.NUM_FAMILIES)
    np.testing.assert_array_equal(row[:len(song)], song)
    assert not row[len(song):].any()
  state = iterator.get_state()
  again = train.train_iterator(config, 0, 1)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)['tokens'], next(iterator)['tokens'])
  config.data.song_order = 'shuffled'
  batch = next(train.train_iterator(config, 0, 1))['tokens']
  assert batch.shape == (config.batch_size, config.data.seq_len + 1, tokens.NUM_FAMILIES)


def test_eval_windows_carry_the_emotion_and_predict_every_word_once():
  vocab = tokens.Vocab()
  song = tokens.encode_cp(train.synthetic_pieces(1, seed=3)[0], vocab, emotion='Q4')
  windows = train.eval_windows((song,), 16, 100, vocab)
  assert len(windows) > 2 and all(w[0].tolist() == song[0].tolist() for w in windows)
  targets = np.concatenate([w[1:][w[1:, 0] != 0] for w in windows])
  np.testing.assert_array_equal(targets, song[1:])  # every word after the emotion, once
  plain = train.eval_windows((song[1:],), 16, 100, vocab)
  targets = np.concatenate([w[1:][w[1:, 0] != 0] for w in plain])
  np.testing.assert_array_equal(targets, song[2:])


def test_older_records_keep_their_tokens_and_loss(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from common import configs as common_configs  # pylint: disable=g-import-not-at-top
  record = json.loads(configs.get_config('small').to_json())
  record.pop('loss')
  record['tokens'] = dict(steps_per_beat=4, beats_per_bar=4, tempo_min=32, tempo_step=3,
                          num_tempo_bins=64, pitch_min=21, pitch_max=108, num_velocity_bins=32)
  (tmp_path / 'config.json').write_text(json.dumps(record))
  config = common_configs.read_config(str(tmp_path))
  assert config.loss == 'masked_mean'
  assert tokens.vocab_from_config(config) == tokens.vocab_from_config(
      configs.get_config('small_v1tokens'))


@pytest.mark.parametrize('representation', ['cp', 'remi'])
def test_a_few_steps_reduce_the_loss(representation):
  config = configs.get_config('tiny')
  config.representation = representation
  config.model.relative = True
  config.model.dropout = 0.1  # the dropout RNG stream must work under nnx.jit
  model = train.build_model(config, nnx.Rngs(0))
  model.train()
  optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
  task = train.get_task(config)
  batch = next(task.train_iterator(config, 0, 1))

  @nnx.jit
  def step(model, optimizer, tokens_BT):
    grad_fn = nnx.value_and_grad(lambda m: task.loss_fn(m, {'tokens': tokens_BT}, None, 0),
                                 has_aux=True)
    (loss, _), grads = grad_fn(model)
    optimizer.update(model, grads)
    return loss

  tokens_BT = jnp.asarray(batch['tokens'])
  losses = [float(step(model, optimizer, tokens_BT)) for _ in range(15)]
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.7 * losses[0]


@pytest.mark.slow
def test_train_loop_then_generate_pieces(tmp_path):
  from common import generation  # pylint: disable=g-import-not-at-top
  from common import midi  # pylint: disable=g-import-not-at-top
  from cpword import sample  # pylint: disable=g-import-not-at-top
  config = configs.get_config('tiny')
  config.num_train_steps = 4
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 4
  config.sample_every_steps = 4
  config.sampling.max_words = 24
  workdir = str(tmp_path / 'run')
  training.train_and_evaluate(train.get_task(config), config, workdir)
  assert os.listdir(tmp_path / 'run' / 'samples' / 'step_4')
  model = training.load_model(train.get_task(config), config, workdir)
  pieces = sample.generate_pieces(model, config, generation.Request(
      num_samples=2, length=24, min_length=12, seed=1))
  assert pieces and all(p.sequence.notes for p in pieces)
  # Continuing a prompt, written as the command line does.
  continued = sample.generate_pieces(model, config, generation.Request(
      task='continue', inputs=(pieces[0].sequence,), length=48, num_samples=2, temperature=0.8))
  written = generation.write_pieces(continued, str(tmp_path / 'flags'), png=True)
  assert any(p.endswith('.png') for p in written) and all(
      midi.read_midi(p).notes for p in written if p.endswith('.mid'))
