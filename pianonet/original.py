r"""Imports the original PianoNet's released Keras models (angsten/pianonet, MIT licence).

  python -m experiments.import_weights --source=pianonet --config=r5p3 \
      --checkpoint=../shared/models/pianonet_original/r5p3_300kparams_4_blocks_12_12_12_12_model \
      --workdir=runs/pianonet_r5p3

The checkpoint is a Keras SavedModel folder (its variables/ are read without TensorFlow; the
variables are named layer_with_weights-<i>/{kernel,bias}) or a fixture .npz with the Keras layer
names conv1d, conv1d_1, ... (tests/fixtures/originals). Both list the Conv1D layers in model order:
the dilated kernel-2 convs, then the 1x1 output conv. A Keras Conv1D kernel is [width, in, out]
with tap 0 on x[t - d] and tap 1 on x[t], the layout of our causal nnx.Conv, so it is copied as is.

The original model is `Conv1D(padding='valid')` layers with ELU, then Conv1D(1, 1) and a sigmoid:
ours with per-layer causal padding equals it wherever every output sees a whole receptive field of
input (see tests/pianonet/test_original.py); the original's training windows and our
`model(..., num_outputs=...)` both ensure that.
"""

from __future__ import annotations

from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import weight_import
from common.errors import UserError
from pianonet import configs
from pianonet import model as model_lib

# r5p3_300kparams_4_blocks_12_12_12_12_model: 4 blocks x 12 layers, widths 4, 6, ..., 98;
# receptive field 16,381 key states (256 steps of 64 keys, less 3), 316,139 parameters. Its key
# window is written nowhere in the original's repository; it is the 64 keys from MIDI 34 of the
# original's small and medium data sets: on MAESTRO validation it scores 0.0200 nats per key
# state there against 0.151 with micro_1's 72 keys from 31, worse than a constant prediction
# (docs/pianonet.md has the commands).
R5P3_BLOCK_LAYERS = [12, 12, 12, 12]
R5P3_WIDTHS = configs.widths(4, 2, 48)
R5P3_KEYS = (34, 64)
# micro_1: blocks of 13, 11, 8 and 4 layers; widths as its weights have them; receptive field
# 10,509 key states, 172,303 parameters; 72 keys from MIDI 31, which the serving code, made for
# it, reads (app.py:101-104).
MICRO_1_KEYS = (31, 72)
MICRO_1_BLOCK_LAYERS = [13, 11, 8, 4]
MICRO_1_WIDTHS = [2, 4, 6, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                  19, 20, 21, 22, 23, 24, 25, 26, 28, 30, 32,
                  34, 36, 40, 44, 52, 60, 72, 84,
                  100, 116, 132, 156]


def _original_config(name: str, block_layers: list[int], widths: list[int],
                     keys: tuple[int, int], learning_rate: float) -> ml_collections.ConfigDict:
  """The 'paper' config (the original's encoding, 24 steps per beat) with the released model's
  key window (lowest MIDI pitch, number of keys), layers and saved optimizer's learning rate
  (for fine-tuning)."""
  c = configs.get_config('paper')
  c.variant = name
  c.lowest_key, c.num_keys = keys
  c.learning_rate = learning_rate
  c.model.block_layers = list(block_layers)
  c.model.widths = list(widths)
  c.model.output_bias_init = model_lib.ORIGINAL_OUTPUT_BIAS  # what the original started from
  return c


def r5p3_config() -> ml_collections.ConfigDict:
  return _original_config('r5p3', R5P3_BLOCK_LAYERS, R5P3_WIDTHS, R5P3_KEYS, 1e-4)


def micro_1_config() -> ml_collections.ConfigDict:
  return _original_config('micro_1', MICRO_1_BLOCK_LAYERS, MICRO_1_WIDTHS, MICRO_1_KEYS,
                          2.5e-5)


CONFIGS: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    'r5p3': r5p3_config,
    'micro_1': micro_1_config,
}


def _is_bookkeeping(name: str) -> bool:
  """Optimizer slots and counters, Keras metrics: not part of the function the model computes."""
  return ('.OPTIMIZER_SLOT' in name or name.startswith(('optimizer/', 'keras_api/'))
          or name in ('save_counter/.ATTRIBUTES/VARIABLE_VALUE', '_CHECKPOINTABLE_OBJECT_GRAPH'))


def _weight_names(variables: weight_import.Variables) -> Callable[[int, str], str]:
  """(index of the Conv1D layer, 'kernel' | 'bias') -> the variable's name in this source."""
  if any(name.startswith('layer_with_weights-') for name in variables.arrays):
    return lambda i, what: f'layer_with_weights-{i}/{what}/.ATTRIBUTES/VARIABLE_VALUE'
  return lambda i, what: f'conv1d{f"_{i}" if i else ""}/{what}'


def _unset_model(config: ml_collections.ConfigDict) -> nnx.Module:
  """The model of `config` with zeros (numpy) for weights: its shapes without the cost of random
  initialisation, which compiles one initialiser per distinct shape (tens of seconds here)."""
  abstract = nnx.eval_shape(lambda: model_lib.build_model(config, nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  return nnx.merge(graphdef, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state))


def import_model(variables: weight_import.Variables,
                 config: ml_collections.ConfigDict) -> nnx.Module:
  """Our PianoNet of `config` (eval mode) with every weight of the original's model."""
  model = _unset_model(config)
  name = _weight_names(variables)
  layers = list(model.convs) + [model.output]
  for i, conv in enumerate(layers):
    for what, variable in (('kernel', conv.kernel), ('bias', conv.bias)):
      weight_import.assign(variable, variables.get(name(i, what)), name(i, what), variables.source)
  unused = variables.unused(ignore=_is_bookkeeping)
  if unused:
    raise UserError(f'{variables.source}: variable {unused[0]!r} is not used by the '
                    f'{config.get("variant")} config ({len(unused)} unused); the checkpoint has '
                    'more layers than this --config')
  nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model)))
  model.eval()
  return model
