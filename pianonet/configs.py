"""PianoNet configs: 'tiny' (tests, seconds on a CPU), 'small' (about an hour on a CPU), 'paper'.

  python -m experiments.train --config=pianonet/configs.py:small --workdir=runs/pianonet_small
  python -m experiments.train --config=pianonet/configs.py:paper --workdir=runs/pianonet \\
      --config.data_dir=../shared/data/maestro-v2

'paper' is Angsten's largest shipped model: 4 blocks x 12 layers of kernel-2 causal convs with
widths 4, 6, ..., 98 (316,139 parameters), receptive field 16,381 key states (~4.7 s at 72 keys x
48 steps/s), 72 keys from MIDI 31, 24 time steps x 72 keys predicted per sample.
"""

import math

import ml_collections

from common import configs


def widths(start: int, step: int, num_layers: int) -> list[int]:
  """Layer widths growing linearly: start, start + step, ..."""
  return [start + step * i for i in range(num_layers)]


def _model(block_layers: list[int], width_start: int, width_step: int, kernel_size: int = 2,
           key_down_rate: float = 0.04) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.kernel_size = kernel_size
  m.block_layers = block_layers
  m.widths = widths(width_start, width_step, sum(block_layers))
  # The output starts at the data's base rate: logit(0.04) = -3.18 (the paper used -3.2).
  m.output_bias_init = round(math.log(key_down_rate / (1 - key_down_rate)), 3)
  # Not in the paper: one-hot of the next key's index as extra input channels.
  m.key_phase_input = False
  return m


VARIANTS = ('tiny', 'small', 'paper')


def get_config(variant: str = 'small') -> ml_collections.ConfigDict:
  """Returns the named variant ('tiny', 'small' or 'paper')."""
  if variant not in VARIANTS:
    raise configs.unknown_variant('pianonet', variant, VARIANTS)
  c = configs.add_common_settings(ml_collections.ConfigDict(), task='pianonet', variant=variant,
                                  dataset='maestro')
  c.cache_dir = '~/.cache/musicgen/pianonet'   # encoded sequences; '' disables the cache
  # Encoding.
  c.steps_per_second = 48.0
  c.num_keys = 72
  c.lowest_key = 31
  c.sustain = True
  c.pad_seconds = (4.0, 6.0)
  c.stretch_copies = 4       # stretched copies per training song (the paper used 4 to 10)
  c.stretch_range = (0.85, 1.2)
  # Training.
  c.batch_size = 32
  c.num_train_steps = 200_000
  c.learning_rate = 1.5e-4
  c.grad_clip_norm = 1.0
  c.predicted_steps = 24     # the loss covers the last predicted_steps * num_keys positions
  c.log_every_steps = 100
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000
  c.sample_every_steps = 10_000
  c.num_eval_windows = 256
  c.window_chunk_steps = 48  # training windows end in one random step of each such chunk
  # Generation (also used by the sample hook).
  c.sample_seconds = 4.0
  c.temperature = 1.0
  c.edge_thresholds = (1.0, 1.0, 0.4, 0.05, 0.05, 0.05, 0.03, 0.03)
  c.model = _model([12, 12, 12, 12], 4, 2)

  if variant == 'paper':
    pass
  elif variant == 'small':
    # Angsten's small window (64 keys from 34); receptive field 3,070 key states (~1 s).
    c.num_keys = 64
    c.lowest_key = 34
    c.max_pieces = 120
    c.stretch_copies = 2
    c.batch_size = 8
    c.num_train_steps = 4000
    c.learning_rate = 2e-4
    c.predicted_steps = 8
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.sample_every_steps = 2000
    c.num_eval_windows = 64
    c.sample_seconds = 2.0
    c.model = _model([10, 10, 10], 4, 2)
  elif variant == 'tiny':
    c.dataset = 'synthetic'
    c.cache_dir = ''
    c.max_pieces = 8
    c.steps_per_second = 8.0
    c.num_keys = 16
    c.lowest_key = 60
    c.pad_seconds = (0.5, 1.0)
    c.stretch_copies = 1
    c.batch_size = 4
    c.num_train_steps = 20
    c.learning_rate = 2e-3
    c.predicted_steps = 4
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 10
    c.sample_every_steps = 10
    c.num_eval_windows = 6
    c.window_chunk_steps = 8
    c.sample_seconds = 1.0
    c.edge_thresholds = (1.0, 0.4)
    # Receptive field 63 (~4 steps). Equal widths: few distinct shapes, so little to compile.
    c.model = _model([5, 5], 8, 0, key_down_rate=0.12)
  return c
