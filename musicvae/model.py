"""MusicVAE (Roberts et al. 2018): BiLSTM encoder, flat or hierarchical LSTM decoders.

Tokens are int (B, T, K): K tracks (melody 1, drums 1, trio 3) with vocab sizes V_k; the networks
see the concatenated one-hots (B, T, sum V_k) and emit concatenated logits of the same width.

Every decoder has one `step(state, prev_BV, cond_BC) -> (state, logits_BV)` with an explicit
LSTM state. Training runs it under lax.scan with the targets as inputs (and scheduled sampling
inside the scan); sampling runs the same step under lax.scan feeding back its own samples, or any
forced tokens, which is how the tests check that both paths give the same logits.
"""

from __future__ import annotations

from typing import Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from common import precision
from common import sampling
from musicvae import lstm

LSTMState = tuple[tuple[jax.Array, jax.Array], ...]  # ((c, h) per layer)
# Magenta's LSTMBlockCell adds forget_bias 1.0 to the forget gate's pre-activation inside the cell,
# on top of the bias variable.
ORIGINAL_FORGET_BIAS = 1.0
ENCODER_INPUTS = ('one_hot', 'drum_roll')


def split_tracks(x_BTV: jax.Array, vocab_sizes: Sequence[int]) -> list[jax.Array]:
  """Concatenated per-track vectors -> one array per track (last axis)."""
  bounds = [sum(vocab_sizes[:k]) for k in range(1, len(vocab_sizes))]
  return jnp.split(x_BTV, bounds, axis=-1)


def one_hot_tracks(tokens_BTK: jax.Array, vocab_sizes: Sequence[int]) -> jax.Array:
  """int (..., K) -> float32 (..., sum V) concatenated one-hots."""
  return jnp.concatenate([jax.nn.one_hot(tokens_BTK[..., k], v)
                          for k, v in enumerate(vocab_sizes)], axis=-1)


def sample_tracks(rng: jax.Array, logits_BV: jax.Array, vocab_sizes: Sequence[int],
                  temperature: float | jax.Array) -> jax.Array:
  """Samples each track's class: (B, sum V) logits -> int32 (B, K); temperature 0 = argmax."""
  keys = jax.random.split(rng, len(vocab_sizes))
  return jnp.stack([sampling.sample_logits(key, logits, temperature)
                    for key, logits in zip(keys, split_tracks(logits_BV, vocab_sizes))], axis=-1)


def drum_roll(tokens_BT: jax.Array, num_classes: int = 9) -> jax.Array:
  """Drum bit sets (B, T) -> float32 (B, T, num_classes + 1): the classes hit, then a "no hit"
  bit that is 1 where none is (Magenta's DrumsConverter roll_input)."""
  bits_BTC = (tokens_BT[..., None] >> jnp.arange(num_classes)) & 1
  no_hit_BT1 = jnp.all(bits_BTC == 0, axis=-1, keepdims=True)
  return jnp.concatenate([bits_BTC, no_hit_BT1], axis=-1).astype(jnp.float32)


