"""Coconet's convolutional network (Huang et al. 2017) and the Bach Doodle variant (2019).

The input is 8 channels over a (time, pitch) image: the 4 voice piano rolls with the hidden
variables zeroed, roll * (1 - mask), and the 4 masks broadcast over pitch (mask 1 = to predict;
mask_indicates_context=True feeds 1 - mask instead, as Magenta's option of that name). The output
is one logit per (time, pitch, voice); a softmax over pitch gives each voice's distribution at
each step.

Layout is channels-last, x_BTPC, which XLA's CPU convolutions run fastest.

Layers (num_layers = L in total), as Magenta's lib_hparams.Straight / Dilated build them:
  0       3x3 conv 8 -> F
  1..L-3  3x3 conv F -> F  (dilated: cycling through one block's (time, pitch) rates)
  L-2     2x2 conv F -> F
  L-1     2x2 conv F -> 4  (the logits; no ReLU)
With `separable`, every layer from `num_initial_regular_conv_layers` on (the two 2x2 layers
included) is depthwise-separable: a depthwise conv, a pointwise 1x1 conv and a bias. Every layer
ends in batch norm (scale initialised to 0.1, epsilon 1e-7, as the original); a regular conv has
no bias (batch norm's offset plays it). The residual (residual='post_relu', Magenta's
lib_graph.py): layer i, for even i >= 2 other than the last, adds the post-ReLU output of layer
i - 2 after its batch norm and before its ReLU, when the channel counts match. ReLU follows every
layer but the last. Convs are He-normal initialised and SAME padded (even kernels: 0 before, 1
after, as TensorFlow pads them).

Settings that reproduce what this module computed before it matched Magenta (checkpoints trained
then keep them through common.configs._LEGACY_DEFAULTS): residual='pre_relu_sum' (a running sum
of pre-activations every 2 layers), batch_norm_epsilon=1e-5, num_initial_regular_conv_layers=1,
separable_bias=False, separable_final_layers=False.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from common.errors import UserError
from coconet import data

DOODLE_DILATION = ((1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (16, 32))
RESIDUALS = ('post_relu', 'pre_relu_sum', 'none')


def magenta_dilation_block(crop_len: int, num_pitches: int = data.NUM_PITCHES, *,
                           dilate_time_only: bool = False,
                           repeat_last_dilation_level: bool = False) -> tuple[tuple[int, int], ...]:
  """One dilation block's (time, pitch) rates, as Magenta's lib_hparams.Dilated derives them
  from the training crop length: levels 0..max(ceil(log2 T) - 1, ceil(log2 P) - 1) (one more with
  repeat_last_dilation_level), each axis capped at its own maximum level. T = 32 gives
  DOODLE_DILATION."""
  def max_level(length: int) -> int:
    return int(math.ceil(math.log2(length))) - 1

  time_max, pitch_max = max_level(crop_len), max_level(num_pitches)
  top = max(time_max, pitch_max) + (1 if repeat_last_dilation_level else 0)
  rates = []
  for level in range(top + 1):
    time_rate = 2**min(level, time_max)
    rates.append((time_rate, 1) if dilate_time_only else (time_rate, 2**min(level, pitch_max)))
  return tuple(rates)


def _same_pads(kernel_hw: tuple[int, int], dilation: tuple[int, int]) -> list[tuple[int, int]]:
  """SAME padding of a dilated kernel, as XLA pads it: (k - 1) * d in total, extra at the end."""
  pads = []
  for k, d in zip(kernel_hw, dilation):
    total = (k - 1) * d
    pads.append((total // 2, total - total // 2))
  return pads


def conv_forward(x_BTPC, kernel_HWIO, dilation, compute_dtype=None):
  """The SAME-padded conv of a Conv layer (kernel (kh, kw, in, out)); with compute_dtype bfloat16
  its products take bf16 operands and accumulate and return float32 (mixed precision: the
  parameters stay float32)."""
  accumulate = None
  if compute_dtype is not None and jnp.dtype(compute_dtype) != x_BTPC.dtype:
    x_BTPC, kernel_HWIO = x_BTPC.astype(compute_dtype), kernel_HWIO.astype(compute_dtype)
    accumulate = jnp.float32
  if kernel_HWIO.shape[:2] == (1, 1):
    # A matrix product over channels: XLA's CPU convolution is slower for 1x1 kernels. On 2-D
    # operands the kernel gradient is one (N, C)^T (N, O) product; the 4-D einsum's gradient makes
    # XLA transpose the activations first.
    kernel_CO = kernel_HWIO[0, 0]
    x_NC = x_BTPC.reshape(-1, kernel_CO.shape[0])
    out_NO = jnp.matmul(x_NC, kernel_CO, preferred_element_type=accumulate)
    return out_NO.reshape(*x_BTPC.shape[:-1], kernel_CO.shape[1])
  return jax.lax.conv_general_dilated(
      x_BTPC, kernel_HWIO, window_strides=(1, 1),
      padding=_same_pads(kernel_HWIO.shape[:2], dilation), rhs_dilation=dilation,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), preferred_element_type=accumulate)


class Conv(nnx.Module):
  """A bias-free SAME conv with nnx.Conv's parameter layout (kernel (kh, kw, in, out)), so
  checkpoints of either load into the other; 1x1 kernels run as a matrix product."""

  def __init__(self, in_features: int, out_features: int, kernel: tuple[int, int], *,
               dilation: tuple[int, int] = (1, 1), kernel_init, compute_dtype: str = 'float32',
               rngs: nnx.Rngs):
    self.kernel = nnx.Param(kernel_init(rngs.params(), (*kernel, in_features, out_features)))
    self.dilation = tuple(dilation)
    self.compute_dtype = compute_dtype

  def __call__(self, x_BTPC: jax.Array) -> jax.Array:
    return conv_forward(x_BTPC, self.kernel[...], self.dilation, self.compute_dtype)


class DepthwiseConv(nnx.Module):
  """A (dilated) depthwise conv, SAME padded, as shifted per-channel products, one per tap.

  Equal to nnx.Conv(..., feature_group_count=C) but 10-40x faster on XLA's CPU backend, whose
  grouped convolutions are slow; the kernel has nnx.Conv's shape (kh, kw, 1, C). The sum runs
  region by region (_region_sum) and its gradient is written by hand (depthwise_taps).
  """

  def __init__(self, features: int, kernel: tuple[int, int], *, dilation: tuple[int, int],
               kernel_init, rngs: nnx.Rngs):
    self.kernel = nnx.Param(kernel_init(rngs.params(), (*kernel, 1, features)))
    self.dilation = tuple(dilation)

  def __call__(self, x_BTPC: jax.Array) -> jax.Array:
    return depthwise_taps(x_BTPC, self.kernel[...], self.dilation)

  def taps_by(self, strategy: str, x_BTPC: jax.Array) -> jax.Array:
    """The same sum by one of TAP_STRATEGIES, differentiated by autodiff (tests, benchmarks)."""
    offsets = tap_offsets(self.kernel.shape[:2], self.dilation)
    return TAP_STRATEGIES[strategy](x_BTPC, self.kernel[...].reshape(len(offsets), -1), offsets)


def tap_offsets(kernel_hw: tuple[int, int], dilation: tuple[int, int]
                ) -> tuple[tuple[int, int], ...]:
  """(time, pitch) source offset of each tap of a SAME-padded dilated kernel, row-major: output
  (t, p) reads input (t + dt, p + dp)."""
  (lo_t, _), (lo_p, _) = _same_pads(kernel_hw, dilation)
  return tuple((a * dilation[0] - lo_t, b * dilation[1] - lo_p)
               for a in range(kernel_hw[0]) for b in range(kernel_hw[1]))


def _region_sum(x_BTPC: jax.Array, weights_KC: jax.Array, offsets) -> jax.Array:
  """out[:, t, p] = sum over taps k of x[:, t + dt_k, p + dp_k] * weights[k], zero outside x.

  The (time, pitch) plane is cut where some tap's source crosses the edge of x, so that within
  each block the same taps are inside x everywhere: a block is a sum of whole slices, the blocks
  are concatenated. No padded copy is written and no element is checked against the edge, which
  the alternatives (_padded_sum, _windowed_sum) do: 1.3-3.7x faster than the better of them on
  Coconet's activations (rows coconet/depthwise_taps/*, docs/performance.md).
  """
  steps, pitches = x_BTPC.shape[1], x_BTPC.shape[2]
  rows = []
  for t0, t1 in _edge_free_ranges(steps, {dt for dt, _ in offsets}):
    blocks = []
    for p0, p1 in _edge_free_ranges(pitches, {dp for _, dp in offsets}):
      block = None
      for (dt, dp), w in zip(offsets, weights_KC):
        if 0 <= t0 + dt and t1 + dt <= steps and 0 <= p0 + dp and p1 + dp <= pitches:
          term = x_BTPC[:, t0 + dt:t1 + dt, p0 + dp:p1 + dp, :] * w
          block = term if block is None else block + term
      if block is None:  # every tap's source is outside x here
        block = jnp.zeros((x_BTPC.shape[0], t1 - t0, p1 - p0, x_BTPC.shape[3]),
                          jnp.result_type(x_BTPC, weights_KC))
      blocks.append(block)
    rows.append(blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=2))
  return rows[0] if len(rows) == 1 else jnp.concatenate(rows, axis=1)


def _edge_free_ranges(length: int, shifts) -> list[tuple[int, int]]:
  """[start, stop) ranges covering 0..length, cut wherever i + shift enters or leaves 0..length
  for one of the shifts."""
  cuts = {0, length}
  for shift in shifts:
    cuts.update(c for c in (-shift, length - shift) if 0 < c < length)
  cuts = sorted(cuts)
  return list(zip(cuts[:-1], cuts[1:]))


def _padded_sum(x_BTPC: jax.Array, weights_KC: jax.Array, offsets) -> jax.Array:
  """_region_sum's result from a zero-padded copy of x (one slice per tap)."""
  steps, pitches = x_BTPC.shape[1], x_BTPC.shape[2]
  (lo_t, hi_t), (lo_p, hi_p) = [
      (max(0, -min(o[axis] for o in offsets)), max(0, max(o[axis] for o in offsets)))
      for axis in (0, 1)]
  x = jnp.pad(x_BTPC, [(0, 0), (lo_t, hi_t), (lo_p, hi_p), (0, 0)])
  out = None
  for (dt, dp), w in zip(offsets, weights_KC):
    term = x[:, lo_t + dt:lo_t + dt + steps, lo_p + dp:lo_p + dp + pitches, :] * w
    out = term if out is None else out + term
  return out


