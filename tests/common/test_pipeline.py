"""Tests for common/pipeline.py: order, sharding, reproducibility, resumption, eval padding."""

import itertools
import json

import numpy as np
import pytest

from common import pipeline
from common.errors import UserError

NUM_EXAMPLES = 13  # not a multiple of any batch size below, so batches straddle epochs


def _examples():
  return [np.full((20 + i, 2), i, np.float32) for i in range(NUM_EXAMPLES)]


def _transform(x_TP, rng):
  """Keeps the example id and a random crop, so both order and rng use are visible."""
  return {'id': np.int32(x_TP[0, 0]),
          'crop': pipeline.random_crop(x_TP[:, 0] + np.arange(len(x_TP)), 4, rng),
          'noise': rng.standard_normal(3).astype(np.float32)}


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_train_batches_have_local_shapes_and_dtypes():
  it = pipeline.make_train_iterator(_examples(), _transform, batch_size=4, seed=0)
  batch = next(it)
  assert batch['id'].shape == (4,) and batch['id'].dtype == np.int32
  assert batch['crop'].shape == (4, 4)
  assert batch['noise'].shape == (4, 3) and batch['noise'].dtype == np.float32


def test_every_epoch_is_a_permutation_and_epochs_differ():
  it = pipeline.make_train_iterator(_examples(), _transform, batch_size=1, seed=3)
  ids = np.concatenate([b['id'] for b in _take(it, 3 * NUM_EXAMPLES)])
  epochs = ids.reshape(3, NUM_EXAMPLES)
  for epoch in epochs:
    assert sorted(epoch) == list(range(NUM_EXAMPLES))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])
  assert not np.array_equal(epochs[0], np.arange(NUM_EXAMPLES))  # shuffled at all


def test_same_seed_same_batches_other_seed_other_batches():
  make = lambda seed: pipeline.make_train_iterator(_examples(), _transform, batch_size=4,
                                                   seed=seed)
  a, b, c = _take(make(7), 6), _take(make(7), 6), _take(make(8), 6)
  _assert_batches_equal(a, b)
  assert not all(np.array_equal(x['id'], y['id']) for x, y in zip(a, c))


def test_transform_rng_depends_on_seed_epoch_and_index():
  it = pipeline.make_train_iterator(_examples(), _transform, batch_size=1, seed=5)
  items = [next(it) for _ in range(2 * NUM_EXAMPLES)]
  noise = {}
  for pos, item in enumerate(items):
    key = (pos // NUM_EXAMPLES, int(item['id'][0]))
    expected = pipeline.item_rng(5, *key)
    expected.integers(0, 20 + key[1] - 4 + 1)  # random_crop draws first
    np.testing.assert_array_equal(item['noise'][0],
                                  expected.standard_normal(3).astype(np.float32))
    noise[key] = item['noise'][0]
  # The same example gets different augmentation in the next epoch.
  assert not np.array_equal(noise[(0, 0)], noise[(1, 0)])


@pytest.mark.parametrize('process_count', [2, 4])
def test_processes_together_see_the_single_process_batches(process_count):
  global_batch_size = 8
  single = _take(pipeline.make_train_iterator(
      _examples(), _transform, batch_size=global_batch_size, seed=1), 5)
  shards = [_take(pipeline.make_train_iterator(
      _examples(), _transform, batch_size=global_batch_size, seed=1, process_index=p,
      process_count=process_count), 5) for p in range(process_count)]
  for step, expected in enumerate(single):
    parts = [shards[p][step] for p in range(process_count)]
    assert parts[0]['id'].shape == (global_batch_size // process_count,)
    for key in expected:
      np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]), expected[key])


def test_resume_from_state_gives_the_same_next_batches():
  make = lambda: pipeline.make_train_iterator(_examples(), _transform, batch_size=3, seed=11)
  it = make()
  _take(it, 5)
  state = it.get_state()
  state = json.loads(json.dumps(state))  # must survive a JSON round trip
  expected = _take(it, 3)
  resumed = make()
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 3), expected)
  # And the state really moved: a fresh iterator starts elsewhere.
  assert not all(np.array_equal(a['id'], b['id']) for a, b in zip(_take(make(), 3), expected))


