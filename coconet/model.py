"""Coconet's convolutional network (Huang et al. 2017) and the Bach Doodle variant (2019).

The input is 8 channels over a (time, pitch) image: the 4 voice piano rolls with the hidden
variables zeroed, roll * (1 - mask), and the 4 masks broadcast over pitch. The output is one logit
per (time, pitch, voice); a softmax over pitch gives each voice's distribution at each step.

Layout is channels-last, x_BTPC, which XLA's CPU convolutions run fastest.

Layers (num_layers = L in total):
  0       3x3 conv 8 -> F
  1..L-3  3x3 conv F -> F  (optionally dilated, optionally depthwise-separable)
  L-2     2x2 conv F -> F
  L-1     2x2 conv F -> 4  (the logits; no ReLU)
Every conv is followed by batch norm (scale initialised to 0.1, as in the original), a residual
connection adds the pre-activation of two layers earlier (layers 2, 4, ... up to L-2), and ReLU
follows every layer but the last. Convs are He-normal initialised, SAME padded, bias-free (batch
norm's offset plays the bias).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from coconet import data

DOODLE_DILATION = ((1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (16, 32))


def _same_pads(kernel_hw: tuple[int, int], dilation: tuple[int, int]) -> list[tuple[int, int]]:
  """SAME padding of a dilated kernel, as XLA pads it: (k - 1) * d in total, extra at the end."""
  pads = []
  for k, d in zip(kernel_hw, dilation):
    total = (k - 1) * d
    pads.append((total // 2, total - total // 2))
  return pads


def _conv_forward(x_BTPC, kernel_HWIO, dilation):
  if kernel_HWIO.shape[:2] == (1, 1):
    # A matrix product over channels; XLA's CPU convolution took ~2x as long for 1x1 kernels. On
    # 2-D operands the kernel gradient is one (N, C)^T (N, O) product; the 4-D einsum's gradient
    # made XLA transpose the activations first (small-dilated train step 99 -> 92 ms).
    kernel_CO = kernel_HWIO[0, 0]
    x_NC = x_BTPC.reshape(-1, kernel_CO.shape[0])
    return (x_NC @ kernel_CO).reshape(*x_BTPC.shape[:-1], kernel_CO.shape[1])
  return jax.lax.conv_general_dilated(
      x_BTPC, kernel_HWIO, window_strides=(1, 1),
      padding=_same_pads(kernel_HWIO.shape[:2], dilation), rhs_dilation=dilation,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class Conv(nnx.Module):
  """A bias-free SAME conv with nnx.Conv's parameter layout (kernel (kh, kw, in, out)), so
  checkpoints of either load into the other; 1x1 kernels run as a matrix product."""

  def __init__(self, in_features: int, out_features: int, kernel: tuple[int, int], *,
               dilation: tuple[int, int] = (1, 1), kernel_init, rngs: nnx.Rngs):
    self.kernel = nnx.Param(kernel_init(rngs.params(), (*kernel, in_features, out_features)))
    self.dilation = tuple(dilation)

  def __call__(self, x_BTPC: jax.Array) -> jax.Array:
    return _conv_forward(x_BTPC, self.kernel[...], self.dilation)


# Above this ratio of padded to unpadded (time x pitch) area, DepthwiseConv adds each tap into
# the overlapping window instead of padding: with the Doodle's dilation (16, 32) on 32 x 46 (4.8x)
# most of a padded array is zeros, and writing it costs more than the per-tap adds. Below it one
# padded pass wins: the 9 scatter-adds each read and write the whole output. (16, 16) (3.4x) is
# close either way and stays windowed. The limit was 1.3 before, which sent (4, 4) and (8, 8) to
# the windows. `python -m experiments.benchmark --only=coconet/depthwise_taps` (batch 64, 2-core
# AMD EPYC with AVX2), padded against windowed: dilation (4, 4) (1.47x) 7.5 against 23.7 ms,
# (8, 8) (2.02x) 9.0 against 19.6 ms, (16, 16) 14.6 against 16.2 ms, (16, 32) 17.9 against 11.1.
_PAD_AREA_RATIO_LIMIT = 2.5


def padded_area_ratio(kernel_hw: tuple[int, int], dilation: tuple[int, int], steps: int,
                      pitches: int) -> float:
  """(time x pitch) area of the SAME-padded input over the unpadded one."""
  (lo_t, hi_t), (lo_p, hi_p) = _same_pads(kernel_hw, dilation)
  return (steps + lo_t + hi_t) * (pitches + lo_p + hi_p) / (steps * pitches)


class DepthwiseConv(nnx.Module):
  """A (dilated) depthwise conv, SAME padded, as shifted per-channel products, one per tap.

  Equal to nnx.Conv(..., feature_group_count=C) but 10-40x faster on XLA's CPU backend, whose
  grouped convolutions are slow; the kernel has nnx.Conv's shape (kh, kw, 1, C).
  """

  def __init__(self, features: int, kernel: tuple[int, int], *, dilation: tuple[int, int],
               kernel_init, rngs: nnx.Rngs):
    self.kernel = nnx.Param(kernel_init(rngs.params(), (*kernel, 1, features)))
    self.dilation = tuple(dilation)

  def __call__(self, x_BTPC: jax.Array) -> jax.Array:
    ratio = padded_area_ratio(self.kernel.shape[:2], self.dilation, x_BTPC.shape[1],
                              x_BTPC.shape[2])
    if ratio <= _PAD_AREA_RATIO_LIMIT:
      return self._padded_taps(x_BTPC)
    return self._windowed_taps(x_BTPC)

  def _padded_taps(self, x_BTPC: jax.Array) -> jax.Array:
    kt, kp = self.kernel.shape[:2]
    dt, dp = self.dilation
    steps, pitches = x_BTPC.shape[1], x_BTPC.shape[2]
    x = jnp.pad(x_BTPC, [(0, 0), *_same_pads((kt, kp), self.dilation), (0, 0)])
    kernel = self.kernel[...]
    out = None
    for a in range(kt):
      for b in range(kp):
        term = x[:, a * dt:a * dt + steps, b * dp:b * dp + pitches, :] * kernel[a, b, 0]
        out = term if out is None else out + term
    return out

  def _windowed_taps(self, x_BTPC: jax.Array) -> jax.Array:
    """out[t, p] += x[t + st, p + sp] * k over the (t, p) where the source is inside x."""
    kt, kp = self.kernel.shape[:2]
    dt, dp = self.dilation
    steps, pitches = x_BTPC.shape[1], x_BTPC.shape[2]
    (lo_t, _), (lo_p, _) = _same_pads((kt, kp), self.dilation)
    kernel = self.kernel[...]
    out = jnp.zeros(x_BTPC.shape, jnp.result_type(x_BTPC, kernel))
    for a in range(kt):
      for b in range(kp):
        st, sp = a * dt - lo_t, b * dp - lo_p  # source offset of this tap
        t0, t1 = max(0, -st), min(steps, steps - st)
        p0, p1 = max(0, -sp), min(pitches, pitches - sp)
        if t0 >= t1 or p0 >= p1:
          continue  # this tap only ever sees padding
        window = x_BTPC[:, t0 + st:t1 + st, p0 + sp:p1 + sp, :] * kernel[a, b, 0]
        out = out.at[:, t0:t1, p0:p1, :].add(window)
    return out


class ConvBN(nnx.Module):
  """A conv (plain or depthwise-separable, optionally dilated) followed by batch norm."""

  def __init__(self, in_features: int, out_features: int, kernel: tuple[int, int], *,
               dilation: tuple[int, int] = (1, 1), separable: bool = False, rngs: nnx.Rngs):
    he_normal = nnx.initializers.he_normal()
    if separable:
      # Depthwise (one filter per channel) then pointwise 1x1: ~9x fewer weights and flops.
      self.depthwise = DepthwiseConv(in_features, kernel, dilation=dilation,
                                     kernel_init=he_normal, rngs=rngs)
      self.conv = Conv(in_features, out_features, (1, 1), kernel_init=he_normal, rngs=rngs)
    else:
      self.depthwise = None
      self.conv = Conv(in_features, out_features, kernel, dilation=dilation,
                       kernel_init=he_normal, rngs=rngs)
    self.norm = nnx.BatchNorm(out_features, scale_init=nnx.initializers.constant(0.1),
                              rngs=rngs)

  def __call__(self, x_BTPC: jax.Array) -> jax.Array:
    if self.depthwise is not None:
      x_BTPC = self.depthwise(x_BTPC)
    return self.norm(self.conv(x_BTPC))


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
               rngs: nnx.Rngs):
    if num_layers < 4:
      raise ValueError(f'num_layers must be >= 4 (3x3 in, 3x3, 2x2, 2x2 out), got {num_layers}')
    self.num_pitches, self.num_instruments = num_pitches, num_instruments
    dilations = layer_dilations(num_layers, dilation)
    f = num_filters
    layers = [ConvBN(2 * num_instruments, f, (3, 3), rngs=rngs)]
    for i in range(1, num_layers - 2):
      layers.append(ConvBN(f, f, (3, 3), dilation=dilations[i], separable=separable, rngs=rngs))
    layers.append(ConvBN(f, f, (2, 2), rngs=rngs))
    layers.append(ConvBN(f, num_instruments, (2, 2), rngs=rngs))
    self.layers = nnx.List(layers)

  def __call__(self, roll_BTPI: jax.Array, mask_BTI: jax.Array) -> jax.Array:
    mask_BTPI = jnp.broadcast_to(mask_BTI[:, :, None, :], roll_BTPI.shape).astype(roll_BTPI.dtype)
    x_BTPC = jnp.concatenate([roll_BTPI * (1.0 - mask_BTPI), mask_BTPI], axis=-1)
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
        x_BTPC = nnx.relu(x_BTPC)
    return x_BTPC


def build_model(model_config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> Coconet:
  """Coconet from a config's `model` sub-config (architecture 'straight' | 'dilated')."""
  architecture = model_config.get('architecture', 'straight')
  if architecture not in ('straight', 'dilated'):
    raise ValueError(f'unknown Coconet architecture {architecture!r}')
  dilation = None
  if architecture == 'dilated':
    dilation = model_config.get('dilation') or DOODLE_DILATION
  return Coconet(num_layers=model_config.num_layers, num_filters=model_config.num_filters,
                 separable=model_config.get('separable', False), dilation=dilation, rngs=rngs)


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