def _windowed_sum(x_BTPC: jax.Array, weights_KC: jax.Array, offsets) -> jax.Array:
  """_region_sum's result as one scatter-add per tap into the window where its source exists."""
  steps, pitches = x_BTPC.shape[1], x_BTPC.shape[2]
  out = jnp.zeros(x_BTPC.shape, jnp.result_type(x_BTPC, weights_KC))
  for (dt, dp), w in zip(offsets, weights_KC):
    window = _source_window(dt, dp, steps, pitches)
    if window is None:
      continue  # this tap only ever reads padding
    (t0, t1), (p0, p1) = window
    out = out.at[:, t0:t1, p0:p1, :].add(x_BTPC[:, t0 + dt:t1 + dt, p0 + dp:p1 + dp, :] * w)
  return out


# How a depthwise conv's taps can be summed: the model uses 'regions'.
TAP_STRATEGIES = {'regions': _region_sum, 'padded': _padded_sum, 'windowed': _windowed_sum}


def _source_window(dt: int, dp: int, steps: int, pitches: int):
  """The output (t0, t1), (p0, p1) whose source (t + dt, p + dp) lies inside x (None if empty)."""
  t0, t1 = max(0, -dt), min(steps, steps - dt)
  p0, p1 = max(0, -dp), min(pitches, pitches - dp)
  return None if t0 >= t1 or p0 >= p1 else ((t0, t1), (p0, p1))


