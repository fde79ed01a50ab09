"""The one training loop every model uses.

A model plugs in through a `TrainTask` (how to build it, its loss, its data). The loop owns the
rest: a pure train step jitted over a 'data' Mesh with explicit shardings and a donated state,
orbax checkpoints of everything a resumed run needs (model, optimizer, step, RNG, data iterator),
automatic resume from --workdir, TensorBoard events and metrics.jsonl, steps/s and ETA, periodic
evaluation and samples, and a fail-fast stop on a non-finite loss that keeps the last good checkpoint.

Determinism: the step's RNG is `fold_in(key(seed), step)` and the data iterator state is saved with
the model, so a run that is killed and resumed ends with the same parameters as one that was not.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging as pylogging
import math
import os
import time
from typing import Any, Callable, Iterable, Iterator

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from common import configs
from common import datasets
from common import files
from common import sharding
from common.errors import UserError

Batch = dict[str, Any]
Metrics = dict[str, jax.Array]

CONFIG_FILE = configs.CONFIG_FILE
METRICS_FILE = 'metrics.jsonl'
CHECKPOINT_DIR = 'checkpoints'
SKIPPED_FILES = 'skipped_files.tsv'  # the data files the run's loads skipped, and why
CONFIG_CHANGES_FILE = 'config_changes.jsonl'  # settings a resumed run changed, with the time


@dataclasses.dataclass(frozen=True)
class TrainTask:
  """What a model gives the shared training loop.

  Attributes:
    build_model: (config, rngs) -> the model (any nnx.Module).
    loss_fn: (model in train mode, global batch, rng key, step) -> (scalar loss, scalar metrics).
      It may update nnx.BatchStat variables (batch norm); the loop keeps those updates.
    train_iterator: (config, process_index, process_count) -> an endless iterator of this process's
      share of each batch, with get_state() / set_state() so it can be checkpointed.
    eval_fn: (model in eval mode, batch with 'weight' (B,), rng) -> weighted-mean scalar metrics.
    eval_batches: (config, process_index, process_count) -> one finite pass over the eval split.
    make_optimizer: config -> optax transformation; by default Adam(config.learning_rate), clipped
      to config.grad_clip_norm when set.
    sample_hook: (model in eval mode, step, workdir) -> None; writes samples, runs on process 0.
    finish_hook: (model in eval mode, workdir) -> None; runs once on process 0 when the last step
      is done, to write files that ship with the checkpoint (MusicVAE's attribute vectors).
    shipped_files: the names of those files; export_weights copies them (or, when the run has
      none, runs finish_hook on the export).
  """
  build_model: Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]
  loss_fn: Callable[[nnx.Module, Batch, jax.Array, jax.Array], tuple[jax.Array, Metrics]]
  train_iterator: Callable[[ml_collections.ConfigDict, int, int], Iterator[Batch]]
  eval_fn: Callable[[nnx.Module, Batch, jax.Array], Metrics] | None = None
  eval_batches: Callable[[ml_collections.ConfigDict, int, int], Iterable[Batch]] | None = None
  make_optimizer: Callable[[ml_collections.ConfigDict], optax.GradientTransformation] | None = None
  sample_hook: Callable[[nnx.Module, int, str], None] | None = None
  finish_hook: Callable[[nnx.Module, str], None] | None = None
  shipped_files: tuple[str, ...] = ()


class NonFiniteLossError(UserError):
  """Training produced a NaN or infinite loss or gradient; the last good checkpoint is kept."""


def default_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam at config.learning_rate, with global-norm clipping when config.grad_clip_norm is set."""
  adam = optax.adam(config.learning_rate)
  clip = config.get('grad_clip_norm')
  return optax.chain(optax.clip_by_global_norm(clip), adam) if clip else adam


# ------------------------------------------------------------------------------------------------
# Pure steps.


def _train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                loss_fn: Callable, state: dict, batch: Batch) -> tuple[dict, Metrics]:
  """One optimizer step on the split state; pure, so it can be jitted and donated."""
  step = state['step']
  rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), step)

  def loss_and_updates(params):
    model = nnx.merge(graphdef, params, state['rest'], copy=True)
    loss, metrics = loss_fn(model, batch, rng, step)
    _, _, new_rest = nnx.split(model, nnx.Param, ...)
    return loss, (metrics, new_rest)

  (loss, (metrics, new_rest)), grads = jax.value_and_grad(loss_and_updates, has_aux=True)(
      state['params'])
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
  new_state = dict(state, step=step + 1, params=params, rest=new_rest, opt_state=opt_state)
  return new_state, metrics


