r"""Coconet configs: get_config('tiny' | 'small' | 'doodle' | 'paper').

  # seconds on a CPU; a smoke test (bach_music21 from music21's bundled corpus, 20 chorales)
  python -m experiments.train --config=coconet/configs.py:tiny --workdir=runs/coconet_tiny
  # about an hour on a 2-core CPU and learns (JSB chorales, dilated separable 15 x 48)
  python -m experiments.train --config=coconet/configs.py:small --workdir=runs/coconet_small
  # the Bach Doodle model: 33 layers x 128, depthwise-separable and dilated
  python -m experiments.train --config=coconet/configs.py:doodle --workdir=runs/coconet_doodle
  # the published model: 64 layers x 128, straight convs, crop 64, batch 20 (wants a GPU)
  python -m experiments.train --config=coconet/configs.py:paper --workdir=runs/coconet_paper

Then
  python -m experiments.generate --workdir=runs/coconet_small --task=harmonize \
      --pitches="67,67,69,71,72,71,69,67" --out_dir=out/
  python -m experiments.evaluate --workdir=runs/coconet_small --split=test --max_pieces=10

Override any key on the command line, e.g. --config.model.num_layers=24 --config.mask=bernoulli.
The settings every model shares (dataset, data_dir, max_pieces, seed, batch_size, ...) are
described in common/configs.py.

Learning rate: the original code used Adam at 2^-4 = 0.0625 for the 64-layer model ('paper' keeps
it: batch norm everywhere makes the net insensitive to weight scale, but it is far above the usual
Adam range; if the loss goes non-finite, the loop stops and --config.learning_rate=1e-3 is the safe
choice). Adam is invariant to the scale of the loss, so our rescaled loss (a sum over the piece's
variables) needs no different rate than the original's. The original's "halve the rate after 5
evaluations without improvement" is not reproduced (the shared loop has no plateau schedule).
"""

import ml_collections
from ml_collections import config_dict

from common import configs

VARIANTS = ('tiny', 'small', 'doodle', 'paper')


def _base(variant: str) -> ml_collections.ConfigDict:
  config = configs.add_common_settings(ml_collections.ConfigDict(), task='coconet',
                                       variant=variant, dataset='jsb')
  config.batch_size = 20
  config.num_train_steps = 100_000
  config.learning_rate = 2**-4
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.sample_every_steps = 5000
  # bf16 products in the convolutions, float32 accumulation, parameters, batch norm and optimizer
  # state (for accelerators, and CPUs with fast bf16).
  config.mixed_precision = False
  config.crop_len = 64
  config.mask = 'orderless'  # or 'bernoulli'
  # Magenta's objective (the cross-entropy of every variable, rescaled), or 'magenta_mask',
  # 'rescaled_masked' (this code's earlier loss); coconet/train.py says what each is.
  config.loss = 'magenta_total'
  config.transpose_max = 0  # random transposition augmentation, +- semitones (0 = off)
  config.eval_split = 'valid'
  config.eval_max_windows = config_dict.placeholder(int)  # None = the whole eval split
  config.sample_len = 64  # 16th steps in the periodic samples
  config.sample_gibbs_steps = config_dict.placeholder(int)  # None = T * I (the paper's default)

  config.model = ml_collections.ConfigDict()
  config.model.architecture = 'straight'  # or 'dilated'
  config.model.num_layers = 64
  config.model.num_filters = 128
  config.model.separable = False
  # (time, pitch) rates the middle 3x3 layers cycle through when architecture == 'dilated': one
  # dilation block of Magenta's lib_hparams.Dilated for crops of 32 steps
  # (model.magenta_dilation_block(32)); num_layers = 1 + 6 * blocks + 2 is Magenta's
  # num_dilation_blocks = blocks.
  config.model.dilation = ((1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (16, 32))
  # As Magenta's lib_graph computes (coconet/model.py says what each does; the defaults are the
  # original's, older runs keep what they were trained with through common/configs.py):
  config.model.residual = 'post_relu'  # or 'pre_relu_sum' (this code's before), 'none'
  config.model.batch_norm_epsilon = 1e-7
  config.model.num_initial_regular_conv_layers = 2  # separable convs start at this layer
  config.model.separable_bias = True  # tf.layers.separable_conv2d's bias
  config.model.separable_final_layers = True  # the two 2x2 layers are separable too
  config.model.mask_indicates_context = False  # True: the mask channels are 1 - mask
  return config


def get_config(variant: str = 'small') -> ml_collections.ConfigDict:
  """A named Coconet config (see the module docstring for the commands)."""
  if variant not in VARIANTS:
    raise configs.unknown_variant('coconet', variant, VARIANTS)
  config = _base(variant)
  if variant == 'tiny':
    config.dataset = 'bach_music21'
    config.max_pieces = 20
    config.batch_size = 4
    config.num_train_steps = 20
    config.learning_rate = 1e-3
    config.log_every_steps = 5
    config.eval_every_steps = 10
    config.checkpoint_every_steps = 10
    config.sample_every_steps = 20
    config.crop_len = 16
    config.eval_max_windows = 8
    config.sample_len = 16
    config.sample_gibbs_steps = 8
    config.model.num_layers = 4
    config.model.num_filters = 16
  elif variant == 'small':
    # About an hour on a 2-core CPU (10k steps). Separable convs pay off on a CPU from ~48 filters
    # up (with our shift-based depthwise conv; XLA's grouped conv is slow).
    config.batch_size = 8
    config.num_train_steps = 10_000
    config.learning_rate = 1e-3
    config.crop_len = 32
    config.transpose_max = 3
    config.eval_max_windows = 200
    config.sample_len = 32
    config.sample_gibbs_steps = 64
    config.model.architecture = 'dilated'
    config.model.num_layers = 15  # 2 dilation blocks
    config.model.num_filters = 48
    config.model.separable = True
  elif variant == 'doodle':
    config.crop_len = 32
    config.learning_rate = 1e-3
    config.sample_len = 32
    config.model.architecture = 'dilated'
    config.model.num_layers = 33  # 5 dilation blocks
    config.model.num_filters = 128
    config.model.separable = True
  return config