def depthwise_taps(x_BTPC: jax.Array, kernel_HW1C: jax.Array, dilation: tuple[int, int]
                   ) -> jax.Array:
  """The SAME-padded dilated depthwise conv of DepthwiseConv (kernel (kh, kw, 1, C))."""
  offsets = tap_offsets(kernel_HW1C.shape[:2], tuple(dilation))
  weights_KC = kernel_HW1C.reshape(-1, kernel_HW1C.shape[-1])
  return _depthwise(x_BTPC, weights_KC, offsets)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise(x_BTPC, weights_KC, offsets):
  return _region_sum(x_BTPC, weights_KC, offsets)


def _depthwise_fwd(x_BTPC, weights_KC, offsets):
  return _depthwise(x_BTPC, weights_KC, offsets), (x_BTPC, weights_KC)


def _depthwise_bwd(offsets, residuals, g_BTPC):
  """The input gradient is the same sum with the offsets negated; each tap's weight gradient is
  its source window times the cotangent, summed.

  Written out because autodiff's was slower on XLA:CPU (docs/performance.md): its transposed
  slices fuse with the ReLU and batch-norm gradients into large loop fusions, and a reduction of
  a fused product runs on XLA's own loop emitter instead of YNNPACK. Each tap's product is kept
  as its own buffer (_materialized) so that its sum goes to YNNPACK.
  """
  x_BTPC, weights_KC = residuals
  steps, pitches = x_BTPC.shape[1], x_BTPC.shape[2]
  dx = _region_sum(g_BTPC, weights_KC, tuple((-dt, -dp) for dt, dp in offsets))
  grads = []
  for dt, dp in offsets:
    window = _source_window(dt, dp, steps, pitches)
    if window is None:
      grads.append(jnp.zeros(weights_KC.shape[1:], weights_KC.dtype))
      continue
    (t0, t1), (p0, p1) = window
    product = (x_BTPC[:, t0 + dt:t1 + dt, p0 + dp:p1 + dp, :] * g_BTPC[:, t0:t1, p0:p1, :])
    grads.append(jnp.sum(_as_buffer(product), axis=(0, 1, 2)))
  return dx.astype(x_BTPC.dtype), jnp.stack(grads).astype(weights_KC.dtype)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


