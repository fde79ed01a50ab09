"""One config style across the four models (common/configs.py)."""

import json

import pytest

from common import configs
from common.errors import UserError
from coconet import configs as coconet_configs
from cpword import configs as cpword_configs
from musicvae import configs as musicvae_configs
from pianonet import configs as pianonet_configs

MODELS = {'coconet': coconet_configs, 'musicvae': musicvae_configs,
          'pianonet': pianonet_configs, 'cpword': cpword_configs}
SHARED = ('task', 'variant', 'dataset', 'data_dir', 'max_pieces', 'seed', 'batch_size',
          'learning_rate', 'grad_clip_norm', 'num_train_steps', 'max_train_seconds', 'init_from',
          'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps', 'sample_every_steps')


@pytest.mark.parametrize('model', sorted(MODELS))
def test_every_model_has_tiny_small_paper_and_the_shared_names(model):
  module = MODELS[model]
  assert {'tiny', 'small', 'paper'} <= set(module.VARIANTS)
  for variant in module.VARIANTS:
    config = module.get_config(variant)
    assert config.task == model and config.variant == variant
    missing = [name for name in SHARED if name not in config]
    assert not missing, (variant, missing)


@pytest.mark.parametrize('model', sorted(MODELS))
def test_an_unknown_variant_is_the_same_user_error(model):
  with pytest.raises(UserError, match=f"^{model}: unknown config variant 'nope'; choose one of "):
    MODELS[model].get_config('nope')


def test_the_old_comma_spelling_gets_a_hint():
  with pytest.raises(UserError, match="did you mean 'small_remi'"):
    cpword_configs.get_config('small,remi')


def test_configs_recorded_by_older_runs_are_read_with_the_shared_names(tmp_path):
  old = {'task': 'cpword', 'variant': 'small', 'representation': 'cp',
         'data': {'name': 'tiny', 'data_dir': '/d', 'limit': 5, 'seq_len': 256}}
  (tmp_path / 'config.json').write_text(json.dumps(old))
  config = configs.read_config(str(tmp_path))
  assert (config.dataset, config.data_dir, config.max_pieces) == ('synthetic', '/d', 5)
  assert 'name' not in config.data and config.data.seq_len == 256
  upgraded = configs.upgrade_recorded_config({'task': 'pianonet', 'max_songs': 0, 'data_dir': ''})
  assert (upgraded['max_pieces'], upgraded['data_dir']) == (None, None)
  assert 'max_songs' not in upgraded
  upgraded = configs.upgrade_recorded_config({'task': 'musicvae', 'dataset_limit': 7})
  assert upgraded['max_pieces'] == 7 and 'dataset_limit' not in upgraded


def test_a_missing_or_broken_config_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='no config.json here'):
    configs.read_config(str(tmp_path))
  (tmp_path / 'config.json').write_text('{not json')
  with pytest.raises(UserError, match='cannot read it'):
    configs.read_config(str(tmp_path))