def _eval_step(graphdef: nnx.GraphDef, eval_fn: Callable, state: dict, batch: Batch,
               rng: jax.Array) -> Metrics:
  model = nnx.merge(graphdef, state['params'], state['rest'])
  metrics = eval_fn(model, batch, rng)
  weight = jnp.sum(batch['weight']) if 'weight' in batch else jnp.asarray(1.0)
  # Weighted sums, so batches of different real sizes average correctly.
  return {**{k: v * weight for k, v in metrics.items()}, '_weight': weight}


# ------------------------------------------------------------------------------------------------
# State, checkpoints, logging.


def _init_state(task: TrainTask, config: ml_collections.ConfigDict,
                tx: optax.GradientTransformation):
  """Builds the model and the initial train state (a pytree of arrays) plus both graphdefs."""
  model = task.build_model(config, nnx.Rngs(config.seed))
  model.eval()
  eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  model.train()
  train_graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  state = {
      'step': jnp.asarray(0, jnp.int32),
      'params': params,
      'rest': rest,
      'opt_state': tx.init(params),
      'rng': jax.random.key_data(jax.random.key(config.seed)),
  }
  return train_graphdef, eval_graphdef, state


def _checkpoint_manager(workdir: str, config: ml_collections.ConfigDict,
                        read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.get('max_checkpoints_to_keep', 3),
      enable_async_checkpointing=False,  # the donated state is reused at once; keep saves simple
      cleanup_tmp_directories=not read_only,  # a save cut short by a kill leaves a tmp dir behind
      read_only=read_only,
      create=not read_only)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
                               options=options, item_names=('state', 'data'))


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    files.atomic_write(os.path.join(workdir, CONFIG_FILE),
                       lambda f: f.write(configs.config_json(config)), mode='w')


read_config = configs.read_config


class _MetricsWriter:
  """metrics.jsonl plus TensorBoard event files, on process 0 only."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    if not self._active:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(logdir=os.path.join(workdir, 'tensorboard'))
    self._jsonl = open(os.path.join(workdir, METRICS_FILE), 'a')

  def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
    if not self._active:
      return
    for name, value in metrics.items():
      self._tb.add_scalar(f'{split}/{name}', value, step)
    record = {'step': step, 'split': split, 'time': time.time(), **metrics}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()

  def close(self) -> None:
    if self._active:
      self._tb.close()
      self._jsonl.close()


class _DropLibraryInfo(pylogging.Filter):
  """Hides orbax's per-save INFO chatter so the loop's own progress lines stay readable."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if '/orbax/' not in record.pathname:
      return True
    # load_model opens checkpoints read-only on purpose; orbax warns about that each time.
    return record.levelno >= pylogging.WARNING and 'read only' not in record.getMessage().replace(
        '_', ' ')


def quiet_library_logs() -> None:
  """Installs the filter once on absl's logger (orbax logs through absl)."""
  logger = pylogging.getLogger('absl')
  if not any(isinstance(f, _DropLibraryInfo) for f in logger.filters):
    logger.addFilter(_DropLibraryInfo())


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


def _to_host(metrics: Metrics) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


# ------------------------------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass
class TrainingSetup:
  """The initial replicated state and the jitted train step (also used by the benchmarks)."""
  state: dict
  state_sharding: Any
  train_step: Callable[[dict, Batch], tuple[dict, Metrics]]  # donates its state argument
  train_graphdef: nnx.GraphDef
  eval_graphdef: nnx.GraphDef


