"""What the four models' configs share: one style, the names of common settings, the run record.

Every model's configs.py has `get_config(variant)` for the variants its VARIANTS names, each at
least 'tiny' (tests), 'small' (a CPU run) and 'paper' (the paper's setting); options of a variant
are their own variants (e.g. cpword's 'small_remi'). The settings every model has carry the same
names at the top level of the config:

  task              the model package ('coconet', 'musicvae', 'pianonet', 'cpword')
  variant           the variant's name
  dataset           a data set name (common.datasets), or 'synthetic'
  data_dir          its folder (None: $MUSICGEN_DATA_DIR/<dataset>, else ../shared/data/<dataset>)
  max_pieces        use at most this many pieces per split (None: all)
  seed              the run's random seed
  batch_size, learning_rate, grad_clip_norm, num_train_steps, max_train_seconds, init_from
  log_every_steps, eval_every_steps, checkpoint_every_steps, sample_every_steps

A run's config is recorded in <workdir>/config.json; read_config reads it back, renaming the
settings of runs recorded before these names were shared.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import ml_collections
from ml_collections import config_dict

from common.errors import UserError

CONFIG_FILE = 'config.json'

# Settings renamed when the four models' configs took one style: (model, old path, new path).
_RENAMED = (
    ('musicvae', 'dataset_limit', 'max_pieces'),
    ('pianonet', 'max_songs', 'max_pieces'),
    ('cpword', 'data.name', 'dataset'),
    ('cpword', 'data.data_dir', 'data_dir'),
    ('cpword', 'data.limit', 'max_pieces'),
    ('coconet', 'dataset_kwargs.limit', 'max_pieces'),
)


# Settings added for fidelity to the originals whose default (the original's behaviour) differs from
# what runs recorded before they existed computed: a record without the setting gets the value
# here, so an older checkpoint keeps computing the function it was trained as. (model, path, value)
_LEGACY_DEFAULTS: tuple[tuple[str, str, Any], ...] = (
    # MusicVAE before it matched Magenta's LSTMBlockCell and encoder (pretrained/mel_2bar_small):
    # no forget bias, sigma = softplus + 1e-5, the drums' 512-way one-hot as encoder input,
    # melody and drum slices cut on a one-bar grid.
    ('musicvae', 'model.forget_bias', 0.0),
    ('musicvae', 'model.sigma_epsilon', 1e-5),
    ('musicvae', 'encoding.roll_input', False),
    ('musicvae', 'encoding.extraction', 'grid'),
    # Coconet before it matched Magenta's lib_graph (coconet/model.py's docstring says what each
    # computes): pre-activation running-sum residuals, nnx's epsilon, one regular conv first,
    # bias-free separable convs, regular 2x2 final layers; and its earlier training loss.
    ('coconet', 'model.residual', 'pre_relu_sum'),
    ('coconet', 'model.batch_norm_epsilon', 1e-5),
    ('coconet', 'model.num_initial_regular_conv_layers', 1),
    ('coconet', 'model.separable_bias', False),
    ('coconet', 'model.separable_final_layers', False),
    ('coconet', 'loss', 'rescaled_masked'),
    # cpword before the original's loss and bins (cpword/configs.py's V1_TOKENS; the other bin
    # settings were always recorded).
    ('cpword', 'loss', 'masked_mean'),
    ('cpword', 'tokens.velocity_min', 1),
    ('cpword', 'tokens.velocity_max', 127),
    ('cpword', 'tokens.durations', 'grid'),
    # pianonet before the original's encoding (pianonet/data.py's docstring; pretrained/
    # pianonet_small): 48 steps per second, pedal applied, rounded note ends, every note its own
    # run, trimming in the key window, note-wise stretching of the training songs only, the song
    # itself kept beside its stretched copies, silence before the first song too.
    ('pianonet', 'time_grid', 'seconds'),
    ('pianonet', 'sustain', True),
    ('pianonet', 'note_end', 'round'),
    ('pianonet', 'note_rules', 'separate'),
    ('pianonet', 'trim', 'window'),
    ('pianonet', 'stretch_method', 'notes'),
    ('pianonet', 'unstretched_copy', True),
    ('pianonet', 'stretch_validation', False),
    ('pianonet', 'padding', 'around'),
    # Runs that fed PianoNet or MusicVAE one example at a time resume with the same data stream.
    ('pianonet', 'batched_input', False),
    ('musicvae', 'batched_input', False),
)


def unknown_variant(model: str, variant: str, variants: Sequence[str]) -> UserError:
  """The error every get_config raises for a variant it does not have."""
  hint = ''
  if variant and variant.replace(',', '_') in variants:
    hint = f' (did you mean {variant.replace(",", "_")!r}?)'
  return UserError(f'{model}: unknown config variant {variant!r}{hint}; choose one of '
                   f'{", ".join(variants)}')


def add_common_settings(config: ml_collections.ConfigDict, *, task: str, variant: str,
                        dataset: str) -> ml_collections.ConfigDict:
  """Adds the settings every model has (see the module docstring) with neutral defaults; the
  model's configs.py then sets their values."""
  config.task = task
  config.variant = variant
  config.dataset = dataset
  config.data_dir = config_dict.placeholder(str)
  config.max_pieces = config_dict.placeholder(int)
  config.seed = 0
  config.batch_size = 8
  config.learning_rate = 1e-3
  config.grad_clip_norm = config_dict.placeholder(float)  # None: no clipping
  config.num_train_steps = 1000
  config.max_train_seconds = config_dict.placeholder(float)  # a wall-clock budget
  config.init_from = ''  # a workdir or export whose weights start a new run (fine-tuning)
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.sample_every_steps = 0
  return config


