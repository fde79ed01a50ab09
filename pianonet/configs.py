"""PianoNet configs: 'tiny' (tests, seconds on a CPU), 'small' (about an hour on a CPU), 'paper'.

  python -m experiments.train --config=pianonet/configs.py:small --workdir=runs/pianonet_small
  python -m experiments.train --config=pianonet/configs.py:paper --workdir=runs/pianonet \\
      --config.data_dir=../shared/data/maestro-v2

'paper' is the layout of Angsten's released r5p3 model: 4 blocks x 12 layers of kernel-2 causal
convs with widths 4, 6, ..., 98 (316,139 parameters), receptive field 16,381 key states, on the
original's largest data set's window, 72 keys from MIDI 31 (~4.7 s at 48 steps/s; r5p3 itself
was trained on 64 keys from 34: pianonet/original.py), 24 time steps predicted per sample.

Every variant encodes music as the original does (pianonet/data.py: 24 steps per beat of the
tempo map, no pedal, its rules for re-struck keys, trimming on all 128 keys, all copies stretched
by nearest-neighbour resampling, validation stretched too, silence after each copy). The earlier
encoding of this codebase is one flag per rule away: --config.time_grid=seconds
--config.sustain=True --config.note_rules=separate --config.note_end=round --config.trim=window
--config.stretch_method=notes --config.unstretched_copy=True --config.stretch_validation=False
--config.padding=around (runs recorded before these flags existed read them so:
common/configs.py _LEGACY_DEFAULTS).
"""

import ml_collections
from ml_collections import config_dict

from common import configs


def widths(start: int, step: int, num_layers: int) -> list[int]:
  """Layer widths growing linearly: start, start + step, ..."""
  return [start + step * i for i in range(num_layers)]


def _model(block_layers: list[int], width_start: int, width_step: int,
           kernel_size: int = 2) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.kernel_size = kernel_size
  m.block_layers = block_layers
  m.widths = widths(width_start, width_step, sum(block_layers))
  # None: the logit of config.train_key_down_rate, the training sequence's key-down rate that
  # pianonet.train.get_task measures when a run starts, so that training starts from the data's
  # base rate. The original set a constant -3.2 (rate 0.039) whatever its data's rate was.
  m.output_bias_init = config_dict.placeholder(float)
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
  # Encoding (pianonet/data.py): the original's rules.
  c.time_grid = 'beats'      # 'beats': steps_per_beat per beat of the tempo map; 'seconds'
  c.steps_per_beat = 24
  c.steps_per_second = 48.0  # the 'seconds' grid; padding, generated seconds, decoded MIDI
  c.num_keys = 72
  c.lowest_key = 31
  c.sustain = False          # the original reads note-offs only
  c.note_rules = 'original'  # or 'separate': every note its own run of >= 1 step
  c.note_end = 'floor'       # or 'round'
  c.trim = 'all_keys'        # silence trimmed on the 128-key roll, or 'window'
  c.pad_seconds = (4.0, 6.0)
  c.padding = 'after'        # silence after each copy; 'around': before the first one too
  # Time-stretch augmentation (pianonet/data.py: Augmentation).
  c.stretch_copies = 5       # stretched copies per song (the original's 72-key data set: 5)
  c.stretch_range = (0.85, 1.2)
  c.stretch_method = 'rows'  # nearest-neighbour rows, or 'notes': every note kept
  c.unstretched_copy = False  # the original keeps only the stretched copies
  c.stretch_validation = True  # the original stretches its validation songs too
  c.num_synthetic = 8        # songs per training split of dataset='synthetic'
  c.train_key_down_rate = config_dict.placeholder(float)  # measured when a run starts
  # Training.
  c.batch_size = 32
  c.num_train_steps = 200_000
  c.learning_rate = 1.5e-4
  # bf16 convolutions with f32 parameters and optimizer state (for accelerators; the loss and the
  # output layer stay f32).
  c.mixed_precision = False
  c.grad_clip_norm = 1.0
  c.predicted_steps = 24     # the loss covers the last predicted_steps * num_keys positions
  c.log_every_steps = 100
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000
  c.sample_every_steps = 10_000
  c.num_eval_windows = 256
  c.window_chunk_steps = 48  # training windows end in one random step of each such chunk
  # Training windows gathered a batch at once (one numpy indexing per batch): the per-window
  # pipeline cannot feed an accelerator (experiments/bench_scaling.py's input rows).
  c.batched_input = True
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
    c.steps_per_second = 8.0
    c.steps_per_beat = 4       # 8 steps per second at the synthetic songs' 120 qpm
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
    c.model = _model([5, 5], 8, 0)
  return c