def setup_training(task: TrainTask, config: ml_collections.ConfigDict,
                   mesh: jax.sharding.Mesh) -> TrainingSetup:
  """Builds the model and optimizer state on `mesh` and jits the train step with its shardings."""
  tx = (task.make_optimizer or default_optimizer)(config)
  train_graphdef, eval_graphdef, state = _init_state(task, config, tx)
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
  state = jax.device_put(state, state_sharding)
  train_step = jax.jit(
      functools.partial(_train_step, train_graphdef, tx, task.loss_fn),
      in_shardings=(state_sharding, sharding.batch_sharded(mesh)),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=(0,))
  return TrainingSetup(state, state_sharding, train_step, train_graphdef, eval_graphdef)


def train_and_evaluate(task: TrainTask, config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh | None = None) -> nnx.Module:
  """Trains `task` for config.num_train_steps, resuming from `workdir` if it has checkpoints.

  With config.max_train_seconds set, the run also stops (checkpointing and evaluating as at the
  last step) once that much wall-clock time of this process's loop is spent: equal-time
  comparisons of models or representations. Returns the final model in eval mode.
  """
  quiet_library_logs()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = mesh or sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  _record_config(config, workdir)

  if config.get('init_from'):  # before any checkpoint manager exists (see _check_same_model)
    _check_same_model(read_config(config.init_from), config, config.init_from)
  setup = setup_training(task, config, mesh)
  state, state_sharding, train_step = setup.state, setup.state_sharding, setup.train_step
  eval_graphdef = setup.eval_graphdef

  data_iter = task.train_iterator(config, jax.process_index(), jax.process_count())
  manager, restored = _resume(workdir, config, state, state_sharding)
  if restored is not None:
    start_step, state, data_state = restored
    data_iter.set_state(data_state)
    logging.info('Resumed from %s at step %d', manager.directory, start_step)
  elif config.get('init_from'):
    try:
      state = _init_weights_from(task, config, config.init_from, state, state_sharding)
    except BaseException:
      manager.close()  # an open manager's threads would print tracebacks at exit
      raise
  start_step = int(state['step'])

  eval_step = None
  if task.eval_fn is not None and task.eval_batches is not None:
    eval_step = jax.jit(
        functools.partial(_eval_step, eval_graphdef, task.eval_fn),
        in_shardings=(state_sharding, sharding.batch_sharded(mesh), sharding.replicated(mesh)),
        out_shardings=sharding.replicated(mesh))

  writer = _MetricsWriter(workdir)
  num_steps = config.num_train_steps
  log_every = config.get('log_every_steps', 100)
  checkpoint_every = config.get('checkpoint_every_steps', 1000)
  eval_every = config.get('eval_every_steps', 0)
  sample_every = config.get('sample_every_steps', 0)
  time_budget = config.get('max_train_seconds')
  last_good_step = start_step if start_step > 0 else None

  def check_finite(step: int, metrics: dict[str, float]) -> None:
    if not (math.isfinite(metrics['loss']) and math.isfinite(metrics['grad_norm'])):
      kept = (f'the last good checkpoint (step {last_good_step}) is kept in '
              f'{manager.directory}' if last_good_step else 'no checkpoint was written yet')
      raise NonFiniteLossError(
          f'training stopped at step {step}: loss={metrics["loss"]}, '
          f'grad_norm={metrics["grad_norm"]}; {kept}. Try a lower learning rate '
          f'(--config.learning_rate) or gradient clipping (--config.grad_clip_norm).')

  logging.info('Training %s for %d steps (from step %d) on %d device(s); workdir %s',
               config.get('task', '?'), num_steps, start_step, mesh.devices.size, workdir)
  pending = None  # (step, device metrics): read one step late so the host never stalls the device
  window_start, window_steps = time.perf_counter(), 0
  loop_start = window_start
  try:
    for step in range(start_step, num_steps):
      batch = sharding.global_batch(next(data_iter), mesh)
      state, metrics = train_step(state, batch)
      done = step + 1
      if pending is not None:
        host = _to_host(pending[1])
        check_finite(pending[0], host)
        if pending[0] % log_every == 0:
          _log_train(writer, pending[0], host, window_steps, window_start, num_steps)
          window_start, window_steps = time.perf_counter(), 0
      pending = (done, metrics)
      window_steps += 1
      if step == start_step:  # the data is loaded by now
        _report_skipped_files(workdir)

      out_of_time = _time_is_up(time_budget, loop_start, done, log_every)
      is_last = done == num_steps or out_of_time
      if done % checkpoint_every == 0 or is_last:
        host = _to_host(metrics)
        check_finite(done, host)
        manager.save(done, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_iter.get_state())))
        last_good_step = done
      if eval_step is not None and eval_every and (done % eval_every == 0 or is_last):
        _evaluate(task, config, eval_step, state, mesh, writer, done)
      if task.sample_hook is not None and sample_every and done % sample_every == 0:
        if jax.process_index() == 0:
          task.sample_hook(_merge_eval(eval_graphdef, state), done, workdir)
      if out_of_time:
        logging.info('Stopped at step %d: the time budget of %.0f s (max_train_seconds) is spent',
                     done, time_budget)
        break
    if pending is not None:
      host = _to_host(pending[1])
      check_finite(pending[0], host)
      _log_train(writer, pending[0], host, window_steps, window_start, num_steps)
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
  _report_skipped_files(workdir)  # evaluation may have loaded more
  model = _merge_eval(eval_graphdef, state)
  if task.finish_hook is not None and jax.process_index() == 0:
    task.finish_hook(model, workdir)
  return model


