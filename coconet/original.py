r"""Magenta's Coconet checkpoints -> our Coconet (used by experiments/import_weights.py).

  python -m experiments.import_weights --source=magenta --config=straight \
      --checkpoint=downloads/coconet_pretrained --workdir=runs/coconet_magenta

Magenta names each layer's variables model/conv{i}/...: a regular conv has `weights` [kh, kw, in,
out] (no bias: batch norm follows), a separable one `separable_conv2d/depthwise_kernel`
[kh, kw, in, 1], `separable_conv2d/pointwise_kernel` [1, 1, in, out] and `separable_conv2d/bias`;
every layer has `gamma` and `popmean`, `popvariance` [1, 1, 1, out] and `beta` [out].

--config names the architecture family; the number of layers and filters are read from the
checkpoint's variables. Where Magenta's hyperparameters come with the checkpoint (the `config`
YAML file Magenta writes beside it, or a fixture's meta/config_json), they set what the variables
cannot show: the dilation schedule (from crop_piece_len, dilate_time_only,
repeat_last_dilation_level), the batch-norm epsilon, num_initial_regular_conv_layers,
mask_indicates_context and use_residual; a family that contradicts them is refused.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

from flax import nnx
import ml_collections
import numpy as np

from common.errors import UserError
from common.weight_import import Variables, assign
from coconet import configs
from coconet import data
from coconet import model as model_lib


def _straight() -> ml_collections.ConfigDict:
  """The paper's model, Magenta's released checkpoint: straight 64 layers x 128, crop 64."""
  return configs.get_config('paper')


def _dilated_separable() -> ml_collections.ConfigDict:
  """The Bach-Doodle-style model: dilated, depthwise-separable after 2 regular convs (Magenta's
  num_initial_regular_conv_layers default), 5 dilation blocks (33 layers) x 128, crop 32."""
  return configs.get_config('doodle')


CONFIGS: dict[str, Callable[[], ml_collections.ConfigDict]] = {
    'straight': _straight,
    'dilated_separable': _dilated_separable,
}

# What a training checkpoint holds besides the model: Adam's slots and the counters.
_TRAINING_ONLY = re.compile(r'(.*/Adam(_1)?|beta[12]_power|global_step|learning_rate)$')


def _layer_count(variables: Variables) -> int:
  indices = {int(m.group(1)) for name in variables.arrays
             if (m := re.fullmatch(r'model/conv(\d+)/gamma', name))}
  if not indices:
    raise UserError(f'{variables.source}: no Coconet variables (model/conv<i>/gamma); is this a '
                    'Magenta Coconet checkpoint?')
  count = max(indices) + 1
  missing = sorted(set(range(count)) - indices)
  if missing:
    raise UserError(f'{variables.source}: no variable \'model/conv{missing[0]}/gamma\'')
  return count


def recorded_hparams(source: str) -> dict[str, Any] | None:
  """Magenta's hyperparameters that came with a checkpoint, or None: a fixture .npz's
  meta/config_json, else the `config` YAML file in the checkpoint's folder."""
  if source.endswith('.npz'):
    with np.load(source) as npz:
      if 'meta/config_json' not in npz.files:
        return None
      return json.loads(str(npz['meta/config_json'])).get('hparams')
  folder = source if os.path.isdir(source) else os.path.dirname(source)
  path = os.path.join(folder, 'config')
  if not os.path.isfile(path):
    return None
  import yaml  # pylint: disable=g-import-not-at-top
  try:
    with open(path) as f:
      record = yaml.safe_load(f)
  except (OSError, yaml.YAMLError) as e:
    raise UserError(f'{path}: cannot read Magenta\'s hyperparameters ({e})') from None
  return record if isinstance(record, dict) else None


