"""bfloat16 LSTM products (common.precision): for encoding and sampling the fast path agrees with
the float32 one on a trained model, and the model itself stays float32; mixed-precision training
(bf16 operands forward and backward) gives gradients close to float32's."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common import precision
from common import training
from common.errors import UserError
from musicvae import data
from musicvae import model as model_lib
from musicvae import sample
from musicvae import train


@pytest.fixture(scope='module')
def trained(tiny_musicvae_workdir):
  config = training.read_config(tiny_musicvae_workdir)
  return training.load_model(train.get_task(config), config, tiny_musicvae_workdir), config


def test_only_the_lstm_kernels_of_a_copy_are_cast(trained):
  model, _ = trained
  cast = model_lib.inference_copy(model, 'bfloat16')
  for (path, var), (_, original) in zip(nnx.to_flat_state(nnx.state(cast, nnx.Param)),
                                        nnx.to_flat_state(nnx.state(model, nnx.Param))):
    want = jnp.bfloat16 if 'cells' in path and path[-1] == 'kernel' else jnp.float32
    assert var[...].dtype == want, path
    assert original[...].dtype == jnp.float32, path
  assert any('cells' in path for path, _ in nnx.to_flat_state(nnx.state(cast, nnx.Param)))


def test_bfloat16_encoding_and_sampling_agree_with_float32(trained, monkeypatch):
  model, config = trained
  enc = data.encoding_from_config(config)
  tokens = sample.sequences_to_tokens(data.synthetic_melodies(16, num_bars=enc.num_bars, seed=3),
                                      enc)
  z = np.random.default_rng(0).standard_normal((16, model.z_dim)).astype(np.float32)
  out = {}
  for dtype in ('float32', 'bfloat16'):
    monkeypatch.setenv('MUSICGEN_INFERENCE_DTYPE', dtype)
    _, mu, sigma = sample.encode_tokens(model, tokens)
    out[dtype] = mu, sigma, sample.decode_tokens(model, z, jax.random.key(0), temperature=0.0)
  (mu32, sigma32, tokens32), (mu16, sigma16, tokens16) = out['float32'], out['bfloat16']
  scale = np.abs(mu32).max()
  np.testing.assert_allclose(mu16, mu32, atol=0.02 * scale)
  np.testing.assert_allclose(sigma16, sigma32, rtol=0.02)
  assert np.mean(tokens16 == tokens32) >= 0.9  # argmax decoding: a near-tie may flip


def test_bad_dtype_setting_is_a_user_error(monkeypatch):
  monkeypatch.setenv('MUSICGEN_INFERENCE_DTYPE', 'float16')
  with pytest.raises(UserError, match='MUSICGEN_INFERENCE_DTYPE'):
    precision.inference_dtype()


def test_bf16_matmul_gradients_are_close_to_float32():
  x = jax.random.normal(jax.random.key(0), (3, 16, 32))
  kernel = jax.random.normal(jax.random.key(1), (32, 24)) / 6
  cotangent = jax.random.normal(jax.random.key(2), (3, 16, 24))

  def loss(product, x, kernel):
    return jnp.sum(product(x, kernel) * cotangent)

  want = jax.grad(functools.partial(loss, jnp.dot), argnums=(0, 1))(x, kernel)
  got = jax.grad(functools.partial(loss, precision.matmul_bf16), argnums=(0, 1))(x, kernel)
  for w, g in zip(want, got):
    assert g.dtype == jnp.float32 and g.shape == w.shape
    np.testing.assert_allclose(g, w, atol=0.02 * float(jnp.abs(w).max()))
  # The backward products really are bf16: not equal to float32's to float32 precision.
  assert not np.allclose(got[1], want[1], atol=1e-5, rtol=0)


def test_mixed_precision_model_gradients_are_close_to_float32(trained):
  model, config = trained
  enc = data.encoding_from_config(config)
  tokens = jnp.asarray(sample.sequences_to_tokens(
      data.synthetic_melodies(8, num_bars=enc.num_bars, seed=5), enc))
  z = jax.random.normal(jax.random.key(0), (8, model.z_dim))

  def loss(model):
    logits = model.reconstruct_logits(z, tokens, jax.random.key(1), 0.0)
    return jnp.mean(jax.nn.logsumexp(logits, -1))

  graphdef, state = nnx.split(model)
  mixed = model_lib.use_mixed_precision(nnx.merge(graphdef, state))
  want, got = nnx.grad(loss)(model), nnx.grad(loss)(mixed)
  for (path, w), (_, g) in zip(nnx.to_flat_state(want), nnx.to_flat_state(got)):
    scale = float(jnp.abs(w[...]).max()) + 1e-6
    np.testing.assert_allclose(g[...], w[...], atol=0.05 * scale, err_msg=str(path))
  # A float32 inference copy of a mixed-precision model multiplies in float32 again.
  copy = model_lib.inference_copy(mixed, 'float32')
  assert not any(m.mixed_precision for _, m in nnx.iter_graph(copy)
                 if isinstance(m, model_lib.StackedLSTM))
  assert all(m.mixed_precision for _, m in nnx.iter_graph(mixed)
             if isinstance(m, model_lib.StackedLSTM))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_transposed_product_is_a_transpose_times_b(dtype):
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(12, 5)), dtype)
  b = jnp.asarray(rng.normal(size=(12, 7)), dtype)
  got = jax.jit(precision.transposed_product)(a, b)
  assert got.dtype == jnp.float32 and got.shape == (5, 7)
  want = np.asarray(a, np.float32).T @ np.asarray(b, np.float32)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
