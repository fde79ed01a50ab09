"""Tests for coconet/model.py: variants, shapes, masking and batch-norm re-estimation."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common.errors import UserError

from coconet import configs
from coconet import data
from coconet import model as model_lib


def _inputs(batch=2, steps=8, seed=0):
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, data.NUM_PITCHES, size=(batch, steps, 4))
  roll = data.indices_to_roll(idx)
  mask = (rng.random((batch, steps, 4)) < 0.5).astype(np.float32)
  return jnp.asarray(roll), jnp.asarray(mask)


# Few distinct shapes (8 filters everywhere): each new shape costs XLA compile time on a CPU.
@pytest.mark.parametrize('architecture,separable', [('straight', False), ('dilated', False),
                                                    ('dilated', True)])
def test_variants_run_with_the_right_shapes(architecture, separable):
  cfg = ml_collections.ConfigDict(dict(architecture=architecture, num_layers=8, num_filters=8,
                                       separable=separable, dilation=model_lib.DOODLE_DILATION))
  model = model_lib.build_model(cfg, nnx.Rngs(0))
  roll, mask = _inputs()
  logits = model(roll, mask)
  assert logits.shape == (2, 8, data.NUM_PITCHES, 4)
  assert np.isfinite(np.asarray(logits)).all()
  log_p = model_lib.predict_log_probs(model, roll, mask)
  np.testing.assert_allclose(np.exp(np.asarray(log_p)).sum(axis=2), 1.0, rtol=1e-5)


def test_layer_plan():
  model = model_lib.Coconet(num_layers=6, num_filters=8, rngs=nnx.Rngs(0))
  kernels = [layer.conv.kernel.shape for layer in model.layers]
  assert kernels == [(3, 3, 8, 8), (3, 3, 8, 8), (3, 3, 8, 8), (3, 3, 8, 8), (2, 2, 8, 8),
                     (2, 2, 8, 4)]
  np.testing.assert_allclose(model.layers[0].norm.scale[...], 0.1)  # gamma init 0.1
  rates = model_lib.layer_dilations(33, model_lib.DOODLE_DILATION)
  assert rates[0] == rates[31] == rates[32] == (1, 1)
  assert rates[1:7] == list(model_lib.DOODLE_DILATION) and rates[25:31] == rates[1:7]
  with pytest.raises(ValueError):
    model_lib.Coconet(num_layers=3, num_filters=8, rngs=nnx.Rngs(0))


# 2x2 kernels pad only at the end; (16, 32) leaves pitches that no pitch tap but the centre reaches.
@pytest.mark.parametrize('kernel,dilation', [((3, 3), (1, 1)), ((3, 3), (8, 8)), ((3, 3), (16, 32)),
                                             ((2, 2), (1, 1))])
def test_depthwise_conv_equals_grouped_conv(kernel, dilation):
  """Values and gradients: the model's depthwise conv (hand-written gradient) against XLA's
  grouped conv, and every tap strategy differentiated by autodiff."""
  he_normal = nnx.initializers.he_normal()
  dw = model_lib.DepthwiseConv(8, kernel, dilation=dilation, kernel_init=he_normal,
                               rngs=nnx.Rngs(0))
  grouped = nnx.Conv(8, 8, kernel, kernel_dilation=dilation, feature_group_count=8,
                     use_bias=False, kernel_init=he_normal, rngs=nnx.Rngs(1))
  grouped.kernel[...] = dw.kernel[...]
  x = jax.random.normal(jax.random.key(0), (2, 9, 46, 8))
  np.testing.assert_allclose(dw(x), grouped(x), rtol=1e-5, atol=1e-5)
  for strategy in model_lib.TAP_STRATEGIES:
    np.testing.assert_allclose(dw.taps_by(strategy, x), grouped(x), rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(jax.random.key(1), x.shape)

  def grads_of(call, module):
    return nnx.grad(lambda m, x: jnp.sum(call(m, x) * cotangent), argnums=(0, 1))(module, x)

  expected_kernel, expected_x = grads_of(lambda m, x: m(x), grouped)
  calls = [lambda m, x: m(x)] + [lambda m, x, s=s: m.taps_by(s, x)
                                 for s in model_lib.TAP_STRATEGIES]
  for call in calls:
    got_kernel, got_x = grads_of(call, dw)
    np.testing.assert_allclose(got_kernel.kernel[...], expected_kernel.kernel[...], rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(got_x, expected_x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel,dilation,channels', [((3, 3), (1, 1), (5, 7)),
                                                      ((3, 3), (2, 4), (6, 6)),
                                                      ((2, 2), (1, 1), (6, 3)),
                                                      ((1, 1), (1, 1), (4, 5))])
def test_conv_equals_nnx_conv_values_and_gradients(kernel, dilation, channels):
  """Conv (1x1 as a matrix product, XLA's SAME padding) computes what nnx.Conv computes."""
  cin, cout = channels
  ours = model_lib.Conv(cin, cout, kernel, dilation=dilation,
                        kernel_init=nnx.initializers.he_normal(), rngs=nnx.Rngs(0))
  reference = nnx.Conv(cin, cout, kernel, padding='SAME', kernel_dilation=dilation,
                       use_bias=False, rngs=nnx.Rngs(1))
  reference.kernel[...] = ours.kernel[...]
  x = jax.random.normal(jax.random.key(0), (2, 9, 13, cin))
  cotangent = jax.random.normal(jax.random.key(1), (2, 9, 13, cout))

  def loss(module, x):
    return jnp.sum(module(x) * cotangent)

  np.testing.assert_allclose(ours(x), reference(x), rtol=1e-5, atol=1e-5)
  (ours_grad, ours_x), (ref_grad, ref_x) = (nnx.grad(loss, argnums=(0, 1))(m, x)
                                            for m in (ours, reference))
  np.testing.assert_allclose(ours_grad.kernel[...], ref_grad.kernel[...], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ours_x, ref_x, rtol=1e-4, atol=1e-4)


def test_hidden_notes_do_not_leak():
  """The output may depend on a hidden variable only through its mask, never its pitch."""
  model = model_lib.Coconet(num_layers=4, num_filters=8, rngs=nnx.Rngs(0))
  model.eval()
  roll, mask = _inputs()
  other, _ = _inputs(seed=1)
  hidden = mask[:, :, None, :] > 0
  swapped = jnp.where(hidden, other, roll)
  np.testing.assert_allclose(model(roll, mask), model(swapped, mask), rtol=1e-6, atol=1e-6)
  visible_change = jnp.where(hidden, roll, other)  # changes visible notes: output must move
  assert not np.allclose(model(roll, mask), model(visible_change, mask))


@pytest.mark.parametrize('chunk', [1, 3, 7, 10])
def test_logits_in_chunks_equal_one_whole_batch_pass(chunk):
  """The CPU fast path (a few pieces per forward pass, the batch padded to whole chunks) gives
  the plain pass's logits; eval-mode batch norm is per piece."""
  model = model_lib.Coconet(num_layers=4, num_filters=8, rngs=nnx.Rngs(0))
  model.eval()
  roll, mask = _inputs(batch=7)
  whole = model(roll, mask)
  chunked = jax.jit(lambda r, m: model_lib.logits_in_chunks(model, r, m, chunk))(roll, mask)
  assert chunked.shape == whole.shape
  np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)


