"""PianoNet (Angsten 2020): a WaveNet-like stack of causal dilated 1-D convolutions over key states.

The input is the flattened binary piano roll (index = t * num_keys + k, one key state per position);
output i is the logit of P(key state i + 1 = down | key states 0..i). Blocks of causal dilated convs
(dilation 1, 2, 4, ... restarting in every block), ELU, widths from the config, then a 1x1 conv to
one logit whose bias starts at logit(key-down rate) so that training starts from the base rate.

Optional (off by default, not in the paper): `key_phase_input` adds a one-hot of the key index of
the position being predicted to the input, so the net need not infer which key comes next from
the pattern of the last num_keys inputs. It costs num_keys * kernel_size * widths[0] parameters.

One definition serves training (`__call__`, flax convs with causal padding) and fast generation
(`layers()` describes the same weights to common.fast_conv; `prime`/`step` carry explicit state).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from common import fast_conv
from common.errors import UserError


# Keras' Conv1D default, which the original PianoNet used.
_KERNEL_INIT = nnx.initializers.glorot_uniform()
# The original's output bias initialiser, Constant(-3.2): what a config without a measured
# key-down rate (output_bias_init None, before training calibrates it) starts from.
ORIGINAL_OUTPUT_BIAS = -3.2


def block_dilations(block_layers: Sequence[int]) -> list[int]:
  """Dilations 1, 2, 4, ... doubling within a block and restarting at 1 in the next."""
  return [2**i for n in block_layers for i in range(n)]


def _check(model_config: ml_collections.ConfigDict) -> None:
  num_layers = sum(model_config.block_layers)
  if len(model_config.widths) != num_layers:
    raise UserError(
        f'pianonet model config: widths has {len(model_config.widths)} entries but block_layers '
        f'{list(model_config.block_layers)} has {num_layers} layers; give one width per layer.')
  if model_config.kernel_size < 2:
    raise UserError(
        f'pianonet model config: kernel_size must be >= 2, got {model_config.kernel_size}.')


def receptive_field(model_config: ml_collections.ConfigDict) -> int:
  """Number of key states one prediction sees: 1 + (k - 1) * sum of dilations."""
  _check(model_config)
  return 1 + (model_config.kernel_size - 1) * sum(block_dilations(model_config.block_layers))


def num_params(model_config: ml_collections.ConfigDict, num_keys: int = 0) -> int:
  """Parameter count of the model a config builds (num_keys matters only with key_phase_input)."""
  _check(model_config)
  in_features = 1 + (num_keys if model_config.get('key_phase_input', False) else 0)
  total = 0
  for width in model_config.widths:
    total += model_config.kernel_size * in_features * width + width
    in_features = width
  return total + in_features + 1


class PianoNet(nnx.Module):
  """Causal dilated conv stack over flattened key states; returns logits (apply sigmoid for P)."""

  def __init__(self, *, num_keys: int, kernel_size: int, block_layers: Sequence[int],
               widths: Sequence[int], output_bias_init: float, key_phase_input: bool = False,
               compute_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
    self.num_keys = num_keys
    self.key_phase_input = key_phase_input
    dilations = block_dilations(block_layers)
    if len(widths) != len(dilations):
      raise UserError(f'pianonet: {len(widths)} widths for {len(dilations)} layers.')
    in_features = 1 + (num_keys if key_phase_input else 0)
    convs = []
    for width, dilation in zip(widths, dilations):
      # compute_dtype bfloat16: mixed precision (bf16 products, f32 parameters and optimizer).
      convs.append(nnx.Conv(in_features, width, (kernel_size,), kernel_dilation=(dilation,),
                            padding='CAUSAL', kernel_init=_KERNEL_INIT, dtype=compute_dtype,
                            param_dtype=jnp.float32, rngs=rngs))
      in_features = width
    self.convs = nnx.List(convs)
    self.dilations = tuple(dilations)
    self.output = nnx.Conv(in_features, 1, (1,), kernel_init=_KERNEL_INIT, rngs=rngs,
                           bias_init=nnx.initializers.constant(output_bias_init))

  def features(self, keys_BT: jax.Array, first_key: int | jax.Array = 0) -> jax.Array:
    """(B, T) key states (any int/float dtype) -> (B, T, C) conv inputs.

    first_key: key index (0..num_keys-1) of keys_BT[:, 0]; used only with key_phase_input.
    """
    x_BT1 = keys_BT.astype(jnp.float32)[..., None]
    if not self.key_phase_input:
      return x_BT1
    # The phase feature names the key of the position being predicted: (index + 1) % num_keys.
    next_key_T = (jnp.asarray(first_key) + 1 + jnp.arange(keys_BT.shape[1])) % self.num_keys
    phase_BTK = jnp.broadcast_to(jax.nn.one_hot(next_key_T, self.num_keys),
                                 keys_BT.shape + (self.num_keys,))
    return jnp.concatenate([x_BT1, phase_BTK], axis=-1)

  def __call__(self, keys_BT: jax.Array, first_key: int | jax.Array = 0,
               num_outputs: int | None = None) -> jax.Array:
    """Whole-sequence logits_BT; logits_BT[:, i] predicts keys_BT[:, i + 1].

    num_outputs: return only the last num_outputs logits (what the loss uses), equal to
    `self(keys_BT)[:, -num_outputs:]`; each layer then computes only the outputs that later
    layers need, which saves much of the work on long training windows.
    """
    h = self.features(keys_BT, first_key)
    # needed[l]: how many trailing outputs of layer l the requested outputs depend on.
    lags = [(conv.kernel_size[0] - 1) * d for conv, d in zip(self.convs, self.dilations)]
    needed = None
    if num_outputs is not None:
      needed = [num_outputs + sum(lags[l + 1:]) for l in range(len(lags))]
    for l, conv in enumerate(self.convs):
      if needed is not None:
        # Layer l's needed outputs see its last needed[l] + lag inputs; the first `lag` outputs
        # of the crop see causal zero padding instead of real history, and are dropped.
        h = jax.nn.elu(conv(h[:, -(needed[l] + lags[l]):]))[:, -needed[l]:]
      else:
        h = jax.nn.elu(conv(h))
    return self.output(h.astype(jnp.float32))[..., 0]

  # --- Fast generation: the same weights described to common.fast_conv. ---

  def layers(self) -> list[fast_conv.ConvLayer]:
    stack = [fast_conv.ConvLayer(conv.kernel.get_value(), conv.bias.get_value(), dilation=d,
                                 activation=jax.nn.elu)
             for conv, d in zip(self.convs, self.dilations)]
    stack.append(fast_conv.ConvLayer(self.output.kernel.get_value(),
                                     self.output.bias.get_value()))
    return stack

  @property
  def receptive_field(self) -> int:
    return fast_conv.receptive_field(self.layers())

  def init_state(self, batch_size: int) -> fast_conv.ConvState:
    """State of a stream with no history (every layer's past is zero)."""
    return fast_conv.init_state(self.layers(), batch_size)

  def prime(self, keys_BT: jax.Array, first_key: int | jax.Array = 0
            ) -> tuple[fast_conv.ConvState, jax.Array]:
    """One full pass over a seed -> (state after it, logits_BT of every seed position)."""
    state, out_BT1 = fast_conv.prime(self.layers(), self.features(keys_BT, first_key))
    return state, out_BT1[..., 0]

  def step(self, state: fast_conv.ConvState, keys_B: jax.Array, key_index: int | jax.Array = 0
           ) -> tuple[fast_conv.ConvState, jax.Array]:
    """Consumes one key state per stream -> (state, logits_B of the next key state).

    key_index: the key (0..num_keys-1) of the consumed state; used only with key_phase_input.
    """
    x_B1C = self.features(keys_B[:, None], key_index)
    state, out_B1 = fast_conv.step(self.layers(), state, x_B1C[:, 0])
    return state, out_B1[:, 0]


def output_bias_for_rate(key_down_rate: float) -> float:
  """The output bias that makes an untrained model predict `key_down_rate`: its logit."""
  rate = min(max(float(key_down_rate), 1e-6), 1 - 1e-6)
  return math.log(rate / (1 - rate))


def initial_output_bias(config: ml_collections.ConfigDict) -> float:
  """config.model.output_bias_init; when None, the logit of config.train_key_down_rate (the
  measured rate of the training data); without either, the original's -3.2."""
  bias = config.model.get('output_bias_init')
  if bias is not None:
    return float(bias)
  rate = config.get('train_key_down_rate')
  return ORIGINAL_OUTPUT_BIAS if rate is None else output_bias_for_rate(rate)


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> PianoNet:
  """PianoNet from a pianonet config (uses config.num_keys, config.model and
  initial_output_bias)."""
  m = config.model
  _check(m)
  return PianoNet(num_keys=config.num_keys, kernel_size=m.kernel_size,
                  block_layers=tuple(m.block_layers), widths=tuple(m.widths),
                  output_bias_init=initial_output_bias(config),
                  key_phase_input=m.get('key_phase_input', False),
                  compute_dtype=jnp.bfloat16 if config.get('mixed_precision') else jnp.float32,
                  rngs=rngs)


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters of a built model."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