def _report_skipped_files(workdir: str) -> None:
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, SKIPPED_FILES)
  count = datasets.write_skip_report(path)
  if count:
    logging.info('%d data files were skipped; %s names them and says why', count, path)


def _time_is_up(budget: float | None, start: float, done: int, check_every: int) -> bool:
  """Whether `budget` seconds of this run's loop (compilation and evaluations included) are
  spent. With several processes, process 0 decides every `check_every` steps for all of them, so
  they stop at the same step."""
  if not budget:
    return False
  if jax.process_count() == 1:
    return time.perf_counter() - start >= budget
  if done % check_every:
    return False
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  spent = np.array(time.perf_counter() - start >= budget)
  return bool(multihost_utils.broadcast_one_to_all(spent))


def _log_train(writer: _MetricsWriter, step: int, metrics: dict[str, float], window_steps: int,
               window_start: float, num_steps: int) -> None:
  steps_per_sec = window_steps / max(time.perf_counter() - window_start, 1e-9)
  eta = (num_steps - step) / steps_per_sec if steps_per_sec > 0 else float('inf')
  shown = ' '.join(f'{k} {v:.4g}' for k, v in sorted(metrics.items()))
  logging.info('step %d/%d | %s | %.2f steps/s | ETA %s', step, num_steps, shown, steps_per_sec,
               _format_seconds(eta) if math.isfinite(eta) else '?')
  writer.write(step, 'train', dict(metrics, steps_per_sec=steps_per_sec))


def _evaluate(task: TrainTask, config: ml_collections.ConfigDict, eval_step: Callable,
              state: dict, mesh: jax.sharding.Mesh, writer: _MetricsWriter, step: int) -> dict:
  rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
  means = _weighted_means(
      _to_host(eval_step(state, sharding.global_batch(local_batch, mesh),
                         jax.random.fold_in(rng, i)))
      for i, local_batch in enumerate(
          task.eval_batches(config, jax.process_index(), jax.process_count())))
  if not means:
    logging.warning('step %d: the eval split is empty; skipped evaluation', step)
    return {}
  logging.info('eval at step %d | %s', step, ' '.join(f'{k} {v:.4g}' for k, v in sorted(means.items())))
  writer.write(step, 'eval', means)
  return means


def _weighted_means(batch_sums: Iterable[dict[str, float]]) -> dict[str, float]:
  """Means of _eval_step's weighted sums over batches ({} when no weight at all)."""
  totals: dict[str, float] = {}
  for sums in batch_sums:
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + v
  weight = totals.pop('_weight', 0.0)
  return {k: v / weight for k, v in totals.items()} if weight else {}