class ConvBN(nnx.Module):
  """A conv (plain, or depthwise-separable with an optional bias), optionally dilated, then
  batch norm."""

  def __init__(self, in_features: int, out_features: int, kernel: tuple[int, int], *,
               dilation: tuple[int, int] = (1, 1), separable: bool = False,
               separable_bias: bool = True, epsilon: float = 1e-7,
               compute_dtype: str = 'float32', rngs: nnx.Rngs):
    he_normal = nnx.initializers.he_normal()
    # tf.layers.separable_conv2d's bias, which Magenta keeps before batch norm.
    self.bias = (nnx.Param(jnp.zeros((out_features,), jnp.float32))
                 if separable and separable_bias else None)
    if separable:
      # Depthwise (one filter per channel) then pointwise 1x1: ~9x fewer weights and flops.
      self.depthwise = DepthwiseConv(in_features, kernel, dilation=dilation,
                                     kernel_init=he_normal, rngs=rngs)
      self.conv = Conv(in_features, out_features, (1, 1), kernel_init=he_normal,
                       compute_dtype=compute_dtype, rngs=rngs)
    else:
      self.depthwise = None
      self.conv = Conv(in_features, out_features, kernel, dilation=dilation,
                       kernel_init=he_normal, compute_dtype=compute_dtype, rngs=rngs)
    self.norm = nnx.BatchNorm(out_features, scale_init=nnx.initializers.constant(0.1),
                              epsilon=epsilon, rngs=rngs)

  def __call__(self, x_BTPC: jax.Array) -> jax.Array:
    if self.depthwise is not None:
      x_BTPC = self.depthwise(x_BTPC)
    x_BTPC = self.conv(x_BTPC)
    if self.bias is not None:
      x_BTPC = x_BTPC + self.bias[...]
    return self.norm(x_BTPC)