class StackedLSTM(nnx.Module):
  """LSTM layers with an explicit state; `step` for one time step, `scan` for a sequence.

  Gates i, f, g, o (nnx.OptimizedLSTMCell's layout); `forget_bias` is a constant added to the
  forget gate's pre-activation (1.0 in Magenta's LSTMBlockCell, 0 in flax's cell).
  """

  def __init__(self, in_features: int, sizes: Sequence[int], *, forget_bias: float = 0.0,
               rngs: nnx.Rngs):
    self.sizes = tuple(sizes)
    self.forget_bias = float(forget_bias)
    self.mixed_precision = False  # see use_mixed_precision
    cells = []
    for size in self.sizes:
      cells.append(nnx.OptimizedLSTMCell(in_features, size, rngs=rngs))
      in_features = size
    self.cells = nnx.List(cells)

  @property
  def state_size(self) -> int:
    return 2 * sum(self.sizes)

  def zero_state(self, batch: int) -> LSTMState:
    return tuple((jnp.zeros((batch, s)), jnp.zeros((batch, s))) for s in self.sizes)

  def state_from_vector(self, v_BS: jax.Array) -> LSTMState:
    """A (B, state_size) vector (e.g. tanh(dense(z))) -> ((c, h) per layer)."""
    state, offset = [], 0
    for s in self.sizes:
      state.append((v_BS[:, offset:offset + s], v_BS[:, offset + s:offset + 2 * s]))
      offset += 2 * s
    return tuple(state)

  def input_projection(self, x_BI: jax.Array, rows: slice = slice(None)) -> jax.Array:
    """The first layer's input transform x @ W_i[rows] (B, 4H). The decoders project the part of
    their input that is constant over a sequence or bar (z, the conductor's c) once, outside the
    time loop, and `step_projected` adds the rest per step."""
    return self.product(x_BI, self.cells[0].dense_i.kernel[rows])

  def step_projected(self, state: LSTMState, projected_BG: jax.Array
                     ) -> tuple[LSTMState, jax.Array]:
    """One step given the first layer's input projection (B, 4H) instead of its input."""
    carry, h_BH = _lstm_update(self.cells[0], state[0], projected_BG, self.product,
                               self.forget_bias)
    new_state = [carry]
    for cell, carry in zip(self.cells[1:], state[1:]):
      carry, h_BH = _lstm_update(cell, carry, self.product(h_BH, cell.dense_i.kernel[...]),
                                 self.product, self.forget_bias)
      new_state.append(carry)
    return tuple(new_state), h_BH

  def bias(self, cell: nnx.OptimizedLSTMCell) -> jax.Array:
    """The cell's bias (4H,) with forget_bias added to the forget gate's block."""
    bias_G = cell.dense_h.bias[...]
    if not self.forget_bias:
      return bias_G
    size = bias_G.shape[-1] // 4
    return bias_G.at[size:2 * size].add(self.forget_bias)

  def step(self, state: LSTMState, x_BI: jax.Array) -> tuple[LSTMState, jax.Array]:
    return self.step_projected(state, self.input_projection(x_BI))

  def product(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x @ kernel for the LSTM: in the kernel's dtype (bf16 in an inference copy from
    `inference_copy`), or with bf16 operands forward and backward when training with
    mixed precision; float32 accumulation and result either way."""
    if self.mixed_precision and kernel.dtype == jnp.float32:
      return precision.matmul_bf16(x, kernel)
    return precision.matmul(x, kernel)

  def scan(self, state: LSTMState, x_BTI: jax.Array, reverse: bool = False
           ) -> tuple[LSTMState, jax.Array]:
    # Layer by layer, each with a hand-written backward pass (musicvae/lstm.py) whose kernel
    # gradients are one product over all steps instead of one per step; equal to lax.scan of
    # `step` (tests/musicvae/test_lstm.py). The input transform stays inside the loop: hoisting
    # it out for all steps made the forward pass slower on CPU.
    x_TBI = jnp.swapaxes(x_BTI, 0, 1)
    new_state = []
    for cell, carry in zip(self.cells, state):
      kernel_i = cell.dense_i.kernel[...]
      dtype = jnp.bfloat16 if self.mixed_precision else kernel_i.dtype
      x_TBI, carry = lstm.lstm_layer(kernel_i, cell.dense_h.kernel[...], self.bias(cell), x_TBI,
                                     carry, dtype=dtype, reverse=reverse)
      new_state.append(carry)
    return tuple(new_state), jnp.swapaxes(x_TBI, 0, 1)


def _lstm_update(cell: nnx.OptimizedLSTMCell, carry: tuple[jax.Array, jax.Array],
                 projected_BG: jax.Array, product: Callable[[jax.Array, jax.Array], jax.Array],
                 forget_bias: float = 0.0) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
  """nnx.OptimizedLSTMCell's update (gates i, f, g, o) with dense_i(x) given as `projected_BG`
  and `forget_bias` added to the forget gate."""
  c_BH, h_BH = carry
  recurrent_BG = product(h_BH, cell.dense_h.kernel[...]) + cell.dense_h.bias[...]
  i, f, g, o = jnp.split(projected_BG + recurrent_BG, 4, axis=-1)
  new_c = jax.nn.sigmoid(f + forget_bias) * c_BH + jax.nn.sigmoid(i) * jnp.tanh(g)
  new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
  return (new_c, new_h), new_h


class BiLSTMEncoder(nnx.Module):
  """Stacked bidirectional LSTM; the last layer's final h of both directions -> mu, sigma.

  sigma = softplus(dense) + sigma_epsilon (Magenta: sigma_epsilon 0).
  """

  def __init__(self, in_features: int, sizes: Sequence[int], z_dim: int, *,
               forget_bias: float = 0.0, sigma_epsilon: float = 0.0, rngs: nnx.Rngs):
    fw, bw = [], []
    self.sigma_epsilon = float(sigma_epsilon)
    for size in sizes:
      fw.append(StackedLSTM(in_features, [size], forget_bias=forget_bias, rngs=rngs))
      bw.append(StackedLSTM(in_features, [size], forget_bias=forget_bias, rngs=rngs))
      in_features = 2 * size
    self.fw, self.bw = nnx.List(fw), nnx.List(bw)
    self.mu = nnx.Linear(in_features, z_dim, rngs=rngs)
    self.sigma = nnx.Linear(in_features, z_dim, rngs=rngs)

  def __call__(self, x_BTI: jax.Array) -> tuple[jax.Array, jax.Array]:
    batch = x_BTI.shape[0]
    for fw, bw in zip(self.fw, self.bw):
      (fw_state,), y_fw = fw.scan(fw.zero_state(batch), x_BTI)
      (bw_state,), y_bw = bw.scan(bw.zero_state(batch), x_BTI, reverse=True)
      x_BTI = jnp.concatenate([y_fw, y_bw], axis=-1)
    final_BH = jnp.concatenate([fw_state[1], bw_state[1]], axis=-1)
    return self.mu(final_BH), jax.nn.softplus(self.sigma(final_BH)) + self.sigma_epsilon


# ------------------------------------------------------------------------------------------------
# Autoregressive loops shared by both decoders.

StepFn = Callable[[LSTMState, jax.Array, jax.Array], tuple[LSTMState, jax.Array]]


def teacher_forced_scan(step: StepFn, state: LSTMState, inputs_BTV: jax.Array, cond_BC: jax.Array,
                        vocab_sizes: Sequence[int], rng: jax.Array | None = None,
                        p_sample: float | jax.Array = 0.0) -> jax.Array:
  """Logits (B, T, V) given the true previous tokens `inputs_BTV` (inputs_BTV[:, 0] = start).

  Scheduled sampling: from step 1 on, each example's input is, with probability p_sample, a sample
  of the model's own previous output (no gradient through it) instead of the true token.
  """
  batch, num_steps, width = inputs_BTV.shape
  if rng is None:
    rng = jax.random.key(0)
  coin_key, sample_key = jax.random.split(rng)
  use_sample_TB = jax.random.uniform(coin_key, (num_steps, batch)) < p_sample
  use_sample_TB = use_sample_TB.at[0].set(False)
  keys_T = jax.random.split(sample_key, num_steps)

  def body(carry, xs):
    state, prev_logits_BV = carry
    true_BV, use_sample_B, key = xs
    sampled_BV = one_hot_tracks(sample_tracks(key, prev_logits_BV, vocab_sizes, 1.0), vocab_sizes)
    x_BV = jnp.where(use_sample_B[:, None], jax.lax.stop_gradient(sampled_BV), true_BV)
    state, logits_BV = step(state, x_BV, cond_BC)
    return (state, logits_BV), logits_BV

  init = (state, jnp.zeros((batch, width), inputs_BTV.dtype))
  _, logits_TBV = jax.lax.scan(body, init,
                               (jnp.swapaxes(inputs_BTV, 0, 1), use_sample_TB, keys_T))
  return jnp.swapaxes(logits_TBV, 0, 1)


def sampling_scan(step: StepFn, state: LSTMState, first_BV: jax.Array, cond_BC: jax.Array,
                  num_steps: int, vocab_sizes: Sequence[int], rng: jax.Array,
                  temperature: float | jax.Array, forced_BTK: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Decodes step by step feeding back samples (or `forced_BTK`, when given).

  Returns (tokens int32 (B, T, K), logits (B, T, V), the last input one-hot (B, V)).
  """
  keys_T = jax.random.split(rng, num_steps)
  forced_TBK = None if forced_BTK is None else jnp.swapaxes(forced_BTK, 0, 1)

  def body(carry, xs):
    state, x_BV = carry
    key, forced_BK = xs
    state, logits_BV = step(state, x_BV, cond_BC)
    ids_BK = sample_tracks(key, logits_BV, vocab_sizes, temperature)
    if forced_BK is not None:
      ids_BK = forced_BK.astype(jnp.int32)
    return (state, one_hot_tracks(ids_BK, vocab_sizes)), (ids_BK, logits_BV)

  (_, last_BV), (ids_TBK, logits_TBV) = jax.lax.scan(body, (state, first_BV),
                                                     (keys_T, forced_TBK))
  return jnp.swapaxes(ids_TBK, 0, 1), jnp.swapaxes(logits_TBV, 0, 1), last_BV