def test_forward_chunk_size_keeps_one_activation_within_the_budget(monkeypatch):
  model = model_lib.Coconet(num_layers=4, num_filters=8, rngs=nnx.Rngs(0))
  per_piece = 32 * data.NUM_PITCHES * 8 * 4  # T x P x filters, f32
  monkeypatch.setattr(model_lib, 'CPU_CHUNK_ACTIVATION_BYTES', 5 * per_piece + 1)
  assert model_lib.forward_chunk_size(model, (64, 32, data.NUM_PITCHES, 4)) == 5
  assert model_lib.forward_chunk_size(model, (3, 32, data.NUM_PITCHES, 4)) == 3
  monkeypatch.setattr(model_lib, 'CPU_CHUNK_ACTIVATION_BYTES', 1)
  assert model_lib.forward_chunk_size(model, (64, 32, data.NUM_PITCHES, 4)) == 1


def test_reestimate_batch_norm_gives_population_statistics():
  model = model_lib.Coconet(num_layers=4, num_filters=8, rngs=nnx.Rngs(0))
  a, b = _inputs(seed=1), _inputs(seed=2)
  model_lib.reestimate_batch_norm_stats(model, [a, b])
  first = model.layers[0].norm
  # The first layer sees the raw input, so its population statistics are those of the union.
  reference = model_lib.Coconet(num_layers=4, num_filters=8, rngs=nnx.Rngs(0))
  reference.layers[0].norm.momentum = 0.0
  reference(jnp.concatenate([a[0], b[0]]), jnp.concatenate([a[1], b[1]]))
  np.testing.assert_allclose(first.mean[...], reference.layers[0].norm.mean[...], rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(first.var[...], reference.layers[0].norm.var[...], rtol=1e-4)
  assert first.use_running_average and first.momentum == pytest.approx(0.99)
  # Eval mode now uses them: outputs no longer depend on the batch.
  single = model(a[0][:1], a[1][:1])
  np.testing.assert_allclose(single, model(a[0], a[1])[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('variant', configs.VARIANTS)
def test_configs_build(variant):
  config = configs.get_config(variant)
  assert config.task == 'coconet'
  assert config.dataset == ('bach_music21' if variant == 'tiny' else 'jsb')
  model = nnx.eval_shape(lambda: model_lib.build_model(config.model, nnx.Rngs(0)))
  assert len(model.layers) == config.model.num_layers
  with pytest.raises(UserError, match='tiny, small, doodle, paper'):
    configs.get_config('huge')


def test_materialized_is_the_identity_with_an_identity_gradient():
  """The fusion boundary between layers changes no value and no gradient, NaN included (its
  loop then runs zero times)."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 5, 4)), jnp.float32)
  np.testing.assert_array_equal(jax.jit(model_lib._materialized)(x), x)
  nan_first = x.at[0, 0, 0, 0].set(jnp.nan)
  np.testing.assert_array_equal(jax.jit(model_lib._materialized)(nan_first), nan_first)
  weights = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)
  grad = jax.grad(lambda x: jnp.sum(model_lib._materialized(x) * weights))(x)
  np.testing.assert_array_equal(grad, weights)