def layer_dilations(num_layers: int, dilation: Sequence[Sequence[int]] | None
                    ) -> list[tuple[int, int]]:
  """Dilation (time, pitch) of each layer: the middle 3x3 layers cycle through `dilation`."""
  rates = [(1, 1)] * num_layers
  if dilation:
    for i in range(1, num_layers - 2):
      rates[i] = tuple(dilation[(i - 1) % len(dilation)])
  return rates


class Coconet(nnx.Module):
  """roll_BTPI, mask_BTI -> logits_BTPI (softmax over P)."""

  def __init__(self, *, num_layers: int, num_filters: int, separable: bool = False,
               dilation: Sequence[Sequence[int]] | None = None,
               num_pitches: int = data.NUM_PITCHES, num_instruments: int = data.NUM_INSTRUMENTS,
               residual: str = 'post_relu', batch_norm_epsilon: float = 1e-7,
               num_initial_regular_conv_layers: int = 2, separable_bias: bool = True,
               separable_final_layers: bool = True, mask_indicates_context: bool = False,
               compute_dtype: str = 'float32', rngs: nnx.Rngs):
    if num_layers < 4:
      raise ValueError(f'num_layers must be >= 4 (3x3 in, 3x3, 2x2, 2x2 out), got {num_layers}')
    if residual not in RESIDUALS:
      raise ValueError(f'residual must be one of {", ".join(RESIDUALS)}, got {residual!r}')
    self.num_pitches, self.num_instruments = num_pitches, num_instruments
    self.residual = residual
    self.mask_indicates_context = mask_indicates_context
    dilations = layer_dilations(num_layers, dilation)
    f = num_filters
    shapes = ([(2 * num_instruments, f, (3, 3))] + [(f, f, (3, 3))] * (num_layers - 3)
              + [(f, f, (2, 2)), (f, num_instruments, (2, 2))])
    layers = []
    for i, (cin, cout, kernel) in enumerate(shapes):
      layer_separable = (separable and i >= num_initial_regular_conv_layers
                         and (separable_final_layers or i < num_layers - 2))
      layers.append(ConvBN(cin, cout, kernel, dilation=dilations[i], separable=layer_separable,
                           separable_bias=separable_bias, epsilon=batch_norm_epsilon,
                           compute_dtype=compute_dtype, rngs=rngs))
    self.layers = nnx.List(layers)

  def __call__(self, roll_BTPI: jax.Array, mask_BTI: jax.Array) -> jax.Array:
    mask_BTPI = jnp.broadcast_to(mask_BTI[:, :, None, :], roll_BTPI.shape).astype(roll_BTPI.dtype)
    channel_mask = 1.0 - mask_BTPI if self.mask_indicates_context else mask_BTPI
    x_BTPC = jnp.concatenate([roll_BTPI * (1.0 - mask_BTPI), channel_mask], axis=-1)
    if self.residual == 'pre_relu_sum':
      return self._pre_relu_sum_forward(x_BTPC)
    num_layers = len(self.layers)
    # Magenta's residual bookkeeping (lib_graph.py residual_save / apply_residual), period 2.
    saved, counter = None, -1
    for i, layer in enumerate(self.layers):
      counter += 1
      if self.residual == 'post_relu' and counter % 2 == 1:
        saved = x_BTPC  # the input of layer i: layer i-1's post-ReLU output
      x_BTPC = layer(x_BTPC)
      if saved is not None:
        if saved.shape[-1] != x_BTPC.shape[-1]:
          saved, counter = None, 0
        elif counter % 2 == 0 and 0 < i < num_layers - 1:
          x_BTPC = x_BTPC + saved
      if i < num_layers - 1:
        x_BTPC = _as_buffer(nnx.relu(x_BTPC))
    return x_BTPC

  def _pre_relu_sum_forward(self, x_BTPC: jax.Array) -> jax.Array:
    """What this module computed before it matched Magenta (checkpoints trained then)."""
    num_layers = len(self.layers)
    residual = None
    for i, layer in enumerate(self.layers):
      x_BTPC = layer(x_BTPC)
      if i == 0:
        residual = x_BTPC
      elif i % 2 == 0 and i < num_layers - 1:
        x_BTPC = x_BTPC + residual
        residual = x_BTPC
      if i < num_layers - 1:
        x_BTPC = _as_buffer(nnx.relu(x_BTPC))
    return x_BTPC


