"""Our MusicVAE with Magenta's weights computes what Magenta's own graphs computed.

The fixtures (tests/fixtures/originals/musicvae_<config>.npz, made by originals/make_fixtures.py
with Magenta 2.1.4) hold each configuration's variables at reduced widths, inputs, and Magenta's
mu, sigma, conductor outputs (hierarchical), teacher-forced decoder logits for a given z, and the
summed reconstruction cross-entropy. Agreement is required within 1e-5 relative to the largest
magnitude of each output (float32). The perturbation tests show that each comparison fails when
any one variable is off by a little.
"""

import functools
import json
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import weight_import
from common.errors import UserError
from musicvae import data
from musicvae import model as model_lib
from musicvae import original
from musicvae import train

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'originals')
NAMES = ('cat-mel_2bar_small', 'cat-mel_2bar_big', 'hierdec-mel_16bar', 'hierdec-trio_16bar',
         'cat-drums_2bar_small')
RTOL = 1e-5


def _path(name: str) -> str:
  return os.path.join(FIXTURES, f'musicvae_{name}.npz')


@functools.lru_cache(maxsize=None)
def _fixture(name: str) -> dict:
  with np.load(_path(name)) as npz:
    return {k: npz[k] for k in npz.files}


def _config(name: str):
  """Magenta's configuration at the published sizes: import_model reads the fixture's widths
  from its variables (checked against the fixture's own record in test_equals_magenta)."""
  return original.CONFIGS[name]()


def test_import_weights_command_makes_a_working_workdir(tmp_path):
  """python -m experiments.import_weights's function on a fixture: the workdir records the
  checkpoint's widths and loads back to the same function."""
  from common import training  # pylint: disable=g-import-not-at-top
  from experiments import registry  # pylint: disable=g-import-not-at-top
  name = 'cat-drums_2bar_small'
  workdir = str(tmp_path / 'imported')
  registry.import_checkpoint('magenta', _path(name), name, workdir)
  config = training.read_config(workdir)
  assert (config.model.z_dim, tuple(config.model.decoder_sizes)) == (16, (24, 24))
  assert config.model.forget_bias == 1.0 and config.encoding.roll_input
  model = training.load_model(train.get_task(config), config, workdir)
  assert max(_relative_errors(name, model).values()) <= RTOL


def _tokens(one_hot_BTV: np.ndarray, vocab_sizes) -> np.ndarray:
  """Concatenated one-hots (B, T, sum V) -> int32 tokens (B, T, K); every step holds one class."""
  tracks = model_lib.split_tracks(jnp.asarray(one_hot_BTV), vocab_sizes)
  for track in tracks:
    assert np.all(np.asarray(track).sum(-1) == 1)
  return np.stack([np.argmax(np.asarray(t), -1) for t in tracks], -1).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _imported(name: str) -> model_lib.MusicVAE:
  config = _config(name)
  model = original.import_model(weight_import.read_variables(_path(name)), config)
  hparams = json.loads(str(_fixture(name)['meta/config_json']))['hparams']
  sizes = (config.model.z_dim, tuple(config.model.encoder_sizes),
           tuple(config.model.decoder_sizes))
  assert sizes == (hparams['z_size'], tuple(hparams['enc_rnn_size']),
                   tuple(hparams['dec_rnn_size'])), sizes
  if config.model.conductor_sizes:  # Magenta's conductor is as wide as the core decoder
    assert tuple(config.model.conductor_sizes) == tuple(hparams['dec_rnn_size'])
  return model


@nnx.jit
def _outputs(model: model_lib.MusicVAE, tokens_BTK: jax.Array, z_BZ: jax.Array) -> dict:
  mu, sigma = model.encode(tokens_BTK)
  logits = model.reconstruct_logits(z_BZ, tokens_BTK)
  r_loss, _ = train.reconstruction(logits, tokens_BTK, model.vocab_sizes)
  out = dict(mu=mu, sigma=sigma, decoder_logits=logits, r_loss=r_loss,
             encoder_input=model.encoder_inputs(tokens_BTK))
  if isinstance(model.decoder, model_lib.HierarchicalDecoder):
    decoder = model.decoder
    inputs = jnp.zeros((z_BZ.shape[0], decoder.num_bars, 1))
    _, out['conductor_outputs'] = decoder.conductor.scan(decoder.conductor_state(z_BZ), inputs)
  return out


