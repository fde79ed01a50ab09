"""PianoNet model: causal, step call == whole-sequence call, sizes of the paper's config."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import fast_conv
from pianonet import configs
from pianonet import model as model_lib

NUM_KEYS = 5


def tiny_model(kernel_size=2, block_layers=(3, 2), key_phase_input=False, seed=0):
  # Equal widths: few distinct shapes to compile (the widths' values do not matter here).
  widths = [4] * sum(block_layers)
  return model_lib.PianoNet(num_keys=NUM_KEYS, kernel_size=kernel_size, block_layers=block_layers,
                            widths=widths, output_bias_init=-1.0,
                            key_phase_input=key_phase_input, rngs=nnx.Rngs(seed))


def random_keys(shape, seed=1):
  return jax.random.bernoulli(jax.random.key(seed), 0.3, shape).astype(jnp.uint8)


LAYOUTS = [(2, (3, 2), False), (3, (2, 2, 1), False), (2, (4,), True), (3, (3, 1), True)]


@pytest.mark.parametrize('kernel_size,block_layers,phase', LAYOUTS)
def test_step_probabilities_equal_full_forward(kernel_size, block_layers, phase):
  model = tiny_model(kernel_size, block_layers, phase)
  keys_BT = random_keys((2, 30))
  first_key, seed_len = 3, 11

  @jax.jit
  def all_paths(keys_BT):
    full_BT = model(keys_BT, first_key)
    generic_BT = fast_conv.forward(model.layers(), model.features(keys_BT, first_key))[..., 0]
    state, primed_BT = model.prime(keys_BT[:, :seed_len], first_key)

    def body(state, xs):
      x_B, i = xs
      return model.step(state, x_B, (first_key + i) % NUM_KEYS)

    _, stepped_NB = jax.lax.scan(body, state, (keys_BT[:, seed_len:].T,
                                               jnp.arange(seed_len, keys_BT.shape[1])))
    return [jax.nn.sigmoid(x) for x in (full_BT, generic_BT, primed_BT, stepped_NB.T)]

  want_BT, generic_BT, primed_BT, stepped_BT = all_paths(keys_BT)
  np.testing.assert_allclose(generic_BT, want_BT, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(primed_BT, want_BT[:, :seed_len], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stepped_BT, want_BT[:, seed_len:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('phase', [False, True])
def test_model_is_causal(phase):
  model = tiny_model(3, (3, 2), phase)
  call = jax.jit(lambda keys_BT: model(keys_BT))
  keys_BT = random_keys((1, 60))
  base = call(keys_BT)
  for t in (20, 45):
    changed = call(keys_BT.at[:, t].set(1 - keys_BT[:, t]))
    np.testing.assert_array_equal(changed[:, :t], base[:, :t])
    assert not np.allclose(changed[:, t], base[:, t])


def test_num_outputs_crops_without_changing_values():
  model = tiny_model(2, (3, 3))
  keys_BT = random_keys((2, 40))
  full = jax.jit(lambda k: model(k, 1))(keys_BT)
  for n in (6, 40):
    cropped = jax.jit(lambda k, n=n: model(k, 1, num_outputs=n))(keys_BT)
    np.testing.assert_allclose(cropped, full[:, -n:], atol=1e-6)


def test_output_bias_starts_at_the_configured_rate():
  model = tiny_model()
  assert float(model.output.bias[0]) == -1.0


def test_sizes_of_the_paper_config():
  c = configs.get_config('paper')
  assert model_lib.receptive_field(c.model) == 16_381
  assert model_lib.num_params(c.model) == 316_139
  assert c.model.widths[0] == 4 and c.model.widths[-1] == 98
  # Abstract build (shapes only): 48 eager initialisations would cost seconds.
  model = nnx.eval_shape(lambda: model_lib.build_model(c, nnx.Rngs(0)))
  assert model_lib.count_params(model) == 316_139
  assert model.receptive_field == 16_381
  # No measured rate yet: the original's -3.2 (a run measures its data's rate: test_train.py).
  assert c.model.output_bias_init is None and model_lib.initial_output_bias(c) == -3.2


@pytest.mark.parametrize('variant', ['tiny', 'small'])
def test_param_count_function_matches_built_model(variant):
  c = configs.get_config(variant)
  c.model.key_phase_input = True
  model = nnx.eval_shape(lambda: model_lib.build_model(c, nnx.Rngs(0)))
  assert model_lib.count_params(model) == model_lib.num_params(c.model, c.num_keys)
  assert model.receptive_field == model_lib.receptive_field(c.model)


def test_small_config_receptive_field_is_a_few_thousand():
  assert 2000 <= model_lib.receptive_field(configs.get_config('small').model) <= 5000


def test_bad_widths_are_a_user_error():
  c = configs.get_config('tiny')
  c.model.widths = c.model.widths[:-1]
  with pytest.raises(model_lib.UserError, match='widths'):
    model_lib.build_model(c, nnx.Rngs(0))
