"""Fast-WaveNet queues: step-by-step and primed outputs equal the whole-sequence pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import fast_conv


def make_stack(seed: int, in_features: int, specs: list[tuple[int, int, int]],
               residual_at: tuple[int, ...] = ()) -> list[fast_conv.ConvLayer]:
  """specs: (kernel_size, dilation, out_features) per layer; ELU on all but the last."""
  rng = np.random.default_rng(seed)  # numpy weights: nothing to compile per shape
  layers, features = [], in_features
  for i, (k, d, out) in enumerate(specs):
    layers.append(fast_conv.ConvLayer(
        jnp.asarray(rng.normal(size=(k, features, out)) / np.sqrt(k * features), jnp.float32),
        jnp.asarray(0.1 * rng.normal(size=out), jnp.float32), dilation=d,
        activation=jax.nn.elu if i < len(specs) - 1 else None, residual=i in residual_at))
    features = out
  return layers


STACKS = {
    'k2_one_block': (2, [(2, 1, 3), (2, 2, 4), (2, 4, 5), (1, 1, 1)], ()),
    'k3_two_blocks': (1, [(3, 1, 3), (3, 2, 3), (3, 4, 3), (3, 1, 4), (3, 2, 2), (1, 1, 2)],
                      (1, 2)),
    'k2_wide_dilation': (3, [(2, 8, 4), (2, 1, 4), (4, 3, 2)], (1,)),
}


@pytest.mark.parametrize('name', sorted(STACKS))
def test_step_by_step_equals_forward(name):
  in_features, specs, residual_at = STACKS[name]
  layers = make_stack(0, in_features, specs, residual_at)
  x_BTC = jnp.asarray(np.random.default_rng(1).normal(size=(3, 40, in_features)), jnp.float32)
  want_BTC = fast_conv.forward(layers, x_BTC)

  state = fast_conv.init_state(layers, 3)
  step = jax.jit(lambda s, x: fast_conv.step(layers, s, x))
  got = []
  for t in range(x_BTC.shape[1]):
    state, y_BC = step(state, x_BTC[:, t])
    got.append(y_BC)
  np.testing.assert_allclose(jnp.stack(got, 1), want_BTC, rtol=1e-5, atol=1e-5)
  assert int(state.t) == 40


@pytest.mark.parametrize('seed_len', [1, 5, 29])
@pytest.mark.parametrize('name', sorted(STACKS))
def test_prime_then_step_equals_forward(name, seed_len):
  in_features, specs, residual_at = STACKS[name]
  layers = make_stack(4, in_features, specs, residual_at)
  x_BTC = jnp.asarray(np.random.default_rng(2).normal(size=(2, 36, in_features)), jnp.float32)
  want_BTC = fast_conv.forward(layers, x_BTC)
  state, primed_BTC = fast_conv.prime(layers, x_BTC[:, :seed_len])
  np.testing.assert_allclose(primed_BTC, want_BTC[:, :seed_len], rtol=1e-5, atol=1e-5)
  step = jax.jit(lambda s, x: fast_conv.step(layers, s, x))
  for t in range(seed_len, x_BTC.shape[1]):
    state, y_BC = step(state, x_BTC[:, t])
    np.testing.assert_allclose(y_BC, want_BTC[:, t], rtol=1e-5, atol=1e-5, err_msg=f't={t}')


def test_forward_is_causal_with_the_stated_receptive_field():
  in_features, specs, residual_at = STACKS['k3_two_blocks']
  layers = make_stack(0, in_features, specs, residual_at)
  field = fast_conv.receptive_field(layers)
  assert field == 1 + 2 * (1 + 2 + 4 + 1 + 2)
  x_BTC = jnp.asarray(np.random.default_rng(3).normal(size=(1, 50, in_features)), jnp.float32)
  base = fast_conv.forward(layers, x_BTC)
  t = 40
  changed = fast_conv.forward(layers, x_BTC.at[:, t].add(1.0))
  np.testing.assert_array_equal(changed[:, :t], base[:, :t])  # the past never moves
  assert not np.allclose(changed[:, t], base[:, t])
  # The oldest input an output sees is field - 1 steps back; one step older is invisible.
  oldest = fast_conv.forward(layers, x_BTC.at[:, t - field + 1].add(1.0))
  assert not np.allclose(oldest[:, t], base[:, t])
  too_old = fast_conv.forward(layers, x_BTC.at[:, t - field].add(1.0))
  np.testing.assert_allclose(too_old[:, t], base[:, t], rtol=1e-6, atol=1e-6)


def test_forward_num_pad_equals_running_on_the_suffix():
  in_features, specs, residual_at = STACKS['k2_one_block']
  layers = make_stack(5, in_features, specs, residual_at)
  x_BTC = jnp.asarray(np.random.default_rng(4).normal(size=(2, 20, in_features)), jnp.float32)
  num_pad_B = jnp.array([0, 7])
  got = fast_conv.forward(layers, x_BTC, num_pad_B)
  np.testing.assert_allclose(got[0], fast_conv.forward(layers, x_BTC[:1])[0], atol=1e-6)
  np.testing.assert_allclose(got[1, 7:], fast_conv.forward(layers, x_BTC[1:, 7:])[0], atol=1e-5)


def test_scan_generate_feeds_samples_back():
  """A jitted scan loop equals a Python loop of step + sample with the same keys."""
  layers = make_stack(6, 1, [(2, 1, 3), (2, 2, 3), (1, 1, 1)])
  rng = jax.random.key(7)

  def step_fn(state, x_B, index):
    del index
    state, y_B1 = fast_conv.step(layers, state, x_B[:, None])
    return state, y_B1[:, 0]

  def sample_fn(key, y_B, index):
    return (jax.random.uniform(key, y_B.shape) < jax.nn.sigmoid(y_B + index % 3)).astype(
        jnp.float32)

  state0 = fast_conv.init_state(layers, 4)
  x0 = jnp.ones(4)
  _, got_NB = jax.jit(lambda s, x: fast_conv.scan_generate(
      step_fn, s, x, 25, sample_fn, rng, start_index=3))(state0, x0)
  one_step = jax.jit(lambda state, x, i: step_fn(state, x, i))
  one_sample = jax.jit(lambda i, y: sample_fn(jax.random.fold_in(rng, i + 1), y, i))
  state, x, want = state0, x0, []
  for i in range(3, 28):
    state, y = one_step(state, x, i)
    x = one_sample(i, y)
    want.append(x)
  np.testing.assert_array_equal(got_NB, jnp.stack(want))
  assert 0 < float(got_NB.mean()) < 1  # really random, so equality means something