def test_resume_per_process():
  make = lambda: pipeline.make_train_iterator(_examples(), _transform, batch_size=4, seed=2,
                                              process_index=1, process_count=2)
  it = make()
  _take(it, 4)
  state = it.get_state()
  expected = _take(it, 2)
  resumed = make()
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 2), expected)


def test_bad_arguments():
  with pytest.raises(UserError, match='multiple'):
    pipeline.make_train_iterator(_examples(), _transform, batch_size=3, seed=0, process_count=2)
  with pytest.raises(UserError, match='no training examples'):
    pipeline.make_train_iterator([], _transform, batch_size=2, seed=0)
  with pytest.raises(ValueError, match='process_index'):
    pipeline.make_eval_batches(_examples(), lambda x: {}, batch_size=2, process_index=2,
                               process_count=2)


def _eval_transform(x_TP):
  return {'id': np.int32(x_TP[0, 0]), 'first': x_TP[:2, 0]}


def test_eval_batches_fixed_order_padded_with_weights():
  batches = list(pipeline.make_eval_batches(_examples(), _eval_transform, batch_size=4))
  assert len(batches) == 4  # ceil(13 / 4)
  ids = np.concatenate([b['id'] for b in batches])
  weights = np.concatenate([b['weight'] for b in batches])
  np.testing.assert_array_equal(ids, list(range(NUM_EXAMPLES)) + [NUM_EXAMPLES - 1] * 3)
  np.testing.assert_array_equal(weights, [1] * NUM_EXAMPLES + [0] * 3)
  assert batches[0]['weight'].dtype == np.float32 and batches[0]['weight'].shape == (4,)
  assert batches[0]['first'].shape == (4, 2)
  # Deterministic: a second pass is identical.
  _assert_batches_equal(
      batches, list(pipeline.make_eval_batches(_examples(), _eval_transform, batch_size=4)))


def test_eval_batches_sharded_cover_each_example_once():
  process_count = 2
  shards = [list(pipeline.make_eval_batches(
      _examples(), _eval_transform, batch_size=6, process_index=p, process_count=process_count))
            for p in range(process_count)]
  single = list(pipeline.make_eval_batches(_examples(), _eval_transform, batch_size=6))
  assert len(shards[0]) == len(shards[1]) == len(single) == 3  # same number of steps everywhere
  for step, expected in enumerate(single):
    for key in expected:
      np.testing.assert_array_equal(
          np.concatenate([shards[p][step][key] for p in range(process_count)]), expected[key])
  ids = np.concatenate([b['id'] for shard in shards for b in shard])
  weights = np.concatenate([b['weight'] for shard in shards for b in shard])
  assert sorted(ids[weights == 1]) == list(range(NUM_EXAMPLES))
  assert weights.sum() == NUM_EXAMPLES


def test_eval_batches_empty_and_weight_clash():
  assert not list(pipeline.make_eval_batches([], _eval_transform, batch_size=4))
  with pytest.raises(ValueError, match='weight'):
    list(pipeline.make_eval_batches(_examples(), lambda x: {'weight': np.float32(1)},
                                    batch_size=4))


