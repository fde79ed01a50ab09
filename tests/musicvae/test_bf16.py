"""bfloat16 LSTM products for encoding and sampling (common.precision): the fast path
agrees with the float32 one on a trained model, and the model itself stays float32."""

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
  cast = model_lib.with_bfloat16_lstms(model)
  for (path, var), (_, original) in zip(nnx.to_flat_state(nnx.state(cast, nnx.Param)),
                                        nnx.to_flat_state(nnx.state(model, nnx.Param))):
    want = jnp.bfloat16 if 'cells' in path and path[-1] == 'kernel' else jnp.float32
    assert var[...].dtype == want, path
    assert original[...].dtype == jnp.float32, path
  assert any('cells' in path for path, _ in nnx.to_flat_state(nnx.state(cast, nnx.Param)))


def test_bfloat16_encoding_and_sampling_agree_with_float32(trained, monkeypatch):
  model, config = trained
  enc = train.encoding_from_config(config)
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
