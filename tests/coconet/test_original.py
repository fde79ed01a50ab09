"""Our Coconet with Magenta's weights computes what Magenta's own graph computed.

The fixtures (tests/fixtures/originals/coconet_{straight,dilated_sep}.npz, made by
originals/make_fixtures.py with Magenta 2.1.4's lib_graph.build_graph(is_training=False)) hold a
6-layer straight and a 9-layer dilated separable net's variables, two real JSB crops with orderless
masks, and Magenta's logits, softmax predictions and losses. Agreement is required within 1e-5
(relative, and absolute for logits near zero) in float32.
"""

import functools
import json
import os
import subprocess
import sys

from flax import nnx
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common import configs as common_configs
from common import weight_import
from common.errors import UserError
from coconet import model as model_lib
from coconet import original
from coconet import train

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'originals')
CASES = {'coconet_straight': 'straight', 'coconet_dilated_sep': 'dilated_separable'}
TOL = 1e-5


def _path(fixture: str) -> str:
  return os.path.join(FIXTURES, f'{fixture}.npz')


@functools.lru_cache(maxsize=None)
def _fixture(fixture: str) -> dict:
  with np.load(_path(fixture)) as npz:
    return {k: npz[k] for k in npz.files}


def _import(fixture: str, variables=None, config=None):
  config = config if config is not None else original.CONFIGS[CASES[fixture]]()
  variables = variables if variables is not None else weight_import.read_variables(_path(fixture))
  return original.import_model(variables, config), config


_forward = nnx.jit(lambda model, roll, mask: model(roll, mask))


def _logits(model, fixture: str) -> np.ndarray:
  f = _fixture(fixture)
  return np.asarray(_forward(model, jnp.asarray(f['input/pianorolls']),
                             jnp.asarray(f['input/masks'][:, :, 0, :])))


def _close(ours: np.ndarray, theirs: np.ndarray) -> bool:
  return bool(np.all(np.abs(ours - theirs) <= TOL * (np.abs(theirs) + 1.0)))


@pytest.mark.parametrize('fixture', CASES)
def test_imported_model_gives_magentas_logits_and_predictions(fixture):
  model, config = _import(fixture)
  f = _fixture(fixture)
  hparams = json.loads(str(f['meta/config_json']))['hparams']
  assert config.model.num_filters == hparams['num_filters']
  assert len(model.layers) == len(json.loads(str(f['meta/config_json']))['layers'])
  logits = _logits(model, fixture)
  np.testing.assert_allclose(logits, f['output/logits'], rtol=TOL, atol=TOL)
  predictions = np.asarray(jnp.exp(model_lib.predict_log_probs(
      model, jnp.asarray(f['input/pianorolls']), jnp.asarray(f['input/masks'][:, :, 0, :]))))
  np.testing.assert_allclose(predictions, f['output/predictions'], rtol=TOL, atol=1e-6)


@pytest.mark.parametrize('fixture', CASES)
def test_magenta_losses_equal_magentas(fixture):
  f = _fixture(fixture)
  losses = train.magenta_losses(jnp.asarray(f['output/logits']),
                                jnp.asarray(f['input/pianorolls']),
                                jnp.asarray(f['input/masks'][:, :, 0, :]),
                                jnp.asarray(f['input/lengths']))
  for name, value in losses.items():
    np.testing.assert_allclose(float(value), float(f[f'output/{name}']), rtol=TOL)


def test_dilation_schedule_is_magentas():
  f = _fixture('coconet_dilated_sep')
  layers = json.loads(str(f['meta/config_json']))['layers']
  expected = [tuple(layer.get('dilation_rate', (1, 1))) for layer in layers]
  _, config = _import('coconet_dilated_sep')
  assert model_lib.layer_dilations(len(layers), config.model.dilation) == expected
  assert model_lib.magenta_dilation_block(32) == model_lib.DOODLE_DILATION
  assert model_lib.magenta_dilation_block(64)[-1] == (32, 32)
  assert model_lib.magenta_dilation_block(32, dilate_time_only=True)[-1] == (16, 1)
  assert len(model_lib.magenta_dilation_block(32, repeat_last_dilation_level=True)) == 7


@pytest.mark.parametrize('fixture,name', [('coconet_straight', 'model/conv3/weights'),
                                          ('coconet_straight', 'model/conv4/popvariance'),
                                          ('coconet_dilated_sep',
                                           'model/conv7/separable_conv2d/bias'),
                                          ('coconet_dilated_sep',
                                           'model/conv5/separable_conv2d/depthwise_kernel')])
def test_one_perturbed_variable_breaks_the_equality(fixture, name):
  variables = weight_import.read_variables(_path(fixture))
  value = np.array(variables.arrays[name])
  value.reshape(-1)[0] += 0.01 * max(1.0, float(np.abs(value).max()))
  variables.arrays[name] = value
  model, _ = _import(fixture, variables)
  assert not _close(_logits(model, fixture), _fixture(fixture)['output/logits'])


@pytest.mark.parametrize('setting,value', [('residual', 'pre_relu_sum'),
                                           ('residual', 'none'),
                                           ('mask_indicates_context', True)])
def test_each_setting_changes_the_function(setting, value):
  """The original's behaviour is the default: each other value gives other logits."""
  fixture = 'coconet_straight'
  reference, config = _import(fixture)
  config.model[setting] = value
  model = model_lib.build_model(config.model, nnx.Rngs(0))
  nnx.update(model, nnx.state(reference))
  model.eval()
  assert not _close(_logits(model, fixture), _fixture(fixture)['output/logits'])


