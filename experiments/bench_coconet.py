"""Coconet benchmarks: train step and 32-step harmonization for two configs, batched throughput.

The original TensorFlow code runs the same train steps and one-piece harmonizations in the same
run (originals/bench.py through experiments/bench_originals.py, rows original/coconet/...), and
the table gives each ratio.
"""

from __future__ import annotations

import functools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from coconet import configs
from coconet import data
from coconet import model as model_lib
from coconet import sample as sample_lib
from coconet import train as coconet_train
from experiments import benchmarks as bench

HARMONIZE_STEPS = 32  # 16ths; Gibbs runs T*I = 128 steps after one independent pass: 129 passes


def paper_config():
  return configs.get_config('paper')


def small_dilated_config():
  """The issue's small config: dilated, 9 layers x 64 filters, separable, batch 10, crop 32."""
  config = configs.get_config('paper')
  config.batch_size, config.crop_len = 10, 32
  config.model.architecture, config.model.separable = 'dilated', True
  config.model.num_layers, config.model.num_filters = 9, 64
  return config


def _random_batch(config, rng: np.random.Generator) -> dict[str, np.ndarray]:
  idx = rng.integers(0, data.NUM_PITCHES, size=(config.batch_size, config.crop_len,
                                                 data.NUM_INSTRUMENTS)).astype(np.int32)
  return {'pitch_index': idx}


def train_step_result(name: str, config, *, repeats: int, warmup: int) -> dict:
  seconds, flops = bench.time_train_step(
      coconet_train.get_task(config), config, _random_batch(config, np.random.default_rng(0)),
      repeats=repeats, warmup=warmup)
  return bench.result(name, seconds, flops=flops,
                      throughput=f'{config.batch_size / seconds:.1f} crops/s',
                      note=f'batch {config.batch_size}, crop {config.crop_len}'
                           + ('; mixed precision' if config.get('mixed_precision') else ''))


def _eval_model(config):
  model = model_lib.build_model(config.model, nnx.Rngs(0))
  model.eval()
  return model


def _forward_flops(model, batch_size: int) -> float | None:
  roll = jnp.zeros((batch_size, HARMONIZE_STEPS, data.NUM_PITCHES, data.NUM_INSTRUMENTS))
  mask = jnp.ones((batch_size, HARMONIZE_STEPS, data.NUM_INSTRUMENTS))
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, r, m: nnx.merge(graphdef, s)(r, m))
  return bench.compiled_flops(forward, state, roll, mask)


def harmonize_result(name: str, config, batch_size: int, *, repeats: int, warmup: int) -> dict:
  model = _eval_model(config)
  soprano = np.repeat(np.array([67, 69, 71, 72, 74, 72, 71, 69], np.float32), 4)
  assert soprano.shape == (HARMONIZE_STEPS,)
  passes = 1 + HARMONIZE_STEPS * data.NUM_INSTRUMENTS
  key = jax.random.key(0)

  def call():
    bench.block(sample_lib.harmonize(model, key, soprano, num_samples=batch_size))

  seconds = bench.median_seconds(call, repeats=repeats, warmup=warmup)
  per_pass = _forward_flops(model, batch_size)
  return bench.result(name, seconds, flops=per_pass * passes if per_pass else None,
                      throughput=f'{batch_size / seconds:.2f} harmonizations/s',
                      note=f'batch {batch_size}, {passes} forward passes')


# The paper rows take seconds a call: at most this many timed and untimed calls (the original's
# rows in bench_originals take the same caps).
PAPER_MAX_REPEATS, PAPER_MAX_WARMUP = 5, 1


def paper(repeats: int, warmup: int) -> list[dict]:
  repeats, warmup = min(repeats, PAPER_MAX_REPEATS), min(warmup, PAPER_MAX_WARMUP)
  config = paper_config()
  return [
      train_step_result('coconet/paper/train_step', config, repeats=repeats, warmup=warmup),
      train_step_products('coconet/paper/train_step_products', config, repeats=repeats,
                          warmup=warmup),
      harmonize_result('coconet/paper/harmonize32', config, 1, repeats=repeats, warmup=warmup),
  ]