def evaluate_model(eval_fn: Callable, model: nnx.Module, batches: Iterable[Batch],
                   seed: int = 0) -> dict[str, float]:
  """Weighted means of a task's eval_fn over host batches (with 'weight'), for a loaded model
  in one process: what the training loop's periodic evaluation computes."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  eval_step = jax.jit(functools.partial(_eval_step, graphdef, eval_fn))
  state = {'params': params, 'rest': rest}
  rng = jax.random.key(seed)
  return _weighted_means(_to_host(eval_step(state, batch, jax.random.fold_in(rng, i)))
                         for i, batch in enumerate(batches))


def _merge_eval(eval_graphdef: nnx.GraphDef, state: dict) -> nnx.Module:
  # Copy: the train step donates (and so invalidates) the buffers of `state`.
  params, rest = jax.tree.map(jnp.copy, (state['params'], state['rest']))
  return nnx.merge(eval_graphdef, params, rest)


def _newest_readable(manager: ocp.CheckpointManager, restore: Callable[[int], Any],
                     steps: Iterable[int]) -> tuple[int, Any, list[int]] | None:
  """(step, restore(step), unreadable newer steps) for the newest step that restores; None when
  none does. Each unreadable step is named in a warning; nothing is deleted."""
  unreadable = []
  for step in sorted(steps, reverse=True):
    try:
      return step, restore(step), unreadable
    except Exception as e:  # pylint: disable=broad-except
      # A half-written or damaged checkpoint fails in orbax, tensorstore or the OS in many ways.
      logging.warning('Checkpoint step %d in %s cannot be read (%s: %s); trying an older one',
                      step, manager.directory, type(e).__name__, str(e)[:300])
      unreadable.append(step)
  return None


def _resume(workdir: str, config: ml_collections.ConfigDict, state: dict, state_sharding: Any
            ) -> tuple[ocp.CheckpointManager, tuple[int, dict, Any] | None]:
  """The run's checkpoint manager and (step, state, data-iterator state) of its newest readable
  checkpoint (None for a fresh run). Unreadable newer steps are moved aside, not deleted, to
  <step>.unreadable, so that the run can save those steps again."""
  manager = _checkpoint_manager(workdir, config)
  steps = manager.all_steps()
  if not steps:
    return manager, None
  found = _newest_readable(manager, lambda step: _restore(manager, step, state, state_sharding),
                           steps)
  if found is None:
    manager.close()
    raise UserError(f'{manager.directory}: no checkpoint can be read with this config (steps '
                    f'{sorted(steps)}; was the run trained with another? its config.json says); '
                    'nothing was changed')
  step, (restored_state, data_state), unreadable = found
  if unreadable and jax.process_index() == 0:
    for bad in unreadable:
      source = os.path.join(str(manager.directory), str(bad))
      os.replace(source, f'{source}.unreadable')
      logging.warning('Moved the unreadable checkpoint to %s.unreadable; resuming from step %d',
                      source, step)
    manager.close()
    manager = _checkpoint_manager(workdir, config)
  return manager, (step, restored_state, data_state)


def _record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes config.json for a new run. A resumed run keeps the recorded one (its checkpoints
  were trained with it): a different model is refused, other differences are logged and added
  to config_changes.jsonl with the step they start at."""
  path = os.path.join(workdir, CONFIG_FILE)
  has_checkpoints = os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)) and any(
      name.isdigit() for name in os.listdir(os.path.join(workdir, CHECKPOINT_DIR)))
  if not (os.path.exists(path) and has_checkpoints):
    _write_config(config, workdir)
    return
  recorded = read_config(workdir)
  _check_same_model(recorded, config, workdir, resuming=True)
  differences = config_differences(recorded, config)
  if differences and jax.process_index() == 0:
    logging.warning('This run\'s config differs from the one recorded in %s (%s); the record is '
                    'kept, and the change is added to %s', path, '; '.join(
                        f'{k}: {old!r} there, {new!r} here' for k, (old, new) in
                        differences.items()), CONFIG_CHANGES_FILE)
    change = {'time': time.time(), 'changes': {k: new for k, (_, new) in differences.items()}}
    with open(os.path.join(workdir, CONFIG_CHANGES_FILE), 'a') as f:
      f.write(json.dumps(change) + '\n')


