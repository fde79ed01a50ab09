"""PianoNet training task on the tiny config: windows, loss, eval; an end-to-end run (slow)."""

import os

from flax import nnx
import jax
import jax.numpy as jnp
import note_seq
import numpy as np
import optax
import pytest

from pianonet import configs
from pianonet import data
from pianonet import model as model_lib
from pianonet import train


def tiny_config():
  c = configs.get_config('tiny')
  c.cache_dir = ''
  return c


def test_train_windows_end_on_time_steps_and_cover_the_data():
  c = tiny_config()
  spec = train.window_spec(c)
  assert spec.length == model_lib.receptive_field(c.model) + c.predicted_steps * c.num_keys
  seq = train.get_split(c, 'train')
  # Mark every key state with its time step so a window tells where it ends.
  step_N = (np.arange(len(seq.keys_N)) // c.num_keys % 251).astype(np.uint8)
  windows = train.TrainWindows(step_N, spec, c.predicted_steps, c.window_chunk_steps)
  rng = np.random.default_rng(0)
  end_steps = []
  for chunk in range(len(windows)):
    keys = windows(chunk, rng)['keys']
    assert keys.shape == (spec.length,) and keys.dtype == np.uint8
    last_step = keys[-c.num_keys:]
    assert (last_step == last_step[0]).all()  # ends on a time-step boundary
    end_step = int(last_step[0]) + 1
    end_steps.append(end_step)
    # Example `chunk` ends in [lo, lo + chunk_steps) (the marks count modulo 251).
    lo = c.predicted_steps + chunk * c.window_chunk_steps
    assert (end_step - lo) % 251 < c.window_chunk_steps
  assert len(windows) * c.window_chunk_steps >= seq.num_steps - c.predicted_steps
  assert len(set(end_steps)) > 5


def test_iterators_give_fixed_shape_batches():
  c = tiny_config()
  spec = train.window_spec(c)
  batch = next(train.train_iterator(c, 0, 1))
  assert batch['keys'].shape == (c.batch_size, spec.length)
  eval_batches = list(train.eval_batches(c, 0, 1))
  assert sum(float(b['weight'].sum()) for b in eval_batches) == c.num_eval_windows
  assert all(b['keys'].shape == (c.batch_size, spec.length) for b in eval_batches)


def test_loss_is_bce_on_the_predicted_positions_and_training_lowers_it():
  c = tiny_config()
  model = model_lib.build_model(c, nnx.Rngs(0))
  batch = next(train.train_iterator(c, 0, 1))
  loss_fn = train.make_loss_fn(c)
  eval_fn = train.make_eval_fn(c)
  spec = train.window_spec(c)

  @nnx.jit
  def check(model, batch):
    loss, metrics = loss_fn(model, batch, jax.random.key(0), 0)
    # The same loss by hand: full forward, last positions only.
    logits = model(batch['keys'][:, :-1], spec.first_key)[:, -spec.num_predicted:]
    bce_B = optax.sigmoid_binary_cross_entropy(
        logits, batch['keys'][:, -spec.num_predicted:].astype(jnp.float32)).mean(axis=1)
    weighted = eval_fn(model, dict(batch, weight=jnp.array([0.0, 1.0, 0.0, 1.0])), None)
    return loss, metrics, bce_B, weighted

  loss, metrics, bce_B, weighted = check(model, batch)
  np.testing.assert_allclose(loss, bce_B.mean(), rtol=1e-5)
  np.testing.assert_allclose(weighted['bce'], (bce_B[1] + bce_B[3]) / 2, rtol=1e-5)
  assert 0.0 < float(metrics['accuracy']) <= 1.0
  assert set(weighted) >= {'bce', 'bits_per_key_state', 'accuracy'}

  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, batch):
    (loss, _), grads = nnx.value_and_grad(
        lambda m: loss_fn(m, batch, jax.random.key(0), 0), has_aux=True)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer, batch)) for _ in range(15)]
  assert losses[-1] < losses[0]


