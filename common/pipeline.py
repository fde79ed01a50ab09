"""Input pipelines on grain: shuffled, sharded, checkpointable batches of numpy arrays.

Training streams are infinite and reshuffled every epoch. Both kinds of stream are cut into global
batches of `batch_size` items; process `p` of `P` gets rows `[p * L, (p + 1) * L)` of every global
batch, where `L = batch_size // P`. So P processes together see exactly the batches that one process
with the whole `batch_size` would see, and every process runs the same number of steps.

A training item's randomness (crops, transpositions) comes from a `np.random.Generator` seeded by
(seed, epoch, example index), so a batch depends only on the seed and its position in the stream:
resuming from `get_state()` reproduces the rest of the run exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import functools
from typing import Any, TYPE_CHECKING

import numpy as np

from common.errors import UserError

if TYPE_CHECKING:
  import grain

Batch = dict[str, np.ndarray]

@functools.cache
def _grain():
  """grain, imported when a pipeline is first built: a process that only runs a model on its own
  batches (a GPU check, a benchmark) does not need it."""
  import grain  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return grain


def _read_options():
  # Transforms are cheap numpy: read synchronously in the calling thread. Reader threads would
  # only fight over the GIL (and the two CPU cores of a small machine) without speeding anything.
  return _grain().ReadOptions(num_threads=0, prefetch_buffer_size=0)


def _check_sharding(batch_size: int, process_index: int, process_count: int) -> int:
  """Returns the per-process batch size; rejects impossible splits."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, {process_count}).')
  if batch_size < 1 or batch_size % process_count:
    raise UserError(
        f'batch_size {batch_size} must be a positive multiple of the process count '
        f'{process_count}: every process takes an equal share of each global batch.')
  return batch_size // process_count


def _take_process_share(ds: grain.MapDataset, local_batch_size: int, process_index: int,
                        process_count: int) -> grain.MapDataset:
  """Batches by `local_batch_size` and keeps this process's batch out of every `process_count`.

  Local batch `m` holds stream items `[m * L, (m + 1) * L)`; global batch `g` is local batches
  `g * P .. g * P + P - 1`, so process `p` keeps `m = g * P + p`.
  """
  ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.slice(slice(process_index, None, process_count))


def _seed_entropy(seed: int) -> int:
  # np.random seeds must be non-negative; JAX-style configs may use any int.
  return int(seed) % 2**64


