"""The hand-written LSTM backward pass equals autodiff of the plain step loop."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicvae import lstm
from musicvae import model as model_lib


def _stack(in_features, sizes, seed=0, forget_bias=0.0):
  return model_lib.StackedLSTM(in_features, sizes, forget_bias=forget_bias, rngs=nnx.Rngs(seed))


def _reference_scan(stack, state, x_BTI, reverse):
  """The obvious path: autodiff through lax.scan of StackedLSTM.step."""
  state, y_TBH = jax.lax.scan(stack.step, state, jnp.swapaxes(x_BTI, 0, 1), reverse=reverse)
  return state, jnp.swapaxes(y_TBH, 0, 1)


def _loss_fn(scan_fn):
  def loss(stack, state, x_BTI, w_BTH, reverse):
    final, y_BTH = scan_fn(stack, state, x_BTI, reverse)
    # Every output enters the loss: the sequence and the last layer's final (c, h).
    return (jnp.sum(y_BTH * w_BTH) + jnp.sum(jnp.sin(final[-1][0])) +
            jnp.sum(final[-1][1] ** 2) + sum(jnp.sum(c * h) for c, h in final[:-1]))
  return loss


@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('sizes,forget_bias', [((6,), 0.0), ((5, 7), 0.0), ((5, 7), 1.0)])
def test_fast_layer_equals_autodiff_of_step_loop(reverse, sizes, forget_bias):
  rng = np.random.default_rng(0)
  batch, steps, in_features = 3, 9, 4
  stack = _stack(in_features, sizes, forget_bias=forget_bias)
  state = tuple((jnp.asarray(rng.normal(size=(batch, s)), jnp.float32),
                 jnp.asarray(rng.normal(size=(batch, s)), jnp.float32)) for s in sizes)
  x = jnp.asarray(rng.normal(size=(batch, steps, in_features)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(batch, steps, sizes[-1])), jnp.float32)

  fast = _loss_fn(lambda m, s, x, r: m.scan(s, x, reverse=r))
  slow = _loss_fn(_reference_scan)
  args = (state, x, w, reverse)
  value_fast, grads_fast = nnx.value_and_grad(fast, argnums=(0, 1, 2))(stack, *args)
  value_slow, grads_slow = nnx.value_and_grad(slow, argnums=(0, 1, 2))(stack, *args)
  np.testing.assert_allclose(value_fast, value_slow, rtol=1e-5)
  flat_fast = jax.tree.leaves(grads_fast)
  flat_slow = jax.tree.leaves(grads_slow)
  assert len(flat_fast) == len(flat_slow)
  for a, b in zip(flat_fast, flat_slow):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mixed_precision_layer_matches_bf16_step_loop():
  """With bf16 operands both paths round the same values; they differ only in summation order."""
  rng = np.random.default_rng(1)
  stack = model_lib.use_mixed_precision(_stack(4, (6,)))
  state = stack.zero_state(3)
  x = jnp.asarray(rng.normal(size=(3, 9, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 9, 6)), jnp.float32)
  fast = _loss_fn(lambda m, s, x, r: m.scan(s, x, reverse=r))
  slow = _loss_fn(_reference_scan)
  grads_fast = nnx.grad(fast)(stack, state, x, w, False)
  grads_slow = nnx.grad(slow)(stack, state, x, w, False)
  for a, b in zip(jax.tree.leaves(grads_fast), jax.tree.leaves(grads_slow)):
    np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-3)
