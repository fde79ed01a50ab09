"""One LSTM layer over a whole sequence, with a hand-written backward pass.

Autodiff of a lax.scan transposes every product inside the loop body, so the kernel gradient of
an LSTM becomes T small products (B, I)^T (B, 4H) added into a loop-carried (I, 4H) accumulator
at every step. Here the backward loop carries only the recurrence (dc, dh) and stacks the
pre-activation gradients dZ (T, B, 4H); the kernel gradients are then one product each over all
T x B rows, the bias gradient one sum and the input gradient one product. On the 2-core CPU this
took the mel_2bar_small encoder's per-step kernel-gradient products and their accumulation out of
the train step's loop (see README, MusicVAE speed).

The gate order and update are nnx.OptimizedLSTMCell's (i, f, g, o; input kernel without bias,
recurrent kernel with bias), so a StackedLSTM's cells plug in directly. tests/musicvae/
test_lstm.py checks outputs and gradients against autodiff of the plain step loop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from common import precision

Carry = tuple[jax.Array, jax.Array]  # (c, h), each (B, H)


def _product(x: jax.Array, kernel: jax.Array, dtype) -> jax.Array:
  """x @ kernel with `dtype` operands, float32 accumulation and result."""
  return jnp.dot(x.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32)


def _activations(pre_BG: jax.Array) -> jax.Array:
  """Pre-activations (i, f, g, o) -> sigmoid(i), sigmoid(f), tanh(g), sigmoid(o), packed (B, 4H)."""
  i, f, g, o = jnp.split(pre_BG, 4, axis=-1)
  return jnp.concatenate([jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)],
                         axis=-1)


def _run(kernel_i, kernel_h, bias, x_TBI, carry0: Carry, dtype, keep_residuals: bool):
  kernel_i16, kernel_h16 = kernel_i.astype(dtype), kernel_h.astype(dtype)

  def body(carry, x_BI):
    c_BH, h_BH = carry
    pre_BG = _product(x_BI, kernel_i16, dtype) + _product(h_BH, kernel_h16, dtype) + bias
    act_BG = _activations(pre_BG)
    i, f, g, o = jnp.split(act_BG, 4, axis=-1)
    new_c = f * c_BH + i * g
    new_h = o * jnp.tanh(new_c)
    outputs = (new_h, new_c, act_BG) if keep_residuals else (new_h,)
    return (new_c, new_h), outputs

  return jax.lax.scan(body, carry0, x_TBI)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _layer(kernel_i, kernel_h, bias, x_TBI, carry0, dtype):
  carry, (y_TBH,) = _run(kernel_i, kernel_h, bias, x_TBI, carry0, dtype, keep_residuals=False)
  return y_TBH, carry


def _layer_fwd(kernel_i, kernel_h, bias, x_TBI, carry0, dtype):
  carry, (y_TBH, c_TBH, act_TBG) = _run(kernel_i, kernel_h, bias, x_TBI, carry0, dtype,
                                        keep_residuals=True)
  return (y_TBH, carry), (kernel_i, kernel_h, x_TBI, carry0, y_TBH, c_TBH, act_TBG)


def _layer_bwd(dtype, residuals, cotangents):
  kernel_i, kernel_h, x_TBI, (c0_BH, h0_BH), y_TBH, c_TBH, act_TBG = residuals
  dy_TBH, (dc_last, dh_last) = cotangents
  kernel_h16 = kernel_h.astype(dtype)
  c_prev_TBH = jnp.concatenate([c0_BH[None], c_TBH[:-1]], axis=0)
  h_prev_TBH = jnp.concatenate([h0_BH[None], y_TBH[:-1]], axis=0)

  def body(carry, xs):
    dc_BH, dh_BH = carry
    dy_BH, c_prev_BH, c_BH, act_BG = xs
    i, f, g, o = jnp.split(act_BG, 4, axis=-1)
    dh_BH = dh_BH + dy_BH
    tanh_c = jnp.tanh(c_BH)
    dc_BH = dc_BH + dh_BH * o * (1.0 - tanh_c * tanh_c)
    dz_BG = jnp.concatenate([dc_BH * g * i * (1.0 - i), dc_BH * c_prev_BH * f * (1.0 - f),
                             dc_BH * i * (1.0 - g * g), dh_BH * tanh_c * o * (1.0 - o)], axis=-1)
    dh_prev = jax.lax.dot_general(dz_BG.astype(dtype), kernel_h16, (((1,), (1,)), ((), ())),
                                  preferred_element_type=jnp.float32)
    return (dc_BH * f, dh_prev), dz_BG

  (dc0, dh0), dz_TBG = jax.lax.scan(body, (dc_last, dh_last),
                                    (dy_TBH, c_prev_TBH, c_TBH, act_TBG), reverse=True)
  rows = dz_TBG.shape[0] * dz_TBG.shape[1]
  dz_NG = dz_TBG.reshape(rows, -1)
  dz16_NG = dz_NG.astype(dtype)
  d_kernel_i = precision.transposed_product(x_TBI.reshape(rows, -1).astype(dtype), dz16_NG)
  d_kernel_h = precision.transposed_product(h_prev_TBH.reshape(rows, -1).astype(dtype), dz16_NG)
  d_bias = dz_NG.sum(axis=0)
  dx_TBI = jax.lax.dot_general(dz_TBG.astype(dtype), kernel_i.astype(dtype),
                               (((2,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  return (d_kernel_i.astype(kernel_i.dtype), d_kernel_h.astype(kernel_h.dtype),
          d_bias, dx_TBI.astype(x_TBI.dtype), (dc0, dh0))


_layer.defvjp(_layer_fwd, _layer_bwd)


def lstm_layer(kernel_i: jax.Array, kernel_h: jax.Array, bias: jax.Array, x_TBI: jax.Array,
               carry0: Carry, *, dtype=jnp.float32, reverse: bool = False
               ) -> tuple[jax.Array, Carry]:
  """Runs one LSTM layer over x (T, B, I) from carry0 = (c, h); returns (h for every step
  (T, B, H), the final (c, h)). Products take `dtype` operands (bf16 for mixed precision or bf16
  weights) with float32 accumulation; reverse=True runs from the last step to the first (outputs
  stay at their steps' positions)."""
  if reverse:
    y_TBH, carry = _layer(kernel_i, kernel_h, bias, x_TBI[::-1], carry0, dtype)
    return y_TBH[::-1], carry
  return _layer(kernel_i, kernel_h, bias, x_TBI, carry0, dtype)
