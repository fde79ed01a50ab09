"""MusicVAE networks: the incremental (sampling) path equals the teacher-forced path."""

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicvae import model as model_lib

CONFIGS = {
    'flat': ((90,), ()),
    'hier': ((90,), (8,)),
    'trio_hier': ((90, 90, 512), (8,)),  # three note decoders under one conductor
}


@functools.lru_cache(maxsize=None)
def _model(name):
  vocab_sizes, conductor_sizes = CONFIGS[name]
  # Every LSTM is 8 wide so that initializers compile for few shapes (eager init is slow on CPU).
  return model_lib.MusicVAE(vocab_sizes=vocab_sizes, num_steps=32, z_dim=8, encoder_sizes=(8,),
                            decoder_sizes=(8, 8), conductor_sizes=conductor_sizes, bar_steps=16,
                            rngs=nnx.Rngs(0))


def _tokens(vocab_sizes, batch=2, steps=32, seed=0):
  return jnp.stack([jax.random.randint(jax.random.key(seed + k), (batch, steps), 0, v)
                    for k, v in enumerate(vocab_sizes)], axis=-1)


@nnx.jit
def _paths(model, tokens):
  mu, sigma = model.encode(tokens)
  teacher = model.reconstruct_logits(mu, tokens)
  forced_ids, stepwise = model.sample(mu, jax.random.key(1), 1.0, forced_BTK=tokens)
  greedy_ids, greedy_logits = model.sample(mu, jax.random.key(2), 0.0)
  greedy_teacher = model.reconstruct_logits(mu, greedy_ids)
  scheduled = model.reconstruct_logits(mu, tokens, jax.random.key(3), 1.0)
  return dict(mu=mu, sigma=sigma, teacher=teacher, stepwise=stepwise, forced_ids=forced_ids,
              greedy_ids=greedy_ids, greedy_logits=greedy_logits, greedy_teacher=greedy_teacher,
              scheduled=scheduled)


@pytest.mark.parametrize('name', [
    'flat', 'hier', pytest.param('trio_hier', marks=pytest.mark.slow)])
def test_step_decoding_equals_teacher_forcing(name):
  vocab_sizes, _ = CONFIGS[name]
  tokens = _tokens(vocab_sizes)
  out = _paths(_model(name), tokens)
  assert out['teacher'].shape == (2, 32, sum(vocab_sizes))
  assert out['mu'].shape == (2, 8) and bool(jnp.all(out['sigma'] > 0))
  np.testing.assert_allclose(out['stepwise'], out['teacher'], atol=1e-5)
  np.testing.assert_array_equal(out['forced_ids'], tokens)
  # Free-running argmax decoding feeds back its own argmax: teacher forcing on its output agrees.
  np.testing.assert_allclose(out['greedy_logits'], out['greedy_teacher'], atol=1e-5)
  for k, logits in enumerate(model_lib.split_tracks(out['greedy_logits'], vocab_sizes)):
    np.testing.assert_array_equal(out['greedy_ids'][..., k], jnp.argmax(logits, -1))
  # Scheduled sampling with p = 1 replaces inputs from step 1 on (step 0 always gets the start).
  np.testing.assert_allclose(out['scheduled'][:, 0], out['teacher'][:, 0], atol=1e-6)
  assert float(jnp.abs(out['scheduled'] - out['teacher']).max()) > 1e-4


def test_python_step_loop_matches_flat_scan():
  """The decoder's step with an explicit (c, h) state, called from Python, gives the same logits."""
  model = _model('flat')
  tokens = _tokens((90,), batch=2)
  out = _paths(model, tokens)
  step = nnx.jit(lambda dec, state, x, z: dec.step(state, x, z))
  dec, mu = model.decoder, out['mu']
  state, x = dec.initial_state(mu), jnp.zeros((2, 90))
  for t in range(32):
    state, logits = step(dec, state, x, mu)
    np.testing.assert_allclose(logits, out['teacher'][:, t], atol=1e-5)
    x = jax.nn.one_hot(tokens[:, t, 0], 90)


def test_hierarchical_bar_starts_from_previous_bar_last_token():
  """Changing only the last token of bar 0 changes bar 1's first logits, and nothing before."""
  model = _model('hier')
  tokens = _tokens((90,))
  other = tokens.at[:, 15, 0].set((tokens[:, 15, 0] + 1) % 90)
  z = jax.random.normal(jax.random.key(4), (2, 8))  # one z for both: only the inputs differ
  recon = nnx.jit(lambda m, z, t: m.reconstruct_logits(z, t))
  la, lb = recon(model, z, tokens), recon(model, z, other)
  np.testing.assert_allclose(la[:, :16], lb[:, :16], atol=1e-6)
  assert float(jnp.abs(la[:, 16] - lb[:, 16]).max()) > 1e-6