def _relative_errors(name: str, model: model_lib.MusicVAE) -> dict[str, float]:
  """max |ours - Magenta's| / max |Magenta's| for each output the fixture holds."""
  f = _fixture(name)
  tokens = _tokens(f['input/target'], model.vocab_sizes)
  out = _outputs(model, jnp.asarray(tokens), jnp.asarray(f['input/z']))
  errors = {}
  for key, ours in out.items():
    expected = f['input/sequence'] if key == 'encoder_input' else f.get(f'output/{key}')
    if expected is None:
      continue
    ours = np.asarray(ours)
    assert ours.shape == expected.shape, (key, ours.shape, expected.shape)
    errors[key] = float(np.abs(ours - expected).max() / np.abs(expected).max())
  return errors


@pytest.mark.parametrize('name', NAMES)
def test_equals_magenta(name):
  """mu, sigma, conductor outputs, teacher-forced logits and r_loss equal Magenta's."""
  f = _fixture(name)
  model = _imported(name)
  # The decoder's teacher-forced inputs are the targets shifted right with a zero first step.
  np.testing.assert_array_equal(
      model_lib.shift_right(jnp.asarray(f['input/target'])), f['input/decoder_input'])
  errors = _relative_errors(name, model)
  expected_keys = {'mu', 'sigma', 'decoder_logits', 'r_loss', 'encoder_input'}
  if 'output/conductor_outputs' in f:
    expected_keys.add('conductor_outputs')
  assert set(errors) == expected_keys
  assert errors['encoder_input'] == 0.0  # the encoder reads exactly Magenta's input tensor
  assert max(errors.values()) <= RTOL, errors


@pytest.mark.parametrize('name', NAMES)
def test_each_variable_perturbed_breaks_equality(name):
  """Every variable matters: one of them off by 1e-3 of its scale (a bias: 1e-3) makes some
  output miss the tolerance, so the equality test can fail."""
  clean = weight_import.read_variables(_path(name))
  model = original.import_model(weight_import.read_variables(_path(name)), _config(name))
  rng = np.random.default_rng(0)
  for variable in sorted(clean.arrays):
    arrays = dict(clean.arrays)
    value = arrays[variable]
    scale = max(float(np.abs(value).max()), 1.0)
    arrays[variable] = value + 1e-3 * scale * rng.standard_normal(value.shape).astype(np.float32)
    original.assign_variables(model, weight_import.Variables(arrays, 'perturbed'))
    errors = _relative_errors(name, model)
    assert max(errors.values()) > 10 * RTOL, (variable, errors)
  original.assign_variables(model, clean)
  assert max(_relative_errors(name, model).values()) <= RTOL


def test_import_refuses_a_mismatched_config():
  """Another architecture, a variable of the wrong shape, a missing or an unknown variable: one
  error naming the variable."""
  narrow_hierdec = original.sized_config('hierdec-mel_16bar', 16, (32,), (24, 24))
  with pytest.raises(UserError, match='decoder/hierarchical_level_0/initial_state/kernel'):
    original.import_model(weight_import.read_variables(_path('cat-mel_2bar_small')),
                          narrow_hierdec)
  arrays = dict(weight_import.read_variables(_path('cat-mel_2bar_small')).arrays)
  arrays['decoder/z_to_initial_state/kernel'] = arrays['decoder/z_to_initial_state/kernel'][:, :90]
  with pytest.raises(UserError, match='decoder/z_to_initial_state/kernel'):
    original.import_model(weight_import.Variables(arrays, 'x'), _config('cat-mel_2bar_small'))
  arrays = dict(weight_import.read_variables(_path('cat-mel_2bar_small')).arrays)
  del arrays['encoder/sigma/bias']
  with pytest.raises(UserError, match='encoder/sigma/bias'):
    original.import_model(weight_import.Variables(arrays, 'x'), _config('cat-mel_2bar_small'))
  arrays = dict(weight_import.read_variables(_path('cat-mel_2bar_small')).arrays)
  arrays['encoder/extra/kernel'] = np.zeros(3)
  arrays['global_step'] = np.zeros(())
  arrays['decoder/output_projection/kernel/Adam'] = np.zeros(3)
  with pytest.raises(UserError, match='encoder/extra/kernel'):
    original.import_model(weight_import.Variables(arrays, 'x'), _config('cat-mel_2bar_small'))