def test_random_crop_window_and_padding():
  rng = np.random.default_rng(0)
  x_T = np.arange(10, dtype=np.float32)
  starts = set()
  for _ in range(200):
    crop = pipeline.random_crop(x_T, 4, rng)
    assert crop.shape == (4,)
    np.testing.assert_array_equal(crop, np.arange(crop[0], crop[0] + 4))
    starts.add(int(crop[0]))
  assert starts == set(range(7))  # every valid offset, none past the end
  short = pipeline.random_crop(np.ones((3, 2), np.float32), 5, rng)
  assert short.shape == (5, 2)
  np.testing.assert_array_equal(short[:3], 1)
  assert np.isnan(short[3:]).all()
  padded = pipeline.random_crop(np.ones(2, np.int32), 4, rng, pad_value=-1)
  np.testing.assert_array_equal(padded, [1, 1, -1, -1])
  assert padded.dtype == np.int32
  with pytest.raises(ValueError, match='pad_value'):
    pipeline.random_crop(np.ones(2, np.int32), 4, rng)
  exact = pipeline.random_crop(x_T, 10, rng)
  np.testing.assert_array_equal(exact, x_T)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches():
  # Defined here so that it is pickled by value: worker processes cannot import test modules.
  def transform(x_TP, rng):
    return {'id': np.int32(x_TP[0, 0]), 'noise': rng.standard_normal(3)}

  kwargs = dict(batch_size=4, seed=4)
  expected = _take(pipeline.make_train_iterator(_examples(), transform, **kwargs), 4)
  it = pipeline.make_train_iterator(_examples(), transform, worker_count=2, **kwargs)
  try:
    got = _take(it, 2)
    state = it.get_state()
    json.dumps(state)
    got += _take(it, 2)
  finally:
    it.close()
  _assert_batches_equal(got, expected)
  resumed = pipeline.make_train_iterator(_examples(), transform, worker_count=2, **kwargs)
  try:
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 2), expected[2:])
  finally:
    resumed.close()


def test_iterator_is_infinite():
  it = pipeline.make_train_iterator(_examples()[:5], _transform, batch_size=2, seed=0)
  assert len(list(itertools.islice(it, 20))) == 20  # 8 epochs of 5 examples


def test_example_uniforms_depend_only_on_seed_epoch_and_index():
  a = pipeline.example_uniforms(3, np.array([0, 0, 1]), np.array([5, 6, 5]), 4)
  assert a.shape == (3, 4) and np.all((a >= 0) & (a < 1))
  b = pipeline.example_uniforms(3, np.array([1, 0]), np.array([5, 5]), 4)
  np.testing.assert_array_equal(b[0], a[2])  # the same (seed, epoch, index) wherever it is
  np.testing.assert_array_equal(b[1], a[0])
  assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], a[2])
  other_seed = pipeline.example_uniforms(4, np.array([0]), np.array([5]), 4)
  assert not np.array_equal(other_seed[0], a[0])
  many = pipeline.example_uniforms(0, np.zeros(20000, np.int64), np.arange(20000), 1)
  assert abs(many.mean() - 0.5) < 0.01 and abs(np.mean(many < 0.1) - 0.1) < 0.01


def _batched(num_examples, batch_size, process_index=0, process_count=1):
  def make_batch(indices, epochs):
    u = pipeline.example_uniforms(7, epochs, indices, 1)[:, 0]
    return {'index': indices, 'epoch': epochs, 'u': u}
  return pipeline.make_batched_train_iterator(
      num_examples, make_batch, batch_size=batch_size, seed=7, process_index=process_index,
      process_count=process_count)


def test_batched_iterator_covers_each_epoch_and_splits_over_processes():
  it = _batched(10, 4)
  batches = [next(it) for _ in range(5)]  # 20 items: two epochs
  seen = np.concatenate([b['index'] for b in batches])
  epochs = np.concatenate([b['epoch'] for b in batches])
  assert sorted(seen[epochs == 0]) == list(range(10))
  assert sorted(seen[epochs == 1]) == list(range(10))
  assert not np.array_equal(seen[:10], seen[10:])  # each epoch has its own order
  halves = [_batched(10, 4, p, 2) for p in range(2)]
  for whole in batches:
    parts = [next(h) for h in halves]
    for key in ('index', 'epoch', 'u'):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_batched_iterator_resumes_from_its_state():
  it = _batched(10, 4)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it)['index'] for _ in range(3)]
  resumed = _batched(10, 4)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)['index'], want)