def apply_hparams(config: ml_collections.ConfigDict, hparams: dict[str, Any], source: str
                  ) -> None:
  """Sets `config` from Magenta's hyperparameters; UserError for a family that contradicts them or
  a setting this model does not reproduce."""
  m = config.model
  architecture = hparams.get('architecture', 'straight')
  separable = bool(hparams.get('use_sep_conv', False))
  if (architecture, separable) != (m.architecture, bool(m.separable)):
    fits = [name for name, make in CONFIGS.items()
            if (make().model.architecture, bool(make().model.separable)) == (architecture,
                                                                              separable)]
    hint = f'; use --config={fits[0]}' if fits else ''
    raise UserError(f'{source}: the checkpoint is architecture={architecture} use_sep_conv='
                    f'{separable}, not what this --config builds{hint}')
  unsupported = [
      ('separate_instruments', hparams.get('separate_instruments', True) is not True),
      ('batch_norm', hparams.get('batch_norm', True) is not True),
      ('num_pointwise_splits', int(hparams.get('num_pointwise_splits', 1)) != 1),
      ('sep_conv_depth_multiplier', int(hparams.get('sep_conv_depth_multiplier', 1)) != 1),
      ('min_pitch', int(hparams.get('min_pitch', data.MIN_PITCH)) != data.MIN_PITCH),
      ('max_pitch', int(hparams.get('max_pitch', data.MAX_PITCH)) != data.MAX_PITCH),
      ('num_instruments', int(hparams.get('num_instruments', 4)) != data.NUM_INSTRUMENTS)]
  for name, differs in unsupported:
    if differs:
      raise UserError(f'{source}: {name}={hparams.get(name)!r} is not supported by this Coconet')
  m.batch_norm_epsilon = float(hparams.get('batch_norm_variance_epsilon', 1e-7))
  m.num_initial_regular_conv_layers = int(hparams.get('num_initial_regular_conv_layers', 2))
  m.mask_indicates_context = bool(hparams.get('mask_indicates_context', False))
  m.residual = 'post_relu' if hparams.get('use_residual', True) else 'none'
  if hparams.get('crop_piece_len'):
    config.crop_len = int(hparams['crop_piece_len'])
  if architecture == 'dilated':
    m.dilation = model_lib.magenta_dilation_block(
        config.crop_len, dilate_time_only=bool(hparams.get('dilate_time_only', False)),
        repeat_last_dilation_level=bool(hparams.get('repeat_last_dilation_level', False)))


def import_model(variables: Variables, config: ml_collections.ConfigDict) -> nnx.Module:
  """Our Coconet (eval mode) holding the checkpoint's weights and batch-norm statistics.

  Sets config.model.num_layers and num_filters from the variables (and, where the checkpoint
  brought Magenta's hyperparameters, the settings recorded_hparams gives) in place, so the
  config written beside the weights builds this model.
  """
  hparams = recorded_hparams(variables.source)
  if hparams is not None:
    apply_hparams(config, hparams, variables.source)
  num_layers = _layer_count(variables)
  if num_layers < 4:
    raise UserError(f'{variables.source}: {num_layers} conv layers; Coconet has at least 4')
  config.model.num_layers = num_layers
  config.model.num_filters = int(variables.get('model/conv0/gamma').shape[-1])
  if config.model.architecture == 'dilated':
    config.model.dilation = [list(rate) for rate in config.model.dilation]
  model = model_lib.build_model(config.model, nnx.Rngs(0))
  source = variables.source
  for i, layer in enumerate(model.layers):
    scope = f'model/conv{i}'
    if layer.depthwise is not None:
      name = f'{scope}/separable_conv2d/depthwise_kernel'
      # Magenta's [kh, kw, C, 1] is nnx's grouped layout [kh, kw, 1, C] transposed.
      assign(layer.depthwise.kernel, np.swapaxes(variables.get(name), 2, 3), name, source)
      name = f'{scope}/separable_conv2d/pointwise_kernel'
      assign(layer.conv.kernel, variables.get(name), name, source)
      name = f'{scope}/separable_conv2d/bias'
      if layer.bias is not None:
        assign(layer.bias, variables.get(name), name, source)
    else:
      name = f'{scope}/weights'
      assign(layer.conv.kernel, variables.get(name), name, source)
    norm = layer.norm
    for ours, theirs in ((norm.scale, 'gamma'), (norm.bias, 'beta'), (norm.mean, 'popmean'),
                         (norm.var, 'popvariance')):
      name = f'{scope}/{theirs}'
      assign(ours, variables.get(name).reshape(-1), name, source)
  unused = variables.unused(ignore=lambda n: bool(_TRAINING_ONLY.fullmatch(n)))
  if unused:
    raise UserError(f'{source}: variable {unused[0]!r} ({len(unused)} in all) has no place in '
                    f'this config\'s model; is --config right?')
  model.eval()
  return model