def _as_buffer(x: jax.Array) -> jax.Array:
  """x as its own buffer on the CPU (_materialized), so that its consumers read it instead of
  recomputing it, and a reduction of it runs on YNNPACK. A GPU's while loop would cost a
  device-to-host read each, and its fusion is not the CPU's."""
  return _materialized(x) if jax.default_backend() == 'cpu' else x


@jax.custom_vjp
def _materialized(x: jax.Array) -> jax.Array:
  """x, kept as its own buffer (the identity, gradient included).

  XLA:CPU fuses cheap elementwise producers into every consumer, recomputing them there. The
  kernel gradient's transposed copy of each layer's input then recomputes that input from the
  batch norms, ReLUs and residual sums before it, and through the residuals' chain each copy
  recomputes more layers than the last (the 64-layer train step spent most of its time in those
  copies). A while loop is a boundary XLA does not fuse across; its trip count (0 or 1: the loop
  body changes nothing) depends on x, so the loop is not simplified away. (XLA:CPU removes
  optimization barriers before fusion, so jax.lax.optimization_barrier does not do this.)
  """
  trips = (x.ravel()[0] == x.ravel()[0]).astype(jnp.int32)

  def body(carry):
    i, y = carry
    # Never negates (i >= 0), but XLA cannot tell: so y is not hoisted out as loop-invariant.
    return i + 1, jnp.where(i < 0, -y, y)

  _, out = jax.lax.while_loop(lambda c: c[0] < trips, body, (0, x))
  return out


def _materialized_fwd(x):
  return _materialized(x), None


def _materialized_bwd(_, g):
  return (g,)


_materialized.defvjp(_materialized_fwd, _materialized_bwd)


# The model settings build_model reads, with their defaults: the original's behaviour.
MODEL_DEFAULTS = dict(separable=False, residual='post_relu', batch_norm_epsilon=1e-7,
                      num_initial_regular_conv_layers=2, separable_bias=True,
                      separable_final_layers=True, mask_indicates_context=False)


def build_model(model_config: ml_collections.ConfigDict, rngs: nnx.Rngs, *,
                mixed_precision: bool = False) -> Coconet:
  """Coconet from a config's `model` sub-config (architecture 'straight' | 'dilated');
  mixed_precision: the convolutions' products in bfloat16 (accumulated in float32)."""
  architecture = model_config.get('architecture', 'straight')
  if architecture not in ('straight', 'dilated'):
    raise UserError(f'unknown Coconet architecture {architecture!r}; expected straight or '
                    'dilated')
  residual = model_config.get('residual', MODEL_DEFAULTS['residual'])
  if residual not in RESIDUALS:
    raise UserError(f'--config.model.residual={residual!r}: expected one of '
                    f'{", ".join(RESIDUALS)}')
  dilation = None
  if architecture == 'dilated':
    dilation = model_config.get('dilation') or DOODLE_DILATION
  settings = {name: model_config.get(name, default) for name, default in MODEL_DEFAULTS.items()}
  return Coconet(num_layers=model_config.num_layers, num_filters=model_config.num_filters,
                 dilation=dilation, compute_dtype='bfloat16' if mixed_precision else 'float32',
                 rngs=rngs, **settings)


# On CPU a forward pass over many pieces runs a few pieces at a time (lax.map over chunks of the
# batch), so that each layer's activations stay in cache: at batch 64 the small dilated separable
# net's activations are 24 MB a layer, and one pass took 62.6 ms at once against 38.3 ms in
# chunks of 8 pieces, 3 MB an activation (`python -m experiments.benchmark
# --only=coconet/forward_chunks`, 2-core family-26 EPYC). Batch norm in eval mode is per piece,
# so chunks give the same logits. Training (batch statistics) never chunks.
CPU_CHUNK_ACTIVATION_BYTES = 3 * 1024 * 1024


