"""Fast-WaveNet incremental inference for any stack of causal dilated 1-D convolutions.

Paine et al. 2016: a causal conv layer with kernel size k and dilation d only ever looks at its
inputs from d, 2d, ..., (k-1)d steps ago. Keeping those (k-1)*d past inputs in a per-layer queue
makes each generated step cost O(number of layers) instead of O(receptive field).

The machinery here is model-agnostic. A model describes its layer stack as a list of `ConvLayer`
(weights, dilation, activation) and gets:

  forward(layers, x_BTC)          whole-sequence call (zero history before t = 0)
  init_state(layers, B)           empty queues (all-zero history)
  prime(layers, x_BTC)            one full forward pass over a seed, queues filled from it
  step(layers, state, x_BC)       one time step with explicit state -> (state, y_BC)
  scan_generate(step_fn, ...)     a jitted lax.scan that feeds each sample back as the next input

Queues are circular buffers (a write index instead of a shift), so a step moves O(C) numbers per
layer, not O((k-1) * d * C). Every stream in a batch advances in lockstep (one shared step count).
Zero history means "each layer's input is zero before t = 0", i.e. per-layer causal zero padding,
which is exactly what `forward` and flax's `padding='CAUSAL'` compute.

PianoNet is its only user today; it lives in common/ (DESIGN.md's layout) because it knows no
model: any WaveNet-style causal stack describes itself as ConvLayers and gets the queues.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array] | None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ConvLayer:
  """One causal conv layer: y[t] = act(sum_j x[t - (K-1-j)*dilation] @ kernel[j] + bias).

  With `residual`, y[t] = x[t] + act(...) (needs in == out). Kernel size 1 is allowed (a 1x1
  projection; it keeps no queue).
  """
  kernel_KIO: jax.Array
  bias_O: jax.Array | None
  dilation: int = dataclasses.field(default=1, metadata=dict(static=True))
  activation: Activation = dataclasses.field(default=None, metadata=dict(static=True))
  residual: bool = dataclasses.field(default=False, metadata=dict(static=True))

  @property
  def kernel_size(self) -> int:
    return self.kernel_KIO.shape[0]

  @property
  def queue_len(self) -> int:
    """How many past inputs this layer must remember: (k - 1) * dilation."""
    return (self.kernel_size - 1) * self.dilation


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ConvState:
  """Queues of past layer inputs. queues[l]: (B, queue_len_l, C_in_l); input of time tau sits in
  slot tau % queue_len_l. t: int32 scalar, the number of time steps consumed so far."""
  queues: tuple[jax.Array, ...]
  t: jax.Array


def receptive_field(layers: Sequence[ConvLayer]) -> int:
  """Number of inputs (including the current one) that one output depends on."""
  return 1 + sum(layer.queue_len for layer in layers)


def _apply_layer(layer: ConvLayer, x_BTI: jax.Array) -> jax.Array:
  """Whole-sequence causal conv (zero-padded on the left) of one layer."""
  pad = layer.queue_len
  y_BTO = jax.lax.conv_general_dilated(
      x_BTI, layer.kernel_KIO.astype(x_BTI.dtype), window_strides=(1,), padding=[(pad, 0)],
      rhs_dilation=(layer.dilation,), dimension_numbers=('NWC', 'WIO', 'NWC'))
  return _finish(layer, x_BTI, y_BTO)


def _finish(layer: ConvLayer, x: jax.Array, y: jax.Array) -> jax.Array:
  if layer.bias_O is not None:
    y = y + layer.bias_O.astype(y.dtype)
  if layer.activation is not None:
    y = layer.activation(y)
  if layer.residual:
    y = y + x
  return y


def forward(layers: Sequence[ConvLayer], x_BTC: jax.Array,
            num_pad_B: jax.Array | None = None) -> jax.Array:
  """Whole-sequence output of the stack; output t depends on inputs 0..t only.

  num_pad_B: optional (B,) number of leading positions that stand for "before the start": every
  layer's input is zeroed there, so the result equals running the stack on the unpadded suffix.
  (The naive reference generator uses it to keep a fixed-size window.)
  """
  h = x_BTC
  if num_pad_B is not None:
    keep_BT1 = (jnp.arange(x_BTC.shape[1])[None, :] >= num_pad_B[:, None])[..., None]
  for layer in layers:
    if num_pad_B is not None:
      h = jnp.where(keep_BT1, h, 0)
    h = _apply_layer(layer, h)
  return h


def init_state(layers: Sequence[ConvLayer], batch_size: int,
               dtype: Any = jnp.float32) -> ConvState:
  """Queues holding an all-zero past (what `forward` assumes before t = 0)."""
  queues = tuple(
      jnp.zeros((batch_size, layer.queue_len, layer.kernel_KIO.shape[1]), dtype)
      for layer in layers)
  return ConvState(queues=queues, t=jnp.zeros((), jnp.int32))


def prime(layers: Sequence[ConvLayer], x_BTC: jax.Array) -> tuple[ConvState, jax.Array]:
  """Runs the whole seed through the stack once and fills the queues from it.

  Returns (state after consuming the seed, y_BTC of the full forward pass). Seeds shorter than a
  queue are fine: the missing past is zero, as in `forward`.
  """
  num_steps = x_BTC.shape[1]
  queues = []
  h = x_BTC
  for layer in layers:
    length = layer.queue_len
    if length:
      # The last `length` inputs, zero history in front when the seed is short.
      past_BLC = jnp.pad(h, ((0, 0), (length, 0), (0, 0)))[:, num_steps:]
      # past[i] is the input of time num_steps - length + i; it belongs in slot time % length.
      queues.append(jnp.roll(past_BLC, (num_steps - length) % length, axis=1))
    else:
      queues.append(jnp.zeros((h.shape[0], 0, h.shape[2]), h.dtype))
    h = _apply_layer(layer, h)
  return ConvState(queues=tuple(queues), t=jnp.asarray(num_steps, jnp.int32)), h


def step(layers: Sequence[ConvLayer], state: ConvState,
         x_BC: jax.Array) -> tuple[ConvState, jax.Array]:
  """Consumes the input of time state.t and returns the stack's output for that time."""
  t = state.t
  h = x_BC
  new_queues = []
  for layer, queue_BLC in zip(layers, state.queues):
    length = layer.queue_len
    taps = []
    for j in range(layer.kernel_size - 1):
      # Tap j looks (k-1-j)*d steps back; that input lives in slot (t - lag) % length.
      lag = (layer.kernel_size - 1 - j) * layer.dilation
      slot = jnp.mod(t - lag, length)
      taps.append(jax.lax.dynamic_index_in_dim(queue_BLC, slot, axis=1, keepdims=False)
                  .astype(h.dtype))
    taps.append(h)  # the newest tap: the current input
    # All taps in one product, (B, K*C_in) @ (K*C_in, C_out): one library call per layer instead
    # of K; at one stream a step is call overhead, not arithmetic.
    y = jnp.concatenate(taps, axis=-1) @ layer.kernel_KIO.astype(h.dtype).reshape(
        -1, layer.kernel_KIO.shape[-1])
    if length:
      # The current input overwrites the oldest one, which no later step needs.
      queue_BLC = jax.lax.dynamic_update_index_in_dim(
          queue_BLC, h.astype(queue_BLC.dtype), jnp.mod(t, length), axis=1)
    new_queues.append(queue_BLC)
    h = _finish(layer, h, y)
  return ConvState(queues=tuple(new_queues), t=t + 1), h


StepFn = Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]]
SampleFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def scan_generate(step_fn: StepFn, state: Any, first_input: jax.Array, num_steps: int,
                  sample_fn: SampleFn, rng: jax.Array, start_index: int | jax.Array = 0
                  ) -> tuple[Any, jax.Array]:
  """Autoregressive loop: feed an input, sample the next one from the output, repeat.

  step_fn(state, x, i) -> (state, out) consumes the input at absolute index i;
  sample_fn(key, out, i) -> x_next samples the input at index i + 1, with
  key = fold_in(rng, i + 1) so any generator that folds the same way draws the same numbers.
  Returns (final state, samples stacked on axis 0: the inputs at start_index + 1 .. + num_steps).
  Call it under jax.jit (with num_steps static) to get one compiled loop.
  """
  start_index = jnp.asarray(start_index, jnp.int32)

  def body(carry, i):
    state, x = carry
    index = start_index + i
    state, out = step_fn(state, x, index)
    x_next = sample_fn(jax.random.fold_in(rng, index + 1), out, index)
    return (state, x_next), x_next

  (state, _), samples = jax.lax.scan(body, (state, first_input),
                                     jnp.arange(num_steps, dtype=jnp.int32))
  return state, samples