def small_dilated(repeats: int, warmup: int) -> list[dict]:
  config = small_dilated_config()
  one = harmonize_result('coconet/small_dilated/harmonize32', config, 1, repeats=repeats,
                         warmup=warmup)
  many = harmonize_result('coconet/small_dilated/harmonize32_batch64', config, 64,
                          repeats=repeats, warmup=warmup)
  ratio = (64 / many['seconds']) / (1 / one['seconds'])
  many['note'] += f'; {ratio:.1f}x the single-piece rate'
  mixed = small_dilated_config()
  mixed.mixed_precision = True
  return [
      train_step_result('coconet/small_dilated/train_step', config, repeats=repeats,
                        warmup=warmup),
      train_step_result('coconet/small_dilated/train_step_mixed', mixed, repeats=repeats,
                        warmup=warmup),
      train_step_products('coconet/small_dilated/train_step_products', config, repeats=repeats,
                          warmup=warmup),
      train_step_products('coconet/small_dilated/train_step_products_mixed', config,
                          repeats=repeats, warmup=warmup, compute_dtype='bfloat16'),
      one, many,
  ]


def _layer_products(model) -> list[tuple[jax.Array, tuple[int, int]]]:
  """(kernel (kh, kw, in, out), dilation) of each layer's dense product; a separable layer's is
  its pointwise 1x1 kernel."""
  shapes = []
  for layer in model.layers:
    dilation = (1, 1) if layer.depthwise is not None else layer.conv.dilation
    shapes.append((layer.conv.kernel[...], dilation))
  return shapes


def train_step_products(name: str, config, *, repeats: int, warmup: int,
                        compute_dtype: str | None = None) -> dict:
  """The train step's convolutions and matrix products alone, as XLA runs them: the model's
  layers as a chain of their products only (no depthwise taps, batch norms, ReLUs, residuals,
  loss or Adam), differentiated with respect to every kernel. That is each layer's forward
  product and kernel gradient, and from the second layer on its input gradient, at the step's
  shapes and in the step's order (each product waits for the one before, as in the step).
  compute_dtype 'bfloat16': the products of config.mixed_precision (bf16 operands, f32
  accumulation)."""
  model = _eval_model(config)
  kernels = _layer_products(model)
  weights = [kernel for kernel, _ in kernels]
  x_key, g_key = jax.random.split(jax.random.key(1))
  x = jax.random.normal(x_key, (config.batch_size, config.crop_len, data.NUM_PITCHES,
                                weights[0].shape[2]))
  cotangent = jax.random.normal(g_key, (*x.shape[:3], weights[-1].shape[3]))

  def chain(weights):
    y = x
    for weight, (_, dilation) in zip(weights, kernels):
      # Without batch norm the values grow ~1.4x a layer: ~2**32 after the paper's 64, in range.
      y = model_lib.conv_forward(y, weight, dilation, compute_dtype)
    return y

  def products(weights):
    out, vjp = jax.vjp(chain, weights)
    return out, vjp(cotangent)

  jitted = jax.jit(products)
  seconds = bench.median_seconds(lambda: bench.block(jitted(weights)), repeats=repeats,
                                 warmup=warmup)
  return bench.result(name, seconds, flops=bench.compiled_flops(jitted, weights),
                      note=f'batch {config.batch_size}, crop {config.crop_len}: the train step\'s '
                           'convolutions and matrix products alone (forward, kernel and input '
                           'gradients), in the step\'s order, nothing else of the step'
                           + ('; bf16 operands, f32 accumulation' if compute_dtype else ''))


# The ways of summing a depthwise conv's taps (coconet.model.TAP_STRATEGIES), at batch 64 of the
# small-dilated config's activations (64 x 32 x 46 x 64): block by block of the plane where the
# same taps are inside the input ('regions', the model's), from a zero-padded copy ('padded'), or
# as one scatter-add per tap into its window ('windowed').
_TAPS_DILATIONS = ((2, 2), (4, 4), (8, 8), (16, 16), (16, 32))