def forward_chunk_size(model: Coconet, roll_shape_BTPI: tuple[int, ...]) -> int:
  """Pieces per forward chunk: the whole batch off CPU, else as many as keep one activation
  (T x P x filters, f32) within CPU_CHUNK_ACTIVATION_BYTES (at least 1)."""
  batch, steps, pitches = roll_shape_BTPI[:3]
  if jax.default_backend() != 'cpu':
    return batch
  filters = max(layer.norm.num_features for layer in model.layers)
  per_piece = steps * pitches * filters * 4
  return int(min(batch, max(1, CPU_CHUNK_ACTIVATION_BYTES // per_piece)))


def logits_in_chunks(model: Coconet, roll_BTPI: jax.Array, mask_BTI: jax.Array,
                     chunk: int | None = None) -> jax.Array:
  """model(roll, mask) (eval mode), computed `chunk` pieces at a time (forward_chunk_size by
  default); the batch is padded to a multiple of the chunk and the padding dropped."""
  batch = roll_BTPI.shape[0]
  chunk = forward_chunk_size(model, roll_BTPI.shape) if chunk is None else chunk
  if chunk >= batch:
    return model(roll_BTPI, mask_BTI)
  num_chunks = -(-batch // chunk)
  pad = num_chunks * chunk - batch

  def split(x):
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape(num_chunks, chunk, *x.shape[1:])

  out = jax.lax.map(lambda rm: model(*rm), (split(roll_BTPI), split(mask_BTI)))
  return out.reshape(num_chunks * chunk, *out.shape[2:])[:batch]


def predict_log_probs(model: nnx.Module, roll_BTPI: jax.Array, mask_BTI: jax.Array) -> jax.Array:
  """log softmax over pitch of the model's logits: log_probs_BTPI."""
  return jax.nn.log_softmax(model(roll_BTPI, mask_BTI), axis=2)


def reestimate_batch_norm_stats(model: nnx.Module,
                                inputs: Iterable[tuple[jax.Array, jax.Array]]) -> nnx.Module:
  """Sets every BatchNorm's running mean/var to population statistics over `inputs`.

  The paper re-estimates batch-norm statistics on training data before evaluating, instead of
  trusting the exponential moving averages. Each (roll_BTPI, mask_BTI) batch is run in train mode;
  the population mean is the mean of batch means, the population variance
  E_b[var_b + mean_b^2] - mean^2 (exact for equal batch sizes). The model is updated in place
  and returned in eval mode. Nothing is changed if `inputs` is empty.
  """
  train_view = nnx.view(model, use_running_average=False)
  norms = [m for _, m in nnx.iter_graph(train_view) if isinstance(m, nnx.BatchNorm)]
  saved_momentum = [m.momentum for m in norms]
  for m in norms:
    m.momentum = 0.0  # running stats := this batch's stats, which we then average ourselves

  @nnx.jit
  def batch_stats(module, roll, mask):
    module(roll, mask)
    return [(m.mean[...], m.var[...]) for m in norms_of(module)]

  sums, count = None, 0
  try:
    for roll_BTPI, mask_BTI in inputs:
      stats = batch_stats(train_view, jnp.asarray(roll_BTPI), jnp.asarray(mask_BTI))
      moments = [(mean, var + mean**2) for mean, var in stats]
      sums = moments if sums is None else jax.tree.map(jnp.add, sums, moments)
      count += 1
  finally:
    for m, momentum in zip(norms, saved_momentum):
      m.momentum = momentum
  if count:
    for m, (mean_sum, sq_sum) in zip(norms, sums):
      mean = mean_sum / count
      m.mean[...] = mean
      m.var[...] = jnp.maximum(sq_sum / count - mean**2, 0.0)
  model.eval()
  return model


def norms_of(module: nnx.Module) -> list[nnx.BatchNorm]:
  """All BatchNorm submodules, in graph order."""
  return [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.BatchNorm)]