def shift_right(x_BTV: jax.Array) -> jax.Array:
  """Inputs for teacher forcing: a zero start vector, then the targets without the last step."""
  return jnp.pad(x_BTV, ((0, 0), (1, 0), (0, 0)))[:, :-1]


# ------------------------------------------------------------------------------------------------
# Decoders.


class FlatDecoder(nnx.Module):
  """LSTM layers from tanh(dense(z)); z is concatenated to every input step."""

  def __init__(self, vocab_sizes: Sequence[int], sizes: Sequence[int], z_dim: int, num_steps: int,
               *, forget_bias: float = 0.0, rngs: nnx.Rngs):
    self.vocab_sizes = tuple(vocab_sizes)
    self.num_steps = num_steps
    width = sum(vocab_sizes)
    self.lstm = StackedLSTM(width + z_dim, sizes, forget_bias=forget_bias, rngs=rngs)
    self.init = nnx.Linear(z_dim, self.lstm.state_size, rngs=rngs)
    self.out = nnx.Linear(self.lstm.sizes[-1], width, rngs=rngs)

  def initial_state(self, z_BZ: jax.Array) -> LSTMState:
    return self.lstm.state_from_vector(jnp.tanh(self.init(z_BZ)))

  def step(self, state: LSTMState, prev_BV: jax.Array, z_BZ: jax.Array
           ) -> tuple[LSTMState, jax.Array]:
    """One decoding step from the previous token's one-hot and z."""
    return self._step(state, prev_BV, self._z_projection(z_BZ))

  def _z_projection(self, z_BZ: jax.Array) -> jax.Array:
    # z is the same at every step: its part of the input transform is computed once.
    return self.lstm.input_projection(z_BZ, slice(sum(self.vocab_sizes), None))

  def _step(self, state: LSTMState, prev_BV: jax.Array, z_projected_BG: jax.Array
            ) -> tuple[LSTMState, jax.Array]:
    projected_BG = self.lstm.input_projection(prev_BV, slice(0, sum(self.vocab_sizes)))
    state, h_BH = self.lstm.step_projected(state, projected_BG + z_projected_BG)
    return state, self.out(h_BH)

  def logits(self, z_BZ: jax.Array, targets_BTV: jax.Array, rng: jax.Array | None = None,
             p_sample: float | jax.Array = 0.0) -> jax.Array:
    return teacher_forced_scan(self._step, self.initial_state(z_BZ), shift_right(targets_BTV),
                               self._z_projection(z_BZ), self.vocab_sizes, rng, p_sample)

  def sample(self, z_BZ: jax.Array, rng: jax.Array, temperature: float | jax.Array,
             forced_BTK: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    first_BV = jnp.zeros((z_BZ.shape[0], sum(self.vocab_sizes)))
    ids, logits, _ = sampling_scan(self._step, self.initial_state(z_BZ), first_BV,
                                   self._z_projection(z_BZ), self.num_steps, self.vocab_sizes,
                                   rng, temperature, forced_BTK)
    return ids, logits


class HierarchicalDecoder(nnx.Module):
  """A conductor LSTM (one step per bar) and one per-bar note decoder per track.

  The conductor starts from tanh(dense(z)) with zero inputs; its output c_i for bar i sets each
  note decoder's state through tanh(dense(c_i)) and is concatenated to its inputs. Bar i starts
  from the last token of bar i-1 (during training, the true one, as in the paper's code).
  """

  def __init__(self, vocab_sizes: Sequence[int], conductor_sizes: Sequence[int],
               sizes: Sequence[int], z_dim: int, num_bars: int, bar_steps: int, *,
               forget_bias: float = 0.0, rngs: nnx.Rngs):
    self.vocab_sizes = tuple(vocab_sizes)
    self.num_bars, self.bar_steps = num_bars, bar_steps
    self.conductor = StackedLSTM(1, conductor_sizes, forget_bias=forget_bias, rngs=rngs)
    self.conductor_init = nnx.Linear(z_dim, self.conductor.state_size, rngs=rngs)
    cond = self.conductor.sizes[-1]
    self.cores = nnx.List([StackedLSTM(v + cond, sizes, forget_bias=forget_bias, rngs=rngs)
                           for v in vocab_sizes])
    self.core_inits = nnx.List([nnx.Linear(cond, self.cores[0].state_size, rngs=rngs)
                                for _ in vocab_sizes])
    self.outs = nnx.List([nnx.Linear(self.cores[0].sizes[-1], v, rngs=rngs)
                          for v in vocab_sizes])

  def conductor_state(self, z_BZ: jax.Array) -> LSTMState:
    return self.conductor.state_from_vector(jnp.tanh(self.conductor_init(z_BZ)))

  def conductor_step(self, state: LSTMState) -> tuple[LSTMState, jax.Array]:
    batch = state[0][0].shape[0]
    return self.conductor.step(state, jnp.zeros((batch, 1)))

  def core_state(self, k: int, c_BC: jax.Array) -> LSTMState:
    return self.cores[k].state_from_vector(jnp.tanh(self.core_inits[k](c_BC)))

  def core_step(self, k: int, state: LSTMState, prev_BV: jax.Array, c_BC: jax.Array
                ) -> tuple[LSTMState, jax.Array]:
    """One step of track k's note decoder from its previous token and the bar's conductor c."""
    return self._core_step(k, state, prev_BV, self._c_projection(k, c_BC))

  def _c_projection(self, k: int, c_BC: jax.Array) -> jax.Array:
    # c is constant within a bar: its part of the input transform is computed once per bar.
    return self.cores[k].input_projection(c_BC, slice(self.vocab_sizes[k], None))

  def _core_step(self, k: int, state: LSTMState, prev_BV: jax.Array, c_projected_BG: jax.Array
                 ) -> tuple[LSTMState, jax.Array]:
    projected_BG = self.cores[k].input_projection(prev_BV, slice(0, self.vocab_sizes[k]))
    state, h_BH = self.cores[k].step_projected(state, projected_BG + c_projected_BG)
    return state, self.outs[k](h_BH)

  def logits(self, z_BZ: jax.Array, targets_BTV: jax.Array, rng: jax.Array | None = None,
             p_sample: float | jax.Array = 0.0) -> jax.Array:
    batch, n = z_BZ.shape[0], self.num_bars
    _, c_BNC = self.conductor.scan(self.conductor_state(z_BZ), jnp.zeros((batch, n, 1)))
    # Bars are independent given c_i and their first input, so run them as one batch of B * N.
    c_XC = c_BNC.reshape(batch * n, -1)
    inputs_XSV = shift_right(targets_BTV).reshape(batch * n, self.bar_steps, -1)
    rng = jax.random.key(0) if rng is None else rng
    logits = []
    for k, (v, x_XSV) in enumerate(zip(self.vocab_sizes,
                                       split_tracks(inputs_XSV, self.vocab_sizes))):
      step = lambda s, x, c, k=k: self._core_step(k, s, x, c)
      logits.append(teacher_forced_scan(step, self.core_state(k, c_XC), x_XSV,
                                        self._c_projection(k, c_XC), (v,),
                                        jax.random.fold_in(rng, k), p_sample))
    return jnp.concatenate(logits, axis=-1).reshape(batch, n * self.bar_steps, -1)

  def sample(self, z_BZ: jax.Array, rng: jax.Array, temperature: float | jax.Array,
             forced_BTK: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    batch, n, steps = z_BZ.shape[0], self.num_bars, self.bar_steps
    forced_NBSK = None
    if forced_BTK is not None:
      forced_NBSK = jnp.swapaxes(forced_BTK.reshape(batch, n, steps, -1), 0, 1)

    def bar(carry, xs):
      conductor_state, prev_BV = carry
      key, forced_BSK = xs
      conductor_state, c_BC = self.conductor_step(conductor_state)
      ids, logits, last = [], [], []
      for k, (v, prev_k) in enumerate(zip(self.vocab_sizes,
                                          split_tracks(prev_BV, self.vocab_sizes))):
        step = lambda s, x, c, k=k: self._core_step(k, s, x, c)
        forced_k = None if forced_BSK is None else forced_BSK[..., k:k + 1]
        ids_k, logits_k, last_k = sampling_scan(
            step, self.core_state(k, c_BC), prev_k, self._c_projection(k, c_BC), steps, (v,),
            jax.random.fold_in(key, k), temperature, forced_k)
        ids.append(ids_k), logits.append(logits_k), last.append(last_k)
      return ((conductor_state, jnp.concatenate(last, axis=-1)),
              (jnp.concatenate(ids, axis=-1), jnp.concatenate(logits, axis=-1)))

    first_BV = jnp.zeros((batch, sum(self.vocab_sizes)))
    _, (ids_NBSK, logits_NBSV) = jax.lax.scan(
        bar, (self.conductor_state(z_BZ), first_BV), (jax.random.split(rng, n), forced_NBSK))
    ids = jnp.swapaxes(ids_NBSK, 0, 1).reshape(batch, n * steps, -1)
    logits = jnp.swapaxes(logits_NBSV, 0, 1).reshape(batch, n * steps, -1)
    return ids, logits


class MusicVAE(nnx.Module):
  """Encoder + decoder; tokens int (B, T, K) in, logits (B, T, sum V) out.

  encoder_input: 'one_hot' (the decoders' concatenated one-hots) or 'drum_roll' (one drum track
  read as the 9 classes hit plus a "no hit" bit, as Magenta's cat-drums configs do).
  forget_bias: added to every LSTM's forget gate (Magenta 1.0). sigma_epsilon: added to
  softplus(dense) for sigma (Magenta 0).
  """

  def __init__(self, *, vocab_sizes: Sequence[int], num_steps: int, z_dim: int,
               encoder_sizes: Sequence[int], decoder_sizes: Sequence[int],
               conductor_sizes: Sequence[int] = (), bar_steps: int = 16,
               encoder_input: str = 'one_hot', forget_bias: float = ORIGINAL_FORGET_BIAS,
               sigma_epsilon: float = 0.0, rngs: nnx.Rngs):
    self.vocab_sizes = tuple(vocab_sizes)
    self.num_steps, self.z_dim = num_steps, z_dim
    if encoder_input not in ENCODER_INPUTS:
      raise ValueError(f'encoder_input must be one of {ENCODER_INPUTS}, got {encoder_input!r}')
    if encoder_input == 'drum_roll' and len(self.vocab_sizes) != 1:
      raise ValueError('encoder_input drum_roll reads one drum track')
    self.encoder_input = encoder_input
    in_features = (self.vocab_sizes[0].bit_length() if encoder_input == 'drum_roll' else
                   sum(vocab_sizes))
    self.encoder = BiLSTMEncoder(in_features, encoder_sizes, z_dim, forget_bias=forget_bias,
                                 sigma_epsilon=sigma_epsilon, rngs=rngs)
    if conductor_sizes:
      if num_steps % bar_steps:
        raise ValueError(f'num_steps {num_steps} is not a multiple of bar_steps {bar_steps}')
      self.decoder = HierarchicalDecoder(vocab_sizes, conductor_sizes, decoder_sizes, z_dim,
                                         num_steps // bar_steps, bar_steps,
                                         forget_bias=forget_bias, rngs=rngs)
    else:
      self.decoder = FlatDecoder(vocab_sizes, decoder_sizes, z_dim, num_steps,
                                 forget_bias=forget_bias, rngs=rngs)

  def one_hot(self, tokens_BTK: jax.Array) -> jax.Array:
    return one_hot_tracks(tokens_BTK, self.vocab_sizes)

  def encoder_inputs(self, tokens_BTK: jax.Array) -> jax.Array:
    """What the encoder reads (B, T, I): the one-hots, or the drum roll."""
    if self.encoder_input == 'drum_roll':
      return drum_roll(tokens_BTK[..., 0], self.vocab_sizes[0].bit_length() - 1)
    return self.one_hot(tokens_BTK)

  def encode(self, tokens_BTK: jax.Array) -> tuple[jax.Array, jax.Array]:
    """-> (mu, sigma), each (B, Z)."""
    return self.encoder(self.encoder_inputs(tokens_BTK))

  def reconstruct_logits(self, z_BZ: jax.Array, tokens_BTK: jax.Array,
                         rng: jax.Array | None = None, p_sample: float | jax.Array = 0.0
                         ) -> jax.Array:
    """Teacher-forced logits (B, T, sum V), with scheduled sampling at rate p_sample."""
    return self.decoder.logits(z_BZ, self.one_hot(tokens_BTK), rng, p_sample)

  def sample(self, z_BZ: jax.Array, rng: jax.Array, temperature: float | jax.Array = 1.0,
             forced_BTK: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Decodes without teacher forcing -> (tokens int32 (B, T, K), logits (B, T, sum V))."""
    return self.decoder.sample(z_BZ, rng, temperature, forced_BTK)

  def __call__(self, tokens_BTK: jax.Array, rng: jax.Array, p_sample: float | jax.Array = 0.0
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """-> (logits, mu, sigma, z) with z drawn from q(z|x)."""
    mu, sigma = self.encode(tokens_BTK)
    z_key, dec_key = jax.random.split(rng)
    z = mu + sigma * jax.random.normal(z_key, mu.shape)
    return self.reconstruct_logits(z, tokens_BTK, dec_key, p_sample), mu, sigma, z


def num_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def inference_copy(model: MusicVAE, dtype: str) -> MusicVAE:
  """A copy of `model` for encoding and sampling inside a jitted function, its LSTM products in
  `dtype` ('float32' or 'bfloat16', common.precision.inference_dtype) whatever the model was
  trained with. The input model is left as it is.

  bfloat16: the LSTM kernels are cast (products accumulate in float32; gates, states and every
  other layer stay float32). Where bf16 products are fast the batched LSTM steps of encoding and
  sampling run much faster; inside jit, the cast happens once per call, outside the time loops.
  """
  graphdef, state = nnx.split(model)
  if dtype == 'bfloat16':
    flat = dict(nnx.to_flat_state(state))
    for path, var in flat.items():
      if 'cells' in path and path[-1] == 'kernel':
        flat[path] = var.replace(var[...].astype(jnp.bfloat16))
    state = nnx.from_flat_state(flat)
  copy = nnx.merge(graphdef, state)
  for _, module in nnx.iter_graph(copy):
    if isinstance(module, StackedLSTM):
      module.mixed_precision = False  # a float32 copy multiplies in float32
  return copy


def use_mixed_precision(model: nnx.Module) -> nnx.Module:
  """Makes every LSTM of `model` multiply with bf16 operands and float32 accumulation in the
  forward and backward passes (weights, gates, states and optimizer stay float32); returns it.

  Training with `config.mixed_precision`: on CPUs with AVX512-BF16 the train step of
  mel_2bar_small ran ~1.4x as fast at batch 64 and ~1.8x at batch 512 (make bench rows
  ..._mixed against the float32 rows, AMD EPYC, 2 cores); tests/musicvae/test_bf16.py checks the
  gradients against float32.
  """
  for _, module in nnx.iter_graph(model):
    if isinstance(module, StackedLSTM):
      module.mixed_precision = True
  return model