def test_published_configs_have_the_published_sizes():
  sizes = {name: (c.model.z_dim, tuple(c.model.encoder_sizes), tuple(c.model.decoder_sizes),
                  tuple(c.model.conductor_sizes))
           for name, c in ((n, original.CONFIGS[n]()) for n in NAMES)}
  assert sizes == {
      'cat-mel_2bar_small': (256, (512,), (256, 256), ()),
      'cat-mel_2bar_big': (512, (2048,), (2048, 2048, 2048), ()),
      'hierdec-mel_16bar': (512, (2048, 2048), (1024, 1024), (1024, 1024)),
      'hierdec-trio_16bar': (512, (2048, 2048), (1024, 1024), (1024, 1024)),
      'cat-drums_2bar_small': (256, (512,), (256, 256), ()),
  }
  for name in NAMES:
    config = original.CONFIGS[name]()
    assert config.model.forget_bias == 1.0 and config.model.sigma_epsilon == 0.0
    enc = data.encoding_from_config(config)
    assert enc.num_bars == (16 if '16bar' in name else 2)


def _converter_cases():
  for name in NAMES:
    count = sum(1 for k in _fixture(name) if k.startswith('input/midi_'))
    for i in range(count):
      yield name, i


@pytest.mark.parametrize('name,index', list(_converter_cases()))
def test_encodings_equal_magenta_converters(name, index):
  """Our slices of each fixture MIDI equal the tensors Magenta's data converter made from it:
  the decoder's one-hots (output tensors) and the encoder's input (the drums' 10-wide roll), in
  Magenta's order (trio: one example per melody/bass/drums instrument combination)."""
  from common import midi  # pylint: disable=g-import-not-at-top
  f = _fixture(name)
  config = _config(name)
  enc = data.encoding_from_config(config)
  seq = midi.midi_bytes_to_sequence(f[f'input/midi_{index}'].tobytes(), f'midi_{index}')
  slices, _ = data.extract_slices([seq], enc)
  expected_out = f[f'converter/output_tensors_{index}']
  assert len(slices) >= len(expected_out) == len(f[f'converter/lengths_{index}'])
  ours = slices[:len(expected_out)].astype(np.int32)
  np.testing.assert_array_equal(np.asarray(model_lib.one_hot_tracks(ours, enc.vocab_sizes)),
                                expected_out)
  np.testing.assert_array_equal(np.asarray(_imported(name).encoder_inputs(ours)),
                                f[f'converter/input_tensors_{index}'])


def test_older_runs_keep_computing_what_they_were_trained_as():
  """A config.json recorded before these settings existed (pretrained/mel_2bar_small) reads
  back with the values it was trained with: no forget bias, sigma + 1e-5, one-hot drum input,
  slices on a one-bar grid without deduplication."""
  from common import training  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(os.path.dirname(__file__), '..', '..', 'pretrained', 'mel_2bar_small')
  config = training.read_config(workdir)
  assert config.model.forget_bias == 0.0
  assert config.model.sigma_epsilon == 1e-5
  assert config.encoding.roll_input is False
  assert config.encoding.extraction == 'grid' and config.encoding.dedupe is False
  model = nnx.eval_shape(lambda: train.build_model(config, nnx.Rngs(0)))
  lstms = [m for _, m in nnx.iter_graph(model) if isinstance(m, model_lib.StackedLSTM)]
  assert lstms and all(m.forget_bias == 0.0 for m in lstms)
  assert model.encoder.sigma_epsilon == 1e-5
