"""MusicVAE latent-space tools: slerp, attributes, encode/decode/sample/interpolate, generation."""

import functools
import os

from flax import nnx
import jax
import numpy as np
import pytest

from common import midi
from common.errors import UserError
from musicvae import configs
from musicvae import data
from musicvae import sample
from musicvae import train

ENC = data.Encoding('melody', num_bars=2)


@functools.lru_cache(maxsize=None)
def _model():
  return train.build_model(configs.get_config('tiny'), nnx.Rngs(0))


def test_slerp_endpoints_and_norm():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=16), rng.normal(size=16)
  z = sample.interpolate_z(a, b, 5)
  assert z.shape == (5, 16)
  np.testing.assert_allclose(z[0], a, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(z[-1], b, rtol=1e-5, atol=1e-6)
  # On the great circle between two unit vectors every point has norm 1 (linear would not).
  unit = sample.interpolate_z(a / np.linalg.norm(a), b / np.linalg.norm(b), 5)
  np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(sample.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear


def test_attribute_add_then_subtract(tmp_path):
  rng = np.random.default_rng(1)
  z = rng.normal(size=(3, 8)).astype(np.float32)
  mu = rng.normal(scale=0.1, size=(40, 8)).astype(np.float32)
  values = np.arange(40.0)
  mu[values >= 30] += 1.0  # the top quartile sits one unit higher in every dimension
  vector = sample.attribute_vector(mu, values)
  assert np.all(vector > 0.5)
  path = str(tmp_path / 'vectors.npz')
  sample.save_attribute_vectors(path, {'note_density': vector})
  loaded = sample.load_attribute_vectors(path)['note_density']
  np.testing.assert_array_equal(loaded, vector)
  moved = sample.apply_attribute(z, loaded, 1.5)
  assert not np.allclose(moved, z)
  np.testing.assert_allclose(sample.apply_attribute(moved, loaded, -1.5), z, atol=1e-6)
  with pytest.raises(UserError):
    sample.attribute_vector(mu, np.ones(40))


def test_attribute_functions():
  # Quarter notes C D E F G A B C (8 notes in 32 steps): density 1/4, intervals 2,2,1,2,2,2,1.
  notes = [(4 * i, 4 * i + 4, p) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]
  tokens = data.events_to_tokens(data.melody_events(notes, 32))
  assert sample.note_density(tokens) == 0.25
  np.testing.assert_allclose(sample.average_interval(tokens), 12 / 7)
  assert sample.c_diatonic(tokens) == 1.0
  assert sample.syncopation_8th(tokens) == sample.syncopation_16th(tokens) == 0.0
  shifted = data.events_to_tokens(data.melody_events([(1, 3, 61), (6, 8, 63)], 32))
  assert sample.syncopation_16th(shifted) == 0.5 and sample.syncopation_8th(shifted) == 0.5
  assert sample.c_diatonic(shifted) == 0.0


def test_encode_decode_sample_interpolate_shapes():
  model = _model()
  seqs = data.synthetic_melodies(2, num_bars=2, seed=5)
  z, mu, sigma = sample.encode(model, seqs, ENC)
  assert z.shape == mu.shape == sigma.shape == (2, 8)
  out = sample.decode(model, mu, ENC, jax.random.key(0), temperature=0.0)
  again = sample.decode(model, mu, ENC, jax.random.key(1), temperature=0.0)
  assert len(out) == 2 and out[0] == again[0]  # argmax decoding ignores the key
  assert len(sample.sample(model, 3, jax.random.key(2), ENC)) == 3
  inter = sample.interpolate(model, seqs[0], seqs[1], ENC, num=4)
  assert len(inter) == 4 and all(s.total_quantized_steps == 32 for s in inter)


def test_encode_rejects_sequence_without_slice():
  """The error says in words why no slice was found (not a raw Counter)."""
  seq = data.tokens_to_sequence(np.zeros(32, np.int16), ENC)  # silence
  with pytest.raises(UserError, match='no 2-bar melody slice') as e:
    sample.sequences_to_tokens([seq], ENC, ['silence.mid'])
  assert str(e.value) == ('silence.mid: no 2-bar melody slice: 1 piece without notes; a slice '
                          'needs 4/4 time and notes in 21..108')
  sparse = data.tokens_to_sequence(np.zeros(32 * 3, np.int16), ENC)
  for start in (0, 40, 88):
    sparse.notes.add(pitch=60, velocity=80, quantized_start_step=start,
                     quantized_end_step=start + 2, start_time=start / 8, end_time=start / 8 + .25)
  with pytest.raises(UserError) as e:
    sample.sequences_to_tokens([sparse], ENC, ['sparse.mid'])
  assert str(e.value).startswith(
      'sparse.mid: no 2-bar melody slice: 3 melodies shorter than 2 bars (a melody ends at 1 bar '
      'of silence); a slice needs')
  grid = data.Encoding('melody', num_bars=2, extraction='grid')
  with pytest.raises(UserError) as e:
    sample.sequences_to_tokens([sparse], grid, ['sparse.mid'])
  assert str(e.value).startswith(
      'sparse.mid: no 2-bar melody slice: 1 slice without melody notes, 4 slices with more than 1 '
      'bar of silence in the melody; a slice needs')
  assert '{' not in str(e.value) and "'" not in str(e.value)


@pytest.mark.slow
def test_generate_files_all_tasks(tmp_path):
  """Every task through the command line's path (experiments.registry.generate_files); the
  attribute vectors come from the file training wrote beside the checkpoint."""
  from common import generation  # pylint: disable=g-import-not-at-top
  from experiments import registry  # pylint: disable=g-import-not-at-top
  config = configs.get_config('tiny')
  config.num_train_steps = 2
  config.eval_every_steps = 0
  workdir = str(tmp_path / 'run')
  from common import training  # pylint: disable=g-import-not-at-top
  training.train_and_evaluate(train.get_task(config), config, workdir)
  inputs = []
  for i, seq in enumerate(data.synthetic_melodies(2, num_bars=2, seed=7)):
    inputs.append(str(tmp_path / f'in{i}.mid'))
    midi.write_midi(seq, inputs[-1])
  assert os.path.exists(os.path.join(workdir, 'attribute_vectors.npz'))
  out = str(tmp_path / 'out')

  def run(task, paths=(), **kwargs):
    request = generation.Request(task=task, inputs=tuple(midi.read_midi(p) for p in paths),
                                 input_names=tuple(paths), **kwargs)
    return registry.generate_files(workdir, request, out)

  paths = run('sample', num_samples=2)
  paths += run('reconstruct', inputs)
  paths += run('interpolate', inputs, num_samples=3)
  paths += run('attribute', inputs[:1], attribute='note_density', attribute_scale=1.0)
  assert len(paths) == 2 + 2 + 3 + 1 and all(os.path.exists(p) for p in paths)
  with pytest.raises(UserError):
    run('interpolate', inputs[:1])