def _pop_path(tree: dict[str, Any], path: str) -> tuple[bool, Any]:
  *parents, leaf = path.split('.')
  for name in parents:
    tree = tree.get(name)
    if not isinstance(tree, dict):
      return False, None
  if leaf not in tree:
    return False, None
  return True, tree.pop(leaf)


def _set_missing(tree: dict[str, Any], path: str, value: Any) -> None:
  *parents, leaf = path.split('.')
  for name in parents:
    tree = tree.setdefault(name, {})
    if not isinstance(tree, dict):
      return
  tree.setdefault(leaf, value)


def upgrade_recorded_config(record: dict[str, Any]) -> dict[str, Any]:
  """A config.json's contents with the settings of older runs renamed (see _RENAMED) and the
  settings they predate set to what they computed (see _LEGACY_DEFAULTS)."""
  task = record.get('task')
  if task == 'coconet' and record.get('dataset_kwargs') == {}:
    record.pop('dataset_kwargs')
  for model, old, new in _RENAMED:
    if model != task:
      continue
    found, value = _pop_path(record, old)
    if found and new not in record:
      record[new] = value
  for model, path, value in _LEGACY_DEFAULTS:
    if model == task:
      _set_missing(record, path, value)
  if task == 'cpword' and record.get('dataset') == 'tiny':
    record['dataset'] = 'synthetic'
  if task == 'pianonet':
    if record.get('max_pieces') == 0:
      record['max_pieces'] = None
    if record.get('data_dir') == '':
      record['data_dir'] = None
  return record


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with (UserError if there is none)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise UserError(f'{workdir}: no {CONFIG_FILE} here; is this a training --workdir?')
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'{path}: cannot read it ({e})') from None
  if not isinstance(record, dict):
    raise UserError(f'{path}: not a config (expected a JSON object)')
  return ml_collections.ConfigDict(upgrade_recorded_config(record))


def config_json(config: ml_collections.ConfigDict) -> str:
  """The text config.json records for a config."""
  return config.to_json_best_effort(indent=2, sort_keys=True)