def test_projected_lstm_equals_flax_cells():
  """StackedLSTM's hoisted input projection gives what flax's own cells give step by step."""
  lstm = model_lib.StackedLSTM(5, (6, 4), rngs=nnx.Rngs(3))
  x_BTI = jax.random.normal(jax.random.key(0), (2, 7, 5))
  _, y_fast = lstm.scan(lstm.zero_state(2), x_BTI)
  state, ys = lstm.zero_state(2), []
  for t in range(7):
    h = x_BTI[:, t]
    new_state = []
    for cell, carry in zip(lstm.cells, state):
      carry, h = cell(carry, h)  # nnx.OptimizedLSTMCell.__call__: the obvious path
      new_state.append(carry)
    state = tuple(new_state)
    ys.append(h)
  np.testing.assert_allclose(y_fast, jnp.stack(ys, axis=1), atol=1e-6)


@pytest.mark.parametrize('name', ['flat', 'hier'])
def test_conditioning_projected_once_equals_the_concatenated_input(name):
  """The decoders project z (or the conductor's c) once per sequence (or bar); a step must equal
  the obvious step of flax's cell on the concatenated input [previous one-hot, z or c]."""
  model = _model(name)
  dec = model.decoder
  cond_BC = jax.random.normal(jax.random.key(5), (2, 8))
  prev_BV = jax.nn.one_hot(jnp.array([3, 40]), 90)
  if name == 'flat':
    lstm, out = dec.lstm, dec.out
    state = dec.initial_state(cond_BC)
    _, fast = dec.step(state, prev_BV, cond_BC)
  else:
    lstm, out = dec.cores[0], dec.outs[0]
    state = dec.core_state(0, cond_BC)
    _, fast = dec.core_step(0, state, prev_BV, cond_BC)
  h = jnp.concatenate([prev_BV, cond_BC], axis=-1)
  assert lstm.forget_bias == model_lib.ORIGINAL_FORGET_BIAS
  for cell, carry in zip(lstm.cells, state):
    _, h = _block_cell_step(cell, carry, h, lstm.forget_bias)
  np.testing.assert_allclose(fast, out(h), atol=1e-6)


def _block_cell_step(cell, carry, x_BI, forget_bias):
  """The obvious LSTMBlockCell step: [x, h] @ [W_i; W_h] + b, gates i, f, g, o, forget_bias
  added to f (the same as flax's cell when forget_bias is 0)."""
  c_BH, h_BH = carry
  kernel = jnp.concatenate([cell.dense_i.kernel[...], cell.dense_h.kernel[...]], axis=0)
  i, f, g, o = jnp.split(jnp.concatenate([x_BI, h_BH], -1) @ kernel + cell.dense_h.bias[...], 4,
                         axis=-1)
  c_BH = jax.nn.sigmoid(f + forget_bias) * c_BH + jax.nn.sigmoid(i) * jnp.tanh(g)
  h_BH = jax.nn.sigmoid(o) * jnp.tanh(c_BH)
  return (c_BH, h_BH), h_BH


def test_forget_bias_zero_is_flax_cell_and_one_is_block_cell():
  """forget_bias 0 (older runs) steps as flax's cell; 1 as Magenta's LSTMBlockCell formula."""
  x_BI = jax.random.normal(jax.random.key(0), (2, 5))
  for forget_bias in (0.0, 1.0):
    lstm = model_lib.StackedLSTM(5, (6,), forget_bias=forget_bias, rngs=nnx.Rngs(3))
    state = (tuple(jax.random.normal(jax.random.key(k), (2, 6)) for k in (1, 2)),)
    (carry,), h = lstm.step(state, x_BI)
    reference, h_ref = _block_cell_step(lstm.cells[0], state[0], x_BI, forget_bias)
    np.testing.assert_allclose(h, h_ref, atol=1e-6)
    np.testing.assert_allclose(carry[0], reference[0], atol=1e-6)
    if not forget_bias:
      _, h_flax = lstm.cells[0](state[0], x_BI)
      np.testing.assert_allclose(h, h_flax, atol=1e-6)
    _, h_scan = lstm.scan(state, x_BI[:, None])
    np.testing.assert_allclose(h_scan[:, 0], h, atol=1e-6)