def _shuffle_seed(seed: int) -> int:
  # grain wants a 32-bit seed; derive it so that nearby seeds give unrelated orders.
  state = np.random.SeedSequence([_seed_entropy(seed), 0x5EED]).generate_state(1, np.uint32)
  return int(state[0])


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The generator a training transform gets for example `index` in `epoch`."""
  return np.random.default_rng([_seed_entropy(seed), epoch, index])


def make_train_iterator(examples: Sequence[Any],
                        transform: Callable[[Any, np.random.Generator], Batch],
                        *,
                        batch_size: int,
                        seed: int,
                        process_index: int = 0,
                        process_count: int = 1,
                        worker_count: int = 0) -> grain.DatasetIterator:
  """An infinite iterator of this process's share of shuffled global training batches.

  Args:
    examples: the training examples (any random-access sequence).
    transform: (example, rng) -> dict of numpy arrays of fixed shapes; use only `rng` for
      randomness so that runs are reproducible.
    batch_size: the global batch size; each item has leading dim batch_size // process_count.
    seed: fixes the order of every epoch and every transform's rng.
    process_index: this process (jax.process_index()).
    process_count: number of processes (jax.process_count()).
    worker_count: > 0 runs transforms in that many grain worker processes (for heavy transforms;
      the state format differs, so resume with the same worker_count).

  Returns:
    A grain DatasetIterator: `next()` gives a batch dict; `get_state()` returns a JSON-able dict and
    `set_state(state)` on a fresh iterator of the same pipeline resumes exactly after that point.
  """
  local_batch_size = _check_sharding(batch_size, process_index, process_count)
  num_examples = len(examples)
  if num_examples == 0:
    raise UserError('make_train_iterator: there are no training examples (empty dataset?).')

  def load(stream_index: int, example_index: int) -> Batch:
    epoch = stream_index // num_examples
    return transform(examples[example_index], item_rng(seed, epoch, example_index))

  # Shuffle indices, not examples, so the transform knows which example it holds; repeat() after
  # shuffle() reseeds the permutation for every epoch.
  ds = _grain().MapDataset.range(num_examples).shuffle(seed=_shuffle_seed(seed)).repeat(None)
  ds = ds.map_with_index(load)
  ds = _take_process_share(ds, local_batch_size, process_index, process_count)
  iter_ds = ds.to_iter_dataset(_read_options())
  if worker_count > 0:
    _allow_grain_flags()
    iter_ds = iter_ds.mp_prefetch(_grain().MultiprocessingOptions(num_workers=worker_count))
  return iter(iter_ds)


def example_uniforms(seed: int, epochs: np.ndarray, indices: np.ndarray, count: int
                     ) -> np.ndarray:
  """(N, count) float64 uniforms in [0, 1) that depend only on (seed, epoch, example index):
  a batch transform gets the same randomness for an example however the stream is batched or
  shared among processes. Counter-based (splitmix64 over the three numbers), so one vectorized
  call serves a whole batch."""
  def mix(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))

  with np.errstate(over='ignore'):
    key = mix(np.uint64(_seed_entropy(seed)))
    base = mix(key ^ mix(np.asarray(epochs, np.uint64) * np.uint64(0x100000001B3)))
    base = mix(base ^ np.asarray(indices, np.uint64))
    words = mix(base[:, None] ^ np.arange(1, count + 1, dtype=np.uint64)[None, :])
  return (words >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def make_batched_train_iterator(num_examples: int,
                                make_batch: Callable[[np.ndarray, np.ndarray], Batch],
                                *,
                                batch_size: int,
                                seed: int,
                                process_index: int = 0,
                                process_count: int = 1,
                                worker_count: int = 0) -> grain.DatasetIterator:
  """make_train_iterator for transforms that work on a whole batch at once (numpy over rows):
  one pipeline element per batch instead of one per example, for input rates an accelerator
  needs (hundreds of batches of hundreds of examples a second).

  make_batch(example_indices_L, epochs_L) returns this process's rows of a batch; its randomness
  should come from example_uniforms(seed, epochs_L, example_indices_L, k), so that P processes
  together see exactly the batches one process would. Every epoch visits the examples in a
  permutation of its own (seeded by seed and epoch); the iterator's state resumes the stream.
  """
  local_batch_size = _check_sharding(batch_size, process_index, process_count)
  if num_examples == 0:
    raise UserError('make_batched_train_iterator: there are no training examples (empty '
                    'dataset?).')
  permutations: dict[int, np.ndarray] = {}

  def permutation(epoch: int) -> np.ndarray:
    if epoch not in permutations:
      if len(permutations) > 2:
        permutations.pop(min(permutations))
      rng = np.random.default_rng([_seed_entropy(seed), epoch, 0x5EED])
      permutations[epoch] = rng.permutation(num_examples)
    return permutations[epoch]

  def load(batch_index: int) -> Batch:
    first = batch_index * batch_size + process_index * local_batch_size
    positions = np.arange(first, first + local_batch_size)
    epochs = positions // num_examples
    indices = np.empty(local_batch_size, np.int64)
    for epoch in np.unique(epochs):
      rows = epochs == epoch
      indices[rows] = permutation(int(epoch))[positions[rows] % num_examples]
    return make_batch(indices, epochs)

  ds = _grain().MapDataset.range(2**62).map(load)
  iter_ds = ds.to_iter_dataset(_read_options())
  if worker_count > 0:
    _allow_grain_flags()
    iter_ds = iter_ds.mp_prefetch(_grain().MultiprocessingOptions(num_workers=worker_count))
  return iter(iter_ds)


def _allow_grain_flags() -> None:
  # grain's worker processes read grain's absl flags; outside absl.app.run (tests, notebooks)
  # nothing has parsed them and the workers would crash, so fall back to the flag defaults.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_eval_batches(examples: Sequence[Any],
                      transform: Callable[[Any], Batch],
                      *,
                      batch_size: int,
                      process_index: int = 0,
                      process_count: int = 1) -> Iterator[Batch]:
  """One pass over `examples` in order, in this process's shares of global batches.

  The last global batch is padded by repeating the last example; every batch has 'weight',
  float32 (batch_size // process_count,), 1 for real items and 0 for padding. All processes get
  the same number of batches (one per global batch).
  """
  local_batch_size = _check_sharding(batch_size, process_index, process_count)
  num_examples = len(examples)
  if num_examples == 0:
    return iter(())
  num_global_batches = -(-num_examples // batch_size)

  def load(stream_index: int) -> Batch:
    item = dict(transform(examples[min(stream_index, num_examples - 1)]))
    if 'weight' in item:
      raise ValueError("make_eval_batches: the transform's output may not have a 'weight' key.")
    item['weight'] = np.float32(stream_index < num_examples)
    return item

  ds = _grain().MapDataset.range(num_global_batches * batch_size).map(load)
  ds = _take_process_share(ds, local_batch_size, process_index, process_count)
  return iter(ds.to_iter_dataset(_read_options()))


def random_crop(x_T: np.ndarray, crop_len: int, rng: np.random.Generator,
                pad_value=np.nan) -> np.ndarray:
  """A uniformly placed window of `crop_len` along axis 0, padded at the end when too short."""
  if crop_len < 1:
    raise ValueError(f'random_crop: crop_len must be positive, got {crop_len}.')
  length = x_T.shape[0]
  if length >= crop_len:
    start = int(rng.integers(0, length - crop_len + 1))
    return x_T[start:start + crop_len]
  if not np.issubdtype(x_T.dtype, np.inexact) and np.isnan(pad_value):
    raise ValueError(f'random_crop: cannot pad an integer array with {pad_value}; pass pad_value.')
  pad_width = [(0, crop_len - length)] + [(0, 0)] * (x_T.ndim - 1)
  return np.pad(x_T, pad_width, constant_values=pad_value)
