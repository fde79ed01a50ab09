"""PianoNet generation: continue a seed one key state at a time by Bernoulli sampling.

Two paths draw the same random numbers and so produce the same key states:
  generate_fast   Fast-WaveNet queues (common.fast_conv): O(layers) per key state, one jitted scan.
  generate_naive  the reference: recompute the whole receptive field for every key state.

Edge aversion (Angsten 2020): the net likes to wander off the ends of the key window, so for a key
at distance d from the nearer edge, a probability below thresholds[d] becomes 0.

`generate_pieces(model, config, request)` is the generation entry (common.generation).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Sequence

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import fast_conv
from common import generation
from common import midi
from common.errors import UserError
from pianonet import data

TASKS = ('continue',)
DEFAULT_THRESHOLDS = (1.0, 1.0, 0.4, 0.05, 0.05, 0.05, 0.03, 0.03)


def edge_threshold_table(num_keys: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
                         ) -> np.ndarray:
  """(num_keys,) float32: thresholds[d] for a key at distance d from the nearer edge, else 0."""
  thresholds = list(thresholds)
  k_K = np.arange(num_keys)
  distance_K = np.minimum(k_K, num_keys - 1 - k_K)
  table_K = np.zeros(num_keys, np.float32)
  near = distance_K < len(thresholds)
  table_K[near] = np.asarray(thresholds, np.float32)[distance_K[near]] if thresholds else 0
  return table_K


def apply_edge_aversion(p_B: jax.Array, key_index_B: jax.Array, table_K: jax.Array) -> jax.Array:
  """p := 0 where p < table[key]; keys away from the edges (table 0) are untouched."""
  return jnp.where(p_B < table_K[key_index_B], 0.0, p_B)


def key_down_probability(logits_B: jax.Array, temperature: float) -> jax.Array:
  """sigmoid(logits / temperature); temperature 0 is greedy (1 where logits > 0)."""
  if temperature == 0:
    return (logits_B > 0).astype(jnp.float32)
  return jax.nn.sigmoid(logits_B.astype(jnp.float32) / temperature)


def sample_key_states(key: jax.Array, logits_B: jax.Array, key_index: jax.Array,
                      temperature: float, table_K: jax.Array) -> jax.Array:
  """Bernoulli draws (uint8 0/1) for one position in every stream."""
  p_B = key_down_probability(logits_B, temperature)
  p_B = apply_edge_aversion(p_B, jnp.broadcast_to(key_index, p_B.shape), table_K)
  return (jax.random.uniform(key, p_B.shape) < p_B).astype(jnp.uint8)


def _check_seed(seed_BT: jax.Array) -> None:
  if seed_BT.ndim != 2 or seed_BT.shape[1] < 1:
    raise UserError(f'pianonet: the seed must be (streams, >= 1 key states), got {seed_BT.shape}.')


@functools.partial(jax.jit, static_argnames=('graphdef', 'num_steps', 'temperature', 'first_key'))
def _fast(graphdef, params, seed_BT, rng, table_K, *, num_steps, temperature, first_key):
  model = nnx.merge(graphdef, params)
  num_keys = table_K.shape[0]
  history_BT = seed_BT[:, :-1]
  if history_BT.shape[1]:
    state, _ = model.prime(history_BT, first_key)
  else:
    state = model.init_state(seed_BT.shape[0])

  def step_fn(state, x_B, index):
    return model.step(state, x_B, (first_key + index) % num_keys)

  def sample_fn(key, logits_B, index):
    return sample_key_states(key, logits_B, (first_key + index + 1) % num_keys, temperature,
                             table_K)

  _, new_NB = fast_conv.scan_generate(step_fn, state, seed_BT[:, -1], num_steps, sample_fn, rng,
                                      start_index=seed_BT.shape[1] - 1)
  return new_NB.T


@functools.partial(jax.jit, static_argnames=('graphdef', 'num_steps', 'temperature', 'first_key'))
def _naive(graphdef, params, seed_BT, rng, table_K, *, num_steps, temperature, first_key):
  model = nnx.merge(graphdef, params)
  num_keys = table_K.shape[0]
  layers = model.layers()
  field = fast_conv.receptive_field(layers)
  seed_len = seed_BT.shape[1]
  # window_BR holds the inputs of indices index - field + 1 .. index (zeros before index 0);
  # it starts one step before the seed's last state, which the first iteration appends.
  window_BR = jnp.pad(seed_BT[:, :-1], ((0, 0), (field, 0)))[:, -field:]

  def body(carry, i):
    window_BR, x_B = carry
    index = seed_len - 1 + i
    window_BR = jnp.concatenate([window_BR[:, 1:], x_B[:, None]], axis=1)
    features = model.features(window_BR, (first_key + index - field + 1) % num_keys)
    num_pad_B = jnp.full((x_B.shape[0],), jnp.maximum(field - 1 - index, 0))
    logits_B = fast_conv.forward(layers, features, num_pad_B)[:, -1, 0]
    x_next = sample_key_states(jax.random.fold_in(rng, index + 1), logits_B,
                               (first_key + index + 1) % num_keys, temperature, table_K)
    return (window_BR, x_next), x_next

  _, new_NB = jax.lax.scan(body, (window_BR, seed_BT[:, -1]), jnp.arange(num_steps))
  return new_NB.T


def _generate(fn, model, seed_BT, num_steps, rng, temperature, thresholds, first_key):
  seed_BT = jnp.asarray(seed_BT, jnp.uint8)
  _check_seed(seed_BT)
  graphdef, params = nnx.split(model)
  table_K = jnp.asarray(edge_threshold_table(model.num_keys, thresholds))
  return fn(graphdef, params, seed_BT, rng, table_K, num_steps=int(num_steps),
            temperature=float(temperature), first_key=int(first_key))


def generate_fast(model: nnx.Module, seed_BT: Any, num_steps: int, rng: jax.Array, *,
                  temperature: float = 1.0, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                  first_key: int = 0) -> jax.Array:
  """Continues each seed row by num_steps key states with Fast-WaveNet queues -> uint8 (B, N).

  seed_BT: key states (B, T >= 1), seed_BT[:, 0] being key `first_key`. Same rng, same result as
  generate_naive.
  """
  return _generate(_fast, model, seed_BT, num_steps, rng, temperature, thresholds, first_key)


def generate_naive(model: nnx.Module, seed_BT: Any, num_steps: int, rng: jax.Array, *,
                   temperature: float = 1.0, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                   first_key: int = 0) -> jax.Array:
  """Reference path: a full pass over the receptive field per key state -> uint8 (B, N)."""
  return _generate(_naive, model, seed_BT, num_steps, rng, temperature, thresholds, first_key)


def seed_length(receptive_field: int, num_keys: int) -> int:
  """A receptive field rounded up to whole time steps."""
  return -(-receptive_field // num_keys) * num_keys


def seed_from_sequence(keys_N: np.ndarray, end: int, receptive_field: int, num_keys: int
                       ) -> np.ndarray:
  """The receptive field (in whole time steps) of keys_N that ends at the time step of `end`."""
  end = min(end, len(keys_N))
  return data.window(keys_N, end - end % num_keys, seed_length(receptive_field, num_keys))


def seed_from_notes(seq: Any, enc: data.Encoding, receptive_field: int, seconds: float | None, *,
                    name: str = 'the seed') -> np.ndarray:
  """The first `seconds` of a piece (all of it if None) as key states, with silence in front so
  that the seed fills a receptive field (training windows also start in silence); UserError
  naming `name` when no note fits the key window."""
  midi.pitched_notes(seq, name)
  roll_TK, stats = data.sequence_to_roll(seq, enc, first_beat_at_zero=True)
  if not roll_TK.any():
    keys = f'MIDI {enc.lowest_key}..{enc.lowest_key + enc.num_keys - 1}'
    inside = stats.notes_in - stats.out_of_range
    if inside:
      grid = (f'{enc.steps_per_beat} per beat' if enc.time_grid == 'beats' else
              f'{enc.steps_per_second:g} per second')
      raise UserError(f'{name}: none of its {inside} notes inside the key window ({keys}) lasts '
                      f'a whole step of the grid ({grid}).')
    raise UserError(f'{name}: no notes inside the key window ({keys}; '
                    f'{stats.out_of_range} notes outside).')
  if seconds is not None:
    roll_TK = roll_TK[:max(1, int(round(seconds * enc.steps_per_second)))]
  keys_N = data.flatten(roll_TK)
  length = max(seed_length(receptive_field, enc.num_keys), len(keys_N))
  return np.pad(keys_N, (length - len(keys_N), 0))


def keys_to_sequence(keys_N: np.ndarray, enc: data.Encoding) -> Any:
  """Key states -> NoteSequence without the leading silence of the seed pad."""
  roll_TK = data.unflatten(keys_N, enc.num_keys)
  active = np.nonzero(roll_TK.any(axis=1))[0]
  if len(active):
    roll_TK = roll_TK[active[0]:]
  return data.roll_to_sequence(roll_TK, enc)


def generate_pieces(model: nnx.Module, config: ml_collections.ConfigDict,
                    request: generation.Request, *, seed_seconds: float | None = 8.0,
                    naive: bool = False) -> list[generation.Piece]:
  """Continues a seed (request.inputs[0]'s first seed_seconds; none: silence) by
  request.seconds, num_samples times. Each piece holds the seed (without its silent pad) and what
  was generated after it."""
  request.task_or(TASKS, 'pianonet')
  if request.seconds <= 0:
    raise UserError(f'pianonet: --seconds must be > 0, got {request.seconds}')
  enc = data.encoding_from_config(config)
  field = model.receptive_field
  if request.inputs:
    name = request.input_names[0] if request.input_names else 'seed'
    seed_N = seed_from_notes(request.inputs[0], enc, field, seed_seconds, name=name)
  else:
    seed_N = np.zeros(seed_length(field, enc.num_keys), np.uint8)
  temperature = config.temperature if request.temperature is None else request.temperature
  num_new = int(round(request.seconds * enc.steps_per_second)) * enc.num_keys
  generate = generate_naive if naive else generate_fast
  start = time.perf_counter()
  new_BN = np.asarray(generate(model, np.tile(seed_N, (request.num_samples, 1)), num_new,
                               jax.random.key(request.seed), temperature=temperature,
                               thresholds=tuple(config.edge_thresholds)))
  elapsed = time.perf_counter() - start
  logging.info('pianonet: %d x %d key states in %.1f s (%.3f ms per key state per stream, '
               'including compilation)', request.num_samples, num_new, elapsed,
               1e3 * elapsed / num_new)
  return [generation.Piece(f'pianonet_{i:03d}',
                           keys_to_sequence(np.concatenate([seed_N, new_BN[i]]), enc))
          for i in range(request.num_samples)]