def test_legacy_runs_keep_their_architecture():
  record = {'task': 'coconet', 'model': {'architecture': 'dilated', 'num_layers': 6,
                                         'num_filters': 8, 'separable': True}}
  config = common_configs.upgrade_recorded_config(record)
  model = model_lib.build_model(ml_collections.ConfigDict(config['model']), nnx.Rngs(0))
  assert model.residual == 'pre_relu_sum'
  assert model.layers[1].depthwise is not None and model.layers[1].bias is None
  assert model.layers[-1].depthwise is None  # regular 2x2 ends, one regular layer first
  assert model.layers[0].norm.epsilon == 1e-5
  assert config['loss'] == 'rescaled_masked'


def test_wrong_family_is_refused_by_name():
  with pytest.raises(UserError, match='use --config=straight'):
    _import('coconet_straight', config=original.CONFIGS['dilated_separable']())


def _without_meta(tmp_path, fixture: str, drop: str = '', extra: str = '') -> str:
  arrays = {k: v for k, v in _fixture(fixture).items()
            if k.startswith('var/') and k != f'var/{drop}'}
  if extra:
    arrays[f'var/{extra}'] = np.zeros(3, np.float32)
  path = str(tmp_path / 'checkpoint.npz')
  np.savez(path, **arrays)
  return path


def test_wrong_config_without_hparams_names_the_missing_variable(tmp_path):
  path = _without_meta(tmp_path, 'coconet_straight')
  with pytest.raises(UserError, match="'model/conv2/separable_conv2d/depthwise_kernel'"):
    _import('coconet_straight', weight_import.read_variables(path),
            original.CONFIGS['dilated_separable']())


def test_missing_and_unused_variables_are_named(tmp_path):
  path = _without_meta(tmp_path, 'coconet_straight', drop='model/conv3/beta')
  with pytest.raises(UserError, match="'model/conv3/beta'"):
    _import('coconet_straight', weight_import.read_variables(path))
  path = _without_meta(tmp_path, 'coconet_straight', extra='model/conv2/extra')
  with pytest.raises(UserError, match="'model/conv2/extra'"):
    _import('coconet_straight', weight_import.read_variables(path))
  # Optimizer slots and counters of a training checkpoint are not model variables.
  path = _without_meta(tmp_path, 'coconet_straight', extra='model/conv2/weights/Adam_1')
  _import('coconet_straight', weight_import.read_variables(path))


def _run_import(*args: str):
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'experiments.import_weights', '--source=magenta',
                         *args], env=env, capture_output=True, text=True, cwd=repo, timeout=300)


def test_import_weights_command_then_generate_and_evaluate(tmp_path):
  from common import generation
  from coconet import evaluate
  from coconet import sample
  from experiments import registry
  workdir = str(tmp_path / 'imported')
  result = _run_import('--config=straight', f'--checkpoint={_path("coconet_straight")}',
                       f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  config = common_configs.read_config(workdir)
  assert config.model.num_layers == 6 and config.model.residual == 'post_relu'
  model = registry.load_model(config, workdir)
  np.testing.assert_allclose(_logits(model, 'coconet_straight'),
                             _fixture('coconet_straight')['output/logits'], rtol=TOL, atol=TOL)
  request = generation.Request(task='harmonize', pitches=(67, 69, 71, 72), gibbs_steps=4)
  pieces = sample.generate_pieces(model, config, request)
  assert len(pieces) == 1 and len(pieces[0].sequence.notes) > 0
  pitches = _fixture('coconet_straight')['input/jsb_pitches']
  results = evaluate.evaluate_pieces(model, [pitches[0]], units=('frame',),
                                     orders=('chronological',), chunk_size=16)
  assert np.isfinite(results['framewise_chronological']['nll_per_note'])


def test_import_weights_command_refuses_a_wrong_config_in_one_line(tmp_path):
  path = _without_meta(tmp_path, 'coconet_straight')
  result = _run_import('--config=dilated_separable', f'--checkpoint={path}',
                       f'--workdir={tmp_path / "out"}')
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "'model/conv2/separable_conv2d/depthwise_kernel'" in lines[0]
  assert not os.path.exists(tmp_path / 'out' / 'checkpoints')


def test_magentas_config_file_beside_a_checkpoint_sets_what_the_variables_cannot(tmp_path):
  import yaml  # pylint: disable=g-import-not-at-top
  hparams = dict(architecture='dilated', use_sep_conv=True, crop_piece_len=64,
                 dilate_time_only=True, num_initial_regular_conv_layers=1,
                 batch_norm_variance_epsilon=1e-6, use_residual=False)
  (tmp_path / 'config').write_text(yaml.dump(hparams))
  found = original.recorded_hparams(str(tmp_path / 'best_model.ckpt'))
  assert found == hparams
  config = original.CONFIGS['dilated_separable']()
  original.apply_hparams(config, found, 'ckpt')
  assert config.crop_len == 64 and config.model.residual == 'none'
  assert config.model.dilation[-1] == (32, 1) and len(config.model.dilation) == 6
  assert config.model.num_initial_regular_conv_layers == 1
  assert config.model.batch_norm_epsilon == 1e-6
  with pytest.raises(UserError, match='num_pointwise_splits=4 is not supported'):
    original.apply_hparams(original.CONFIGS['dilated_separable'](),
                           dict(hparams, num_pointwise_splits=4), 'ckpt')
  assert original.recorded_hparams(str(tmp_path / 'elsewhere' / 'model.ckpt')) is None
