"""The original PianoNet's released models imported: same probabilities as the original's Keras
model on its fixture, fast generation equals naive generation with the real weights, clear errors
for a checkpoint that does not fit."""

import functools
import os

from flax import nnx
import jax
import numpy as np
import pytest

from common import configs as common_configs
from common import weight_import
from common.errors import UserError
from experiments import registry
from pianonet import generate
from pianonet import model as model_lib
from pianonet import original

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'originals')
RELEASED = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'models',
                        'pianonet_original')
SAVED_MODELS = {'r5p3': 'r5p3_300kparams_4_blocks_12_12_12_12_model', 'micro_1': 'micro_1'}


def fixture_path(name):
  return os.path.join(FIXTURES, f'pianonet_{name}.npz')


@functools.lru_cache(maxsize=2)
def imported(name):
  return original.import_model(weight_import.read_variables(fixture_path(name)),
                               original.CONFIGS[name]())


def original_probabilities(model, key_states_N):
  """What the fixture holds: the 'valid' Keras model on R - 1 zeros then the stream."""
  padded_N = np.concatenate([np.zeros(model.receptive_field - 1, np.float32), key_states_N])
  logits = jax.jit(lambda x: model(x, num_outputs=len(key_states_N)))(padded_N[None])
  return np.asarray(jax.nn.sigmoid(logits))[0]


@pytest.mark.parametrize('name', ['r5p3', 'micro_1'])
def test_imported_model_gives_the_originals_probabilities(name):
  with np.load(fixture_path(name)) as npz:
    key_states_N = npz['input/key_states'][0, :, 0]
    want_N = npz['output/probabilities'][0, :, 0]
  model = imported(name)
  config = original.CONFIGS[name]()
  # Key windows: r5p3's is measured (pianonet/original.py), micro_1's the serving code's.
  assert (config.lowest_key, config.num_keys) == {'r5p3': (34, 64), 'micro_1': (31, 72)}[name]
  assert model.receptive_field == model_lib.receptive_field(config.model)
  assert model_lib.count_params(model) == {'r5p3': 316_139, 'micro_1': 172_303}[name]
  assert model.receptive_field == {'r5p3': 16_381, 'micro_1': 10_509}[name]
  got_N = original_probabilities(model, key_states_N)
  np.testing.assert_allclose(got_N, want_N, rtol=0, atol=1e-5)


def test_fast_generation_with_the_released_weights_equals_naive():
  model = imported('micro_1')
  with np.load(fixture_path('micro_1')) as npz:
    stream_N = npz['input/key_states'][0, :, 0].astype(np.uint8)
  # A seed that fills the receptive field (MAESTRO music, silence in front) and ends inside a
  # time step. A naive step is a whole pass over 10,509 positions: keep the stream short.
  seed_N = generate.seed_from_sequence(stream_N, len(stream_N), model.receptive_field, 72)[:-30]
  kwargs = dict(temperature=1.0, thresholds=generate.DEFAULT_THRESHOLDS)
  fast_BN = generate.generate_fast(model, seed_N[None], 96, jax.random.key(3), **kwargs)
  naive_BN = generate.generate_naive(model, seed_N[None], 96, jax.random.key(3), **kwargs)
  np.testing.assert_array_equal(fast_BN, naive_BN)
  assert np.asarray(fast_BN).any()  # the music goes on: some keys are down


def test_a_checkpoint_that_does_not_fit_names_the_first_variable():
  variables = weight_import.read_variables(fixture_path('micro_1'))
  with pytest.raises(UserError, match=r"'conv1d/kernel' has shape \(2, 1, 2\)"):
    original.import_model(variables, original.CONFIGS['r5p3']())
  fewer = original.CONFIGS['micro_1']()
  fewer.model.block_layers = [13, 11, 8, 3]
  fewer.model.widths = original.MICRO_1_WIDTHS[:-1]
  # The 1x1 output conv of this shorter stack is layer 35, micro_1's last dilated conv.
  with pytest.raises(UserError, match="conv1d_35/kernel"):
    original.import_model(weight_import.read_variables(fixture_path('micro_1')), fewer)


def test_import_weights_writes_a_workdir_that_loads(tmp_path):
  workdir = str(tmp_path / 'micro_1')
  registry.import_checkpoint('pianonet', fixture_path('micro_1'), 'micro_1', workdir)
  config = common_configs.read_config(workdir)
  assert config.variant == 'micro_1' and config.num_keys == 72 and config.lowest_key == 31
  model = registry.load_model(config, workdir)
  with np.load(fixture_path('micro_1')) as npz:
    key_states_N = npz['input/key_states'][0, -2000:, 0]
  np.testing.assert_allclose(original_probabilities(model, key_states_N),
                             original_probabilities(imported('micro_1'), key_states_N), atol=1e-7)
  with pytest.raises(UserError, match='not a pianonet configuration'):
    registry.import_checkpoint('pianonet', fixture_path('micro_1'), 'r9p0',
                                     str(tmp_path / 'other'))


@pytest.mark.skipif(not os.path.isdir(RELEASED), reason='the released SavedModels are not here')
@pytest.mark.parametrize('name', ['r5p3', 'micro_1'])
def test_savedmodel_folder_gives_the_fixtures_weights(name):
  variables = weight_import.read_variables(os.path.join(RELEASED, SAVED_MODELS[name]))
  model = original.import_model(variables, original.CONFIGS[name]())
  for got, want in zip(jax.tree.leaves(nnx.state(model)),
                       jax.tree.leaves(nnx.state(imported(name)))):
    np.testing.assert_array_equal(got, want)


def test_shipped_pianonet_paper_is_the_released_r5p3():
  workdir = os.path.join(os.path.dirname(__file__), '..', '..', 'pretrained', 'pianonet_paper')
  config = common_configs.read_config(workdir)
  assert config.variant == 'r5p3' and os.path.exists(os.path.join(workdir, 'LICENSE'))
  model = registry.load_model(config, workdir)
  for got, want in zip(jax.tree.leaves(nnx.state(model)),
                       jax.tree.leaves(nnx.state(imported('r5p3')))):
    np.testing.assert_array_equal(got, want)