@pytest.mark.slow
def test_train_sample_and_generate_end_to_end(tmp_path):
  from common import generation
  from common import training
  from pianonet import generate
  c = tiny_config()
  c.num_train_steps = 4
  c.checkpoint_every_steps = 4
  c.eval_every_steps = 4
  c.sample_every_steps = 4
  workdir = str(tmp_path / 'run')
  training.train_and_evaluate(train.get_task(c), c, workdir)
  samples = os.listdir(os.path.join(workdir, 'samples'))
  assert samples == ['pianonet_step00000004.mid']

  enc = data.encoding_from_config(c)
  seed_path = str(tmp_path / 'seed.mid')
  note_seq.sequence_proto_to_midi_file(data.synthetic_songs(1, enc, seed=3)[0], seed_path)
  model = training.load_model(train.get_task(c), c, workdir)
  seed = note_seq.midi_file_to_note_sequence(seed_path)
  for inputs, naive in (((seed,), False), ((), True)):
    request = generation.Request(inputs=inputs, seconds=1.0, temperature=1.0, num_samples=2)
    pieces = generate.generate_pieces(model, c, request, naive=naive)
    assert [p.name for p in pieces] == ['pianonet_000', 'pianonet_001']
    for piece in pieces:
      assert piece.sequence.total_time <= 1.0 + 8.0 + 0.5  # seed (<= 8 s) + 1 s of continuation


def test_a_new_run_starts_at_the_training_key_down_rate():
  c = tiny_config()
  assert c.model.output_bias_init is None and c.train_key_down_rate is None
  train.get_task(c)
  seq = train.get_split(c, 'train')
  rate = float(np.mean(seq.keys_N))
  assert c.train_key_down_rate == pytest.approx(rate) and 0.01 < rate < 0.5
  model = model_lib.build_model(c, nnx.Rngs(0))
  assert float(model.output.bias[0]) == pytest.approx(np.log(rate / (1 - rate)), abs=1e-6)
  # The record keeps the rate, so the same model is built when the run is loaded.
  again = configs.get_config('tiny')
  again.train_key_down_rate = c.train_key_down_rate
  assert model_lib.initial_output_bias(again) == model_lib.initial_output_bias(c)


def test_a_set_bias_or_starting_weights_need_no_measurement():
  c = tiny_config()
  c.model.output_bias_init = -3.2
  train.get_task(c)
  assert c.train_key_down_rate is None and model_lib.initial_output_bias(c) == -3.2
  c = tiny_config()
  c.init_from = '/nonexistent/run'  # its weights bring their bias; no data is read here
  train.calibrate_output_bias(c)
  assert c.train_key_down_rate is None


def test_output_bias_for_a_rate_is_its_logit():
  assert model_lib.output_bias_for_rate(0.5) == 0.0
  assert model_lib.output_bias_for_rate(0.04) == pytest.approx(-3.178, abs=1e-3)
  assert model_lib.output_bias_for_rate(0.0) == pytest.approx(np.log(1e-6 / (1 - 1e-6)))


def test_batched_windows_equal_the_window_function_and_stay_in_their_chunks():
  keys_N = (np.random.default_rng(0).random(16 * 40) < 0.2).astype(np.uint8)
  spec = train.WindowSpec(num_keys=16, receptive_field=40, num_predicted=32)
  windows = train.TrainWindows(keys_N, spec, predicted_steps=2, chunk_steps=4)
  chunks = np.arange(len(windows))
  batch = windows.batch(chunks, np.zeros_like(chunks), seed=3)['keys']
  assert batch.shape == (len(windows), spec.length) and batch.dtype == np.uint8
  for chunk, row in zip(chunks, batch):
    # The row is the window ending at some step of its chunk, exactly as data.window cuts it.
    lo = windows.first_end + chunk * windows.chunk_steps
    ends = range(lo, max(lo + 1, min(lo + windows.chunk_steps, windows.num_steps + 1)))
    assert any(np.array_equal(row, data.window(keys_N, end * 16, spec.length)) for end in ends)


def test_mixed_precision_loss_is_close_to_float32():
  config = tiny_config()
  task = train.get_task(config)
  batch = {'keys': (np.random.default_rng(0).random((4, train.window_spec(config).length)) < 0.1)
           .astype(np.uint8)}
  losses = {}
  for mixed in (False, True):
    config.mixed_precision = mixed
    model = train.build_model(config, nnx.Rngs(0))
    losses[mixed], _ = task.loss_fn(model, batch, jax.random.key(0), 0)
  assert float(losses[True]) == pytest.approx(float(losses[False]), rel=2e-2)