def depthwise_taps(repeats: int, warmup: int, batch_size: int = 64) -> list[dict]:
  x = jax.random.normal(jax.random.key(0), (batch_size, HARMONIZE_STEPS, data.NUM_PITCHES, 64))
  results = []
  for dilation in _TAPS_DILATIONS:
    conv = model_lib.DepthwiseConv(64, (3, 3), dilation=dilation,
                                   kernel_init=nnx.initializers.he_normal(), rngs=nnx.Rngs(0))
    for strategy in model_lib.TAP_STRATEGIES:
      taps = jax.jit(functools.partial(conv.taps_by, strategy))
      seconds = bench.median_seconds(lambda: bench.block(taps(x)), repeats=repeats, warmup=warmup)
      chosen = strategy == 'regions'
      results.append(bench.result(
          f'coconet/depthwise_taps/{strategy}_{dilation[0]}x{dilation[1]}', seconds,
          model_uses_it=chosen,
          note=f'batch {batch_size} x 32 x 46 x 64, dilation {dilation}'
               + ('; the model uses this one' if chosen else '')))
  return results


# Pieces per forward pass for the 'forward_chunks' rows; 64 is the whole batch in one pass.
_FORWARD_CHUNKS = (1, 4, 8, 16, 64)


def forward_chunks(repeats: int, warmup: int, batch_size: int = 64) -> list[dict]:
  """One eval-mode forward pass of the small dilated config over `batch_size` pieces of 32 steps,
  run `chunk` pieces at a time (model.logits_in_chunks), against the whole batch at once."""
  model = _eval_model(small_dilated_config())
  rng = np.random.default_rng(0)
  roll = jnp.asarray(data.indices_to_roll(rng.integers(
      0, data.NUM_PITCHES, size=(batch_size, HARMONIZE_STEPS, data.NUM_INSTRUMENTS))))
  mask = jnp.asarray(rng.random((batch_size, HARMONIZE_STEPS, data.NUM_INSTRUMENTS)) < 0.5,
                     jnp.float32)
  per_pass = _forward_flops(model, batch_size)
  default = model_lib.forward_chunk_size(model, roll.shape)
  results = []
  for chunk in sorted({min(chunk, batch_size) for chunk in _FORWARD_CHUNKS}):
    forward = jax.jit(lambda r, m, chunk=chunk: model_lib.logits_in_chunks(model, r, m, chunk))
    seconds = bench.median_seconds(lambda: bench.block(forward(roll, mask)), repeats=repeats,
                                   warmup=warmup)
    results.append(bench.result(
        f'coconet/forward_chunks/chunk_{chunk:02d}', seconds, flops=per_pass, chunk=chunk,
        model_uses_it=chunk == default,
        note=f'small dilated config, batch {batch_size} x 32 steps, {chunk} pieces per pass'
             + ('; sampling uses this one here' if chunk == default else '')))
  return results


def pitch_draw(repeats: int, warmup: int, batch_size: int = 64) -> list[dict]:
  """One Gibbs step's draw of every variable's pitch at `batch_size` x 32 steps: sampling's
  inverse CDF (sample.sample_pitches) against jax.random.categorical's Gumbel variable per pitch."""
  logits = jax.random.normal(jax.random.key(0), (batch_size, HARMONIZE_STEPS, data.NUM_PITCHES,
                                                 data.NUM_INSTRUMENTS))
  draws = {
      'inverse_cdf': jax.jit(lambda key, x: sample_lib.sample_pitches(key, x, 0.99)),
      'gumbel': jax.jit(lambda key, x: jax.random.categorical(key, x / 0.99, axis=2)),
  }
  results = []
  for name, draw in draws.items():
    seconds = bench.median_seconds(lambda: bench.block(draw(jax.random.key(1), logits)),
                                   repeats=repeats, warmup=warmup)
    results.append(bench.result(
        f'coconet/pitch_draw/{name}', seconds,
        note=f'{batch_size} x 32 steps x 4 voices over 46 pitches'
             + ('; sampling uses this one' if name == 'inverse_cdf' else '')))
  return results


# The benchmarks of this module by name (experiments/benchmark.py lists every module's).
BENCHMARKS = {
    'coconet/paper': paper,
    'coconet/small_dilated': small_dilated,
    'coconet/depthwise_taps': depthwise_taps,
    'coconet/forward_chunks': forward_chunks,
    'coconet/pitch_draw': pitch_draw,
}