def config_differences(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict
                       ) -> dict[str, tuple[Any, Any]]:
  """{dotted setting: (old value, new value)} for the settings in which two configs differ,
  compared as config.json records them."""
  def flat(tree, prefix=''):
    out = {}
    for key, value in tree.items():
      if isinstance(value, dict):
        out.update(flat(value, f'{prefix}{key}.'))
      else:
        out[f'{prefix}{key}'] = value
    return out
  a = flat(json.loads(configs.config_json(old)))
  b = flat(json.loads(configs.config_json(new)))
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _restore(manager: ocp.CheckpointManager, step: int, state: dict,
             state_sharding: Any) -> tuple[dict, Any]:
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_sharding)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
  return restored['state'], restored['data']


def _restore_weights(manager: ocp.CheckpointManager, step: int, abstract: dict) -> dict:
  """{'params', 'rest'} of a checkpoint: from a full training state or a weights-only export."""
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), abstract)
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      abstract, restore_args=restore_args, partial_restore=True)))['state']


def _weights_manager(workdir: str, config: ml_collections.ConfigDict, step: int | None
                     ) -> tuple[ocp.CheckpointManager, int]:
  directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)
  if not os.path.isdir(directory):
    raise UserError(f'{workdir}: no checkpoints found (expected {directory}); train first with '
                    f'python -m experiments.train --workdir={workdir}')
  manager = _checkpoint_manager(workdir, config, read_only=True)
  step = manager.latest_step() if step is None else step
  have = sorted(manager.all_steps())
  if step is None or step not in have:
    manager.close()
    raise UserError(f'{workdir}: no checkpoint at step {step}; have {have}')
  return manager, step


def _abstract_weights(task: TrainTask, config: ml_collections.ConfigDict
                      ) -> tuple[nnx.GraphDef, dict]:
  model = nnx.eval_shape(lambda: task.build_model(config, nnx.Rngs(config.get('seed', 0))))
  model.eval()
  eval_graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  replicated = sharding.replicated(sharding.make_mesh(1))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          {'params': params, 'rest': rest})
  return eval_graphdef, abstract


def _check_same_model(source_config: ml_collections.ConfigDict,
                      config: ml_collections.ConfigDict, source: str, *,
                      resuming: bool = False) -> None:
  """UserError naming the model settings in which two configs differ (checked before restoring:
  a failed orbax restore leaves threads that print tracebacks at exit)."""
  if resuming:
    where, advice = f'{source}: cannot resume this run with', 'use a new --workdir'
  else:
    where, advice = f'init_from={source}:', 'fine-tuning needs the same model'
  if source_config.get('task') != config.get('task'):
    raise UserError(f'{where} a {config.get("task")} config: it holds a '
                    f'{source_config.get("task")} run; {advice}')
  def settings(c):  # through JSON, as config.json stores them (tuples become lists)
    return json.loads(c.model.to_json_best_effort()) if c.get('model') is not None else {}

  mine, theirs = settings(config), settings(source_config)
  differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
  if differ:
    details = ', '.join(f'{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here' for k in differ)
    raise UserError(f'{where} other model settings ({details}); {advice}')


def _init_weights_from(task: TrainTask, config: ml_collections.ConfigDict, source: str,
                       state: dict, state_sharding: Any) -> dict:
  """A fresh train state whose weights are those of the latest checkpoint in `source` (a
  training workdir or an export); step and optimizer state start anew. Fine-tuning, e.g. CP-word
  on EMOPIA from a Pop1K7 model: the model config must match the source's."""
  manager, step = _weights_manager(source, config, None)
  _, abstract = _abstract_weights(task, config)
  try:
    weights = _restore_weights(manager, step, abstract)
  except (ValueError, KeyError) as e:
    raise UserError(f'init_from={source}: its weights do not fit this model config ({e}); '
                    'use the same model settings as the run that wrote it') from e
  finally:
    manager.close()
  new_state = dict(state, params=weights['params'], rest=weights['rest'])
  new_state = jax.device_put(new_state, state_sharding)
  logging.info('Initialised the weights from %s (step %d)', source, step)
  return new_state


