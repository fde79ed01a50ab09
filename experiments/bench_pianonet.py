"""PianoNet generation speed: Fast-WaveNet queues against the naive full recompute.

pianonet/paper: the 'paper' model (4 blocks x 12 layers, 316k parameters, receptive field 16,381
key states) with random weights. pianonet/paper_released: the original's released r5p3 weights
(pretrained/pianonet_paper, 64 keys), continuing real music (MAESTRO) as generate does. Real time
at 72 keys x 48 steps/s is 1 / 3456 s = 0.29 ms per key state (0.33 ms at 64 keys). On the
project's 2-core CPU (from the PianoNet issue) the original's numpy queue code takes 0.347 ms per
key state (1.2 s of compute per second of music, 1.4 s counting the queue fill) and its naive
path 148 ms per key state.
"""

from __future__ import annotations

import os

from flax import nnx
import jax
import numpy as np

from experiments import benchmarks as bench
from experiments import registry
from pianonet import configs
from pianonet import generate
from pianonet import model as model_lib

_GENERATED_SECONDS = 2.0   # music generated per timed fast call
_NAIVE_KEY_STATES = 16     # key states per timed naive call (each is a full receptive-field pass)


def _paper_model_and_rate():
  config = configs.get_config('paper')
  model = model_lib.build_model(config, nnx.Rngs(0))
  key_states_per_second = config.num_keys * config.steps_per_second
  return model, config, key_states_per_second


def _seed(config, num_streams: int, full: bool) -> np.ndarray:
  """Random key states (down rate 4%) per stream: a full receptive field, or one state (then the
  queues start empty and nothing is filled)."""
  length = generate.seed_length(model_lib.receptive_field(config.model), config.num_keys)
  rng = np.random.default_rng(0)
  return (rng.random((num_streams, length if full else 1)) < 0.04).astype(np.uint8)


def _timed(fn, model, seed, num_steps: int, *, repeats: int, warmup: int) -> float:
  key = jax.random.key(0)
  return bench.median_seconds(lambda: bench.block(fn(model, seed, num_steps, key)),
                              repeats=repeats, warmup=warmup)


def _fast_result(name: str, model, config, streams: int, rate: float, *, repeats: int,
                 warmup: int, original: str = '') -> dict:
  """Steady-state stepping (empty queues) and, separately, the queue fill from a full seed."""
  num_steps = int(_GENERATED_SECONDS * rate)
  stepping = _timed(generate.generate_fast, model, _seed(config, streams, False), num_steps,
                    repeats=repeats, warmup=warmup)
  with_fill = _timed(generate.generate_fast, model, _seed(config, streams, True), num_steps,
                     repeats=repeats, warmup=warmup)
  ms_per_state = stepping / num_steps * 1e3
  compute_per_music = stepping / _GENERATED_SECONDS
  return bench.result(
      name, stepping, original=original,
      throughput=(f'{ms_per_state:.4f} ms/key state per stream step; '
                  f'{streams * _GENERATED_SECONDS / stepping:.1f} stream-s of music per s'),
      note=(f'{streams} stream(s) x {_GENERATED_SECONDS:g} s of music ({num_steps} key states): '
            f'{compute_per_music:.3f} s of compute per s of music, {(1e3 / rate) / ms_per_state:.1f}x'
            f' real time per stream step; {with_fill:.2f} s with the queue fill from a '
            f'{model_lib.receptive_field(config.model)}-state seed'),
      ms_per_key_state=ms_per_state, seconds_with_fill=with_fill)


def paper(repeats: int, warmup: int) -> list[dict]:
  model, config, rate = _paper_model_and_rate()
  one = _fast_result('pianonet/paper/fast_1_stream', model, config, 1, rate, repeats=repeats,
                     warmup=warmup, original='0.347 ms/key state; 1.2 s (1.4 s with fill) per s')
  many = _fast_result('pianonet/paper/fast_64_streams', model, config, 64, rate,
                      repeats=repeats, warmup=warmup)
  many['note'] += f'; {one["seconds"] * 64 / many["seconds"]:.1f}x the one-stream rate'

  naive = _timed(generate.generate_naive, model, _seed(config, 1, True), _NAIVE_KEY_STATES,
                 repeats=min(repeats, 3), warmup=min(warmup, 1))
  naive_ms = naive / _NAIVE_KEY_STATES * 1e3
  naive_result = bench.result(
      'pianonet/paper/naive_1_stream', naive, original='148 ms/key state',
      throughput=f'{naive_ms:.1f} ms/key state',
      note=(f'{_NAIVE_KEY_STATES} key states, each a full pass over the receptive field; '
            f'fast is {naive_ms / one["ms_per_key_state"]:.0f}x faster'),
      ms_per_key_state=naive_ms)
  return [one, many, naive_result]


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASED = os.path.join(_REPO, 'pretrained', 'pianonet_paper')
# A real key-state stream: 278 time steps of a MAESTRO performance (72 keys from MIDI 31).
_MAESTRO_STREAM = os.path.join(_REPO, 'tests', 'fixtures', 'originals', 'pianonet_r5p3.npz')


def paper_released(repeats: int, warmup: int) -> list[dict]:
  """One stream continuing 5.8 s of MAESTRO (silence before it fills the receptive field) with
  the released r5p3 weights: the queue fill from the seed plus 2 s of new music, and the key-down
  rate of what was generated."""
  from common import configs as common_configs  # pylint: disable=g-import-not-at-top
  config = common_configs.read_config(RELEASED)
  model = registry.load_model(config, RELEASED)
  rate = config.num_keys * config.steps_per_second
  with np.load(_MAESTRO_STREAM) as npz:
    roll_TK = npz['input/key_states'][0, :, 0].astype(np.uint8).reshape(-1, 72)
  # The stream's keys are MIDI 31..102; the model's window lies inside them.
  low = config.lowest_key - 31
  stream_N = roll_TK[:, low:low + config.num_keys].reshape(-1)
  seed_BT = generate.seed_from_sequence(stream_N, len(stream_N), model.receptive_field,
                                        config.num_keys)[None]
  num_steps = int(_GENERATED_SECONDS * rate)
  thresholds = tuple(config.edge_thresholds)

  def call():
    return bench.block(generate.generate_fast(model, seed_BT, num_steps, jax.random.key(0),
                                              thresholds=thresholds))

  seconds = bench.median_seconds(call, repeats=repeats, warmup=warmup)
  down_rate = float(np.asarray(call()).mean())
  ms_per_state = seconds / num_steps * 1e3
  return [bench.result(
      'pianonet/paper_released/fast_1_stream', seconds, original='0.347 ms/key state (random '
      'weights, numpy queues)',
      throughput=f'{ms_per_state:.4f} ms/key state, queue fill included',
      note=(f'released r5p3 weights, 1 stream: {len(stream_N)}-state MAESTRO seed then '
            f'{_GENERATED_SECONDS:g} s of music ({num_steps} key states); '
            f'{seconds / _GENERATED_SECONDS:.3f} s of compute per s of music; generated '
            f'key-down rate {down_rate:.4f} (seed {float(stream_N.mean()):.4f})'),
      ms_per_key_state=ms_per_state, generated_down_rate=down_rate)]


# The benchmarks of this module by name (experiments/benchmark.py lists every module's).
BENCHMARKS = {
    'pianonet/paper': paper,
    'pianonet/paper_released': paper_released,
}