def load_model(task: TrainTask, config: ml_collections.ConfigDict, workdir: str,
               step: int | None = None) -> nnx.Module:
  """The model of the latest (or a given) checkpoint in `workdir`, in eval mode, on one device.

  Reads only the weights, so it loads training checkpoints and weights-only exports alike.
  """
  quiet_library_logs()
  eval_graphdef, abstract = _abstract_weights(task, config)
  step, weights = _read_weights(workdir, config, step, abstract)
  logging.info('Loaded %s step %d', os.path.join(workdir, CHECKPOINT_DIR), step)
  return nnx.merge(eval_graphdef, weights['params'], weights['rest'])


def _read_weights(workdir: str, config: ml_collections.ConfigDict, step: int | None,
                  abstract: dict) -> tuple[int, dict]:
  """(step, weights) of the given step, or of the newest step that can be read (an unreadable
  newer one is named in a warning)."""
  manager, chosen = _weights_manager(workdir, config, step)
  try:
    if step is not None:
      return chosen, _restore_weights(manager, chosen, abstract)
    found = _newest_readable(manager, lambda s: _restore_weights(manager, s, abstract),
                             manager.all_steps())
    if found is None:
      raise UserError(f'{manager.directory}: no checkpoint can be read with its config.json '
                      f'(steps {sorted(manager.all_steps())})')
    return found[0], found[1]
  finally:
    manager.close()


def export_weights(task: TrainTask, config: ml_collections.ConfigDict, workdir: str,
                   out_dir: str, step: int | None = None) -> str:
  """Writes `out_dir` with the run's config.json, metrics.jsonl and a weights-only checkpoint of
  `step` (no optimizer state: a third of a training checkpoint for Adam). load_model, evaluate and
  generate read it like a training workdir; training from it starts a new run."""
  quiet_library_logs()
  eval_graphdef, abstract = _abstract_weights(task, config)
  step, weights = _read_weights(workdir, config, step, abstract)
  _write_weights_workdir(config, weights, out_dir, step, {'exported_from': workdir})
  metrics = os.path.join(workdir, METRICS_FILE)
  if os.path.exists(metrics):
    with open(metrics, 'rb') as src:
      files.atomic_write(os.path.join(out_dir, METRICS_FILE), lambda dst: dst.write(src.read()))
  _ship_files(task, workdir, out_dir, lambda: nnx.merge(eval_graphdef, weights['params'],
                                                        weights['rest']))
  return os.path.join(out_dir, CHECKPOINT_DIR, str(step))


def save_model(config: ml_collections.ConfigDict, model: nnx.Module, out_dir: str, *,
               step: int = 0, origin: dict[str, Any] | None = None) -> str:
  """Writes `out_dir` as a weights-only workdir of `model` (config.json and checkpoints/<step>),
  which load_model, evaluate, generate and init_from read like a training run: e.g. weights
  imported from an original implementation. `origin` is recorded beside the weights."""
  _, params, rest = nnx.split(model, nnx.Param, ...)
  _write_weights_workdir(config, {'params': params, 'rest': rest}, out_dir, step, origin or {})
  return os.path.join(out_dir, CHECKPOINT_DIR, str(step))


def _write_weights_workdir(config: ml_collections.ConfigDict, weights: dict, out_dir: str,
                           step: int, record: dict[str, Any]) -> None:
  if os.path.exists(os.path.join(out_dir, CHECKPOINT_DIR)):
    raise UserError(f'{out_dir} already holds checkpoints; write into a new folder')
  os.makedirs(out_dir, exist_ok=True)
  _write_config(config, out_dir)
  out = _checkpoint_manager(out_dir, config)
  out.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(weights),
                                         data=ocp.args.JsonSave(record)))
  out.wait_until_finished()
  out.close()


def _ship_files(task: TrainTask, workdir: str, out_dir: str,
                model: Callable[[], nnx.Module]) -> None:
  """Copies the files that ship beside a checkpoint into an export; makes them when missing."""
  missing = False
  for name in task.shipped_files:
    source = os.path.join(workdir, name)
    if os.path.exists(source):
      with open(source, 'rb') as src:
        files.atomic_write(os.path.join(out_dir, name), lambda dst: dst.write(src.read()))
    else:
      missing = True
  if missing and task.finish_hook is not None:
    task.finish_hook(model(), out_dir)

