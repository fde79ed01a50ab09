"""Coconet's samplers and the musical tasks built on them.

Variables are (time step, voice) pairs; `free_BTI` (bool) marks the ones a sampler may write, every
other variable is given and is never changed: each sampler only ever writes through
`where(free, new, old)`, and the tasks finally copy the given notes back. Arrays:
  roll_BTPI  float32 one-hot piano rolls (see coconet.data); free/given masks (B, T, I).

Samplers (all jitted end to end, batched over pieces; the model runs in eval mode, i.e. with its
batch-norm population statistics):
  independent  one pass: every free variable from the same forward pass.
  ancestral    one free variable at a time, each conditioned on everything sampled so far; order
               'chronological' (time-major, soprano to bass within a step) or 'random'.
  gibbs        annealed blocked Gibbs (the paper's default): start from an independent fill (or
               from the given piece, init='given'), then for n = 0..N-1 resample a random block of
               the free variables, p_n = max(pmin, pmax - (pmax - pmin) * n / (eta * N)).
               block='bernoulli' (the original's): each free variable joins the block with
               probability p_n, independently (a block may be empty); block='subset': exactly
               round(p_n * F) of the F free variables, at least 1. N (gibbs_steps) defaults to
               T * I.

Defaults are those of Magenta's coconet_sample.py, whose default path (--tfsample, lib_tfsampling.py
CoconetSampleGraph) fills the free variables once independently and then runs N = T * 4 Gibbs steps
with Bernoulli blocks, YaoSchedule(pmin=0.1, pmax=0.9, alpha=0.7) (our eta is its alpha) and
temperature 0.99 (logits / temperature; 0 = argmax). Its ancestral strategies ('chronological',
'orderless') pick one free variable per forward pass, as ours do. (Magenta's NumPy path,
--notfsample, differs: no initial fill, N = the number of free variables.)

Tasks: harmonize a soprano, complete erased regions, generate from scratch, revoice (each voice in
turn is resampled given the current other three; chosen voices are kept, the soprano by default),
upsample from the quarter-note grid to 16ths (the quarter frames are kept).
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any, Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from common import generation
from common import masking
from common import sampling
from common.errors import UserError
from coconet import data
from coconet import model as model_lib

METHODS = ('independent', 'ancestral', 'gibbs')
ORDERS = ('chronological', 'random')
BLOCKS = ('bernoulli', 'subset')
# The original code's defaults (Magenta coconet_sample.py / lib_tfsampling.py, see above).
DEFAULTS = dict(method='gibbs', order='chronological', temperature=0.99, pmax=0.9, pmin=0.1,
                eta=0.7, block='bernoulli')
# Progress is reported (ProgressFn(done, total)) about this many times over a sampler's steps.
PROGRESS_UPDATES = 50


# ------------------------------------------------------------------------------------------------
# Building blocks


def _eval_split(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
  """The model in eval mode (population batch-norm statistics), split for jax.jit."""
  return nnx.split(nnx.view(model, use_running_average=True))


def _logits(graphdef: nnx.GraphDef, state: nnx.State, roll_BTPI: jax.Array,
            mask_BTI: jax.Array) -> jax.Array:
  return model_lib.logits_in_chunks(nnx.merge(graphdef, state), roll_BTPI,
                                    mask_BTI.astype(jnp.float32))


def sample_pitches(key: jax.Array, logits_BTPI: jax.Array, temperature: jax.Array | float
                   ) -> jax.Array:
  """Pitch indices (B, T, I) from logits over axis 2; temperature 0 means argmax."""
  temperature = jnp.asarray(temperature, jnp.float32)
  scaled = logits_BTPI / jnp.maximum(temperature, 1e-6)
  # One uniform number per variable (inverse CDF), as MusicVAE samples, instead of
  # jax.random.categorical's Gumbel variable per pitch: a batch-64 draw 2-3 against 3.5-4.4 ms
  # (`python -m experiments.benchmark --only=coconet/pitch_draw`).
  sampled = sampling.categorical(key, jnp.swapaxes(scaled, 2, 3))
  return jnp.where(temperature > 0, sampled, sampling.first_argmax(logits_BTPI, axis=2))


def _onehot_BTPI(indices_BTI: jax.Array, num_pitches: int) -> jax.Array:
  return jax.nn.one_hot(indices_BTI, num_pitches, axis=2, dtype=jnp.float32)


def _write(roll_BTPI: jax.Array, new_BTPI: jax.Array, where_BTI: jax.Array) -> jax.Array:
  return jnp.where(where_BTI[:, :, None, :], new_BTPI, roll_BTPI)


def gibbs_schedule(gibbs_steps: int, pmax: float = 0.9, pmin: float = 0.1, alpha: float = 0.7
                   ) -> np.ndarray:
  """p_n = max(pmin, pmax - (pmax - pmin) * n / (alpha * N)) for n = 0..N-1 (float64); alpha is
  --eta (Magenta's YaoSchedule alpha)."""
  n = np.arange(gibbs_steps, dtype=np.float64)
  return np.maximum(pmin, pmax - (pmax - pmin) * n / (alpha * max(gibbs_steps, 1)))


def gibbs_block_sizes(num_free_B: np.ndarray, gibbs_steps: int, pmax: float = 0.9,
                      pmin: float = 0.1, alpha: float = 0.7) -> np.ndarray:
  """int32 (N, B): variables resampled at each Gibbs step, round(p_n * free), at least 1."""
  p_N = gibbs_schedule(gibbs_steps, pmax, pmin, alpha)
  sizes = np.maximum(1, np.round(p_N[:, None] * np.asarray(num_free_B)[None, :]))
  return np.minimum(sizes, np.asarray(num_free_B)[None, :]).astype(np.int32)


def check_schedule(pmax: float, pmin: float, alpha: float) -> None:
  """UserError unless 0 <= pmin <= pmax <= 1 and eta (alpha) > 0."""
  if not 0.0 <= pmin <= pmax <= 1.0:
    raise UserError(f'the Gibbs schedule needs 0 <= --pmin <= --pmax <= 1, got pmin={pmin:g} '
                    f'pmax={pmax:g}')
  if not alpha > 0.0:
    raise UserError(f'--eta must be > 0 (the fraction of the Gibbs steps over which the block '
                    f'fraction falls to pmin), got {alpha:g}')


ProgressFn = Callable[[int, int], None]


def _segments(total: int, progress: ProgressFn | None) -> list[tuple[int, int]]:
  """[start, stop) ranges covering 0..total: one without progress, else about PROGRESS_UPDATES."""
  if progress is None or total <= 1:
    return [(0, total)]
  size = max(1, -(-total // PROGRESS_UPDATES))
  return [(start, min(start + size, total)) for start in range(0, total, size)]


# ------------------------------------------------------------------------------------------------
# Jitted samplers on rolls


@functools.partial(jax.jit, static_argnames=('graphdef',))
def _independent(graphdef, state, key, roll_BTPI, free_BTI, temperature):
  logits = _logits(graphdef, state, roll_BTPI, free_BTI)
  new = _onehot_BTPI(sample_pitches(key, logits, temperature), roll_BTPI.shape[2])
  return _write(roll_BTPI, new, free_BTI)


@functools.partial(jax.jit, static_argnames=('graphdef',))
def _ancestral(graphdef, state, key, roll_BTPI, remaining_BTI, priority_BN, temperature, start,
               stop):
  """Steps start..stop-1 of ancestral sampling; returns (roll, the variables still to sample)."""
  batch, steps, pitches, voices = roll_BTPI.shape
  num_vars = steps * voices
  rows = jnp.arange(batch)

  def body(n, carry):
    roll, remaining_BN = carry
    has_B = jnp.any(remaining_BN, axis=1)
    pick_B = jnp.argmin(jnp.where(remaining_BN, priority_BN, jnp.inf), axis=1)
    logits = _logits(graphdef, state, roll, remaining_BN.reshape(batch, steps, voices))
    logits_BNP = jnp.swapaxes(logits, 2, 3).reshape(batch, num_vars, pitches)
    logits_BP = logits_BNP[rows, pick_B]
    idx_B = sample_pitches(jax.random.fold_in(key, n), logits_BP[:, None, :, None],
                           temperature)[:, 0, 0]
    chosen_BN = (jnp.arange(num_vars)[None, :] == pick_B[:, None]) & has_B[:, None]
    new = jnp.broadcast_to(_onehot_BTPI(idx_B[:, None, None], pitches), roll.shape)
    roll = _write(roll, new, chosen_BN.reshape(batch, steps, voices))
    return roll, remaining_BN & ~chosen_BN

  roll, remaining_BN = jax.lax.fori_loop(start, stop, body,
                                         (roll_BTPI, remaining_BTI.reshape(batch, num_vars)))
  return roll, remaining_BN.reshape(batch, steps, voices)


@functools.partial(jax.jit, static_argnames=('graphdef', 'block'))
def _gibbs(graphdef, state, key, roll_BTPI, free_BTI, p_N, sizes_NB, temperature, start, stop,
           block):
  """Gibbs steps start..stop-1 (block 'bernoulli' reads p_N, 'subset' sizes_NB)."""
  def body(n, roll):
    block_key, sample_key = jax.random.split(jax.random.fold_in(key, n))
    if block == 'subset':
      block_BTI = masking.subset_mask(block_key, free_BTI.shape, sizes_NB[n], valid=free_BTI) > 0
    else:
      block_BTI = (jax.random.uniform(block_key, free_BTI.shape) < p_N[n]) & free_BTI
    logits = _logits(graphdef, state, roll, block_BTI)
    new = _onehot_BTPI(sample_pitches(sample_key, logits, temperature), roll.shape[2])
    return _write(roll, new, block_BTI)

  return jax.lax.fori_loop(start, stop, body, roll_BTPI)


# ------------------------------------------------------------------------------------------------
# Public samplers (arrays in, arrays out)


def independent_sample(model: nnx.Module, key: jax.Array, roll_BTPI: np.ndarray,
                       free_BTI: np.ndarray, *, temperature: float = 0.99) -> jax.Array:
  """Fills every free variable from one forward pass."""
  graphdef, state = _eval_split(model)
  return _independent(graphdef, state, key, jnp.asarray(roll_BTPI, jnp.float32),
                      jnp.asarray(free_BTI, bool), temperature)


def ancestral_priority(key: jax.Array, shape_BTI: tuple[int, int, int], order: str) -> jax.Array:
  """(B, T*I) priorities: the free variable with the lowest one is sampled next."""
  batch, steps, voices = shape_BTI
  if order == 'chronological':
    return jnp.broadcast_to(jnp.arange(steps * voices, dtype=jnp.float32), (batch, steps * voices))
  if order == 'random':
    return jax.random.uniform(key, (batch, steps * voices))
  raise UserError(f'unknown order {order!r}; expected "chronological" or "random"')


def ancestral_sample(model: nnx.Module, key: jax.Array, roll_BTPI: np.ndarray,
                     free_BTI: np.ndarray, *, order: str = 'chronological',
                     temperature: float = 0.99, progress: ProgressFn | None = None) -> jax.Array:
  """Samples the free variables one at a time, each given all earlier ones (T*I passes at most).

  progress(done, total) is called after each of about PROGRESS_UPDATES segments of the passes.
  """
  order_key, sample_key = jax.random.split(key)
  free_BTI = jnp.asarray(free_BTI, bool)
  priority = ancestral_priority(order_key, free_BTI.shape, order)
  graphdef, state = _eval_split(model)
  roll, remaining = jnp.asarray(roll_BTPI, jnp.float32), free_BTI
  total = int(jnp.max(jnp.sum(free_BTI, axis=(1, 2)), initial=0))
  for start, stop in _segments(total, progress):
    roll, remaining = _ancestral(graphdef, state, sample_key, roll, remaining, priority,
                                 temperature, start, stop)
    if progress is not None:
      progress(stop, total)
  return roll


def gibbs_sample(model: nnx.Module, key: jax.Array, roll_BTPI: np.ndarray, free_BTI: np.ndarray,
                 *, gibbs_steps: int | None = None, pmax: float = 0.9, pmin: float = 0.1,
                 alpha: float = 0.7, temperature: float = 0.99, init: str = 'independent',
                 block: str = 'bernoulli', progress: ProgressFn | None = None) -> jax.Array:
  """Annealed blocked Gibbs sampling (Yao et al. 2014 schedule, as in Coconet).

  Args:
    model: a Coconet (run in eval mode here).
    key: PRNG key.
    roll_BTPI: pieces; the given variables' rows are kept, free rows are overwritten.
    free_BTI: bool, the variables to sample.
    gibbs_steps: Gibbs steps N (default T * I); 0 gives the initial fill alone.
    pmax, pmin, alpha: the annealing schedule of the block fraction (alpha is --eta).
    temperature: softmax temperature (0 = argmax).
    init: 'independent' (one independent pass first, as the original) or 'given' (start from
      the free rows of roll_BTPI, e.g. an existing piece to revise).
    block: 'bernoulli' (the original's) or 'subset' (see the module docstring).
    progress: called as progress(done, N) after each of about PROGRESS_UPDATES segments of the
      steps (the draws are the same with or without it).
  """
  check_schedule(pmax, pmin, alpha)
  if block not in BLOCKS:
    raise UserError(f'unknown Gibbs block {block!r}; expected one of {", ".join(BLOCKS)}')
  roll_BTPI = jnp.asarray(roll_BTPI, jnp.float32)
  free = np.asarray(free_BTI, bool)
  _, steps, _, voices = roll_BTPI.shape
  gibbs_steps = steps * voices if gibbs_steps is None else int(gibbs_steps)
  init_key, loop_key = jax.random.split(key)
  graphdef, state = _eval_split(model)
  if init == 'independent':
    roll_BTPI = _independent(graphdef, state, init_key, roll_BTPI, jnp.asarray(free), temperature)
  elif init != 'given':
    raise UserError(f'unknown init {init!r}; expected "independent" or "given"')
  if gibbs_steps <= 0:
    return roll_BTPI
  p_N = jnp.asarray(gibbs_schedule(gibbs_steps, pmax, pmin, alpha), jnp.float32)
  sizes_NB = jnp.asarray(gibbs_block_sizes(free.sum(axis=(1, 2)), gibbs_steps, pmax, pmin, alpha))
  for start, stop in _segments(gibbs_steps, progress):
    roll_BTPI = _gibbs(graphdef, state, loop_key, roll_BTPI, jnp.asarray(free), p_N, sizes_NB,
                       temperature, start, stop, block)
    if progress is not None:
      progress(stop, gibbs_steps)
  return roll_BTPI


def gibbs_sample_reference(model: nnx.Module, key: jax.Array, roll_BTPI: np.ndarray,
                           free_BTI: np.ndarray, *, gibbs_steps: int | None = None,
                           pmax: float = 0.9, pmin: float = 0.1, alpha: float = 0.7,
                           temperature: float = 0.99, block: str = 'bernoulli') -> np.ndarray:
  """A plain Python loop doing what `gibbs_sample` does, with the same RNG use. Tests only."""
  model = nnx.view(model, use_running_average=True)
  forward = nnx.jit(lambda m, roll, mask: m(roll, mask))  # the loop stays plain Python
  roll = np.array(roll_BTPI, np.float32)
  free = np.asarray(free_BTI, bool)
  batch, steps, pitches, voices = roll.shape
  gibbs_steps = steps * voices if gibbs_steps is None else gibbs_steps
  init_key, loop_key = jax.random.split(key)

  def resample(roll, block, sample_key):
    logits = np.asarray(forward(model, jnp.asarray(roll), jnp.asarray(block, jnp.float32)))
    idx = np.asarray(sampling.categorical(sample_key,
                                          jnp.swapaxes(jnp.asarray(logits) / temperature, 2, 3)))
    for b, t, i in zip(*np.nonzero(block)):
      roll[b, t, :, i] = 0.0
      roll[b, t, idx[b, t, i], i] = 1.0
    return roll

  roll = resample(roll, free, init_key)
  num_free = free.reshape(batch, -1).sum(axis=1)
  for n in range(gibbs_steps):
    p = max(pmin, pmax - (pmax - pmin) * n / (alpha * gibbs_steps))
    block_key, sample_key = jax.random.split(jax.random.fold_in(loop_key, n))
    if block == 'bernoulli':
      u = np.asarray(jax.random.uniform(block_key, free.shape))
      chosen = (u < np.float32(p)) & free
    else:
      u = np.asarray(jax.random.uniform(block_key, (batch, steps * voices)))
      chosen = np.zeros((batch, steps * voices), bool)
      for b in range(batch):
        size = min(num_free[b], max(1, int(np.round(p * num_free[b]))))
        candidates = np.flatnonzero(free[b].reshape(-1))
        chosen[b, candidates[np.argsort(u[b, candidates])[:size]]] = True
      chosen = chosen.reshape(batch, steps, voices)
    roll = resample(roll, chosen, sample_key)
  return roll


def sample(model: nnx.Module, key: jax.Array, roll_BTPI: np.ndarray, free_BTI: np.ndarray, *,
           method: str = 'gibbs', **kwargs) -> np.ndarray:
  """Dispatches to a sampler; returns the sampled rolls with the given variables copied back."""
  if method == 'independent':
    out = independent_sample(model, key, roll_BTPI, free_BTI, **_only(kwargs, 'temperature'))
  elif method == 'ancestral':
    out = ancestral_sample(model, key, roll_BTPI, free_BTI,
                           **_only(kwargs, 'temperature', 'order', 'progress'))
  elif method == 'gibbs':
    out = gibbs_sample(model, key, roll_BTPI, free_BTI,
                       **_only(kwargs, 'temperature', 'gibbs_steps', 'pmax', 'pmin', 'alpha',
                               'init', 'block', 'progress'))
  else:
    raise UserError(f'unknown sampling method {method!r}; expected one of {", ".join(METHODS)}')
  free = np.asarray(free_BTI, bool)[:, :, None, :]
  # Belt and braces: the samplers already write only free rows.
  return np.where(free, np.asarray(out), np.asarray(roll_BTPI, np.float32))


def _only(kwargs: dict[str, Any], *names: str) -> dict[str, Any]:
  return {k: v for k, v in kwargs.items() if k in names and v is not None}


# ------------------------------------------------------------------------------------------------
# Tasks (MIDI pitches in, MIDI pitches out: float32 (B, T, 4), NaN = silent)


def _batch_pitches(pitches: np.ndarray, num_samples: int) -> np.ndarray:
  pitches = np.asarray(pitches, np.float32)
  if pitches.ndim == 2:
    pitches = np.broadcast_to(pitches, (num_samples, *pitches.shape))
  return np.array(pitches, np.float32)


def complete(model: nnx.Module, key: jax.Array, pitches_BTI: np.ndarray, erase_BTI: np.ndarray,
             *, num_samples: int = 1, **kwargs) -> np.ndarray:
  """Fills the erased variables of pieces; everything else is kept exactly.

  pitches_BTI may be (T, 4) (then num_samples copies are made) or (B, T, 4); erased entries may be
  NaN. erase_BTI broadcasts against it.
  """
  pitches = _batch_pitches(pitches_BTI, num_samples)
  free = np.broadcast_to(np.asarray(erase_BTI, bool), pitches.shape)
  given = np.where(free, np.nan, pitches)
  roll = np.stack([data.pitches_to_roll(p) for p in given])
  out = sample(model, key, roll, free, **kwargs)
  result = np.stack([data.roll_to_pitches(r) for r in out])
  result[~free] = pitches[~free]  # exactly the given pitches, NaN included
  return result


def harmonize(model: nnx.Module, key: jax.Array, soprano_T: np.ndarray, *, num_samples: int = 1,
              **kwargs) -> np.ndarray:
  """Alto, tenor and bass for a soprano (T,) (or (B, T)); the soprano is kept exactly."""
  soprano = np.asarray(soprano_T, np.float32)
  soprano_BT = np.broadcast_to(soprano, (num_samples, soprano.shape[-1])) if soprano.ndim == 1 \
      else soprano
  pitches = np.full((*soprano_BT.shape, data.NUM_INSTRUMENTS), np.nan, np.float32)
  pitches[..., 0] = soprano_BT
  erase = np.zeros(data.NUM_INSTRUMENTS, bool)
  erase[1:] = True
  return complete(model, key, pitches, np.broadcast_to(erase, pitches.shape), **kwargs)


def generate_from_scratch(model: nnx.Module, key: jax.Array, length: int, *,
                          num_samples: int = 1, **kwargs) -> np.ndarray:
  """Four voices from scratch, (num_samples, length, 4) (length in 16th steps)."""
  pitches = np.full((num_samples, length, data.NUM_INSTRUMENTS), np.nan, np.float32)
  return complete(model, key, pitches, np.ones(pitches.shape, bool), **kwargs)


def upsample(model: nnx.Module, key: jax.Array, quarter_pitches_QI: np.ndarray, *,
             factor: int = data.QUARTER_FACTOR, num_samples: int = 1, **kwargs) -> np.ndarray:
  """A quarter-note chorale (Q, 4) -> 16th grid (Q * factor, 4); the quarter frames are kept."""
  quarter = _batch_pitches(quarter_pitches_QI, num_samples)
  pitches = np.repeat(quarter, factor, axis=1)
  keep_T = data.quarter_frames_mask(pitches.shape[1], factor)
  erase = np.broadcast_to(~keep_T[None, :, None], pitches.shape)
  return complete(model, key, pitches, erase, **kwargs)


def revoice(model: nnx.Module, key: jax.Array, pitches_TI: np.ndarray, *,
            keep_voices: Sequence[int] = (0,), num_samples: int = 1, **kwargs) -> np.ndarray:
  """Rewrites each voice not in keep_voices in turn (alto, tenor, bass by default).

  Each pass resamples one voice over the whole piece with Gibbs started from the current notes
  (init='given'), conditioned on the other three, so the harmony moves only as far as the other
  voices allow. This is the original code's 'revoice' idea; harmonize() instead throws the lower
  voices away entirely.
  """
  pitches = _batch_pitches(pitches_TI, num_samples)
  if np.isnan(pitches).all():
    raise UserError('revoice needs a piece with notes')
  kwargs = dict(kwargs, init='given')
  for n, voice in enumerate(v for v in range(data.NUM_INSTRUMENTS) if v not in keep_voices):
    erase = np.zeros(pitches.shape, bool)
    erase[..., voice] = True
    # A silent row has no "current note" to start from: fill it independently first.
    holes = erase & np.isnan(pitches)
    if holes.any():
      pitches = complete(model, jax.random.fold_in(key, 100 + n), pitches, holes,
                         method='independent',
                         temperature=kwargs.get('temperature', DEFAULTS['temperature']))
    roll = np.stack([data.pitches_to_roll(p) for p in pitches])
    out = sample(model, jax.random.fold_in(key, n), roll, erase, **kwargs)
    pitches = np.where(erase, np.stack([data.roll_to_pitches(r) for r in out]), pitches)
  return pitches


# ------------------------------------------------------------------------------------------------
# The generation entry (common.generation): a request in, NoteSequences out

TASKS = ('harmonize', 'generate', 'complete', 'revoice', 'upsample')
# The longest melody or piece the command line takes, in 16th steps (256 bars of 4/4). Memory grows
# with the length and time with its square (the default Gibbs step count is T * 4).
MAX_INPUT_STEPS = 4096


def check_length(num_steps: int, name: str, what: str = 'melody') -> None:
  """UserError naming `name` when a melody or piece is longer than MAX_INPUT_STEPS."""
  if num_steps > MAX_INPUT_STEPS:
    raise UserError(f'{name}: the {what} is {num_steps:,} 16th steps ({num_steps / 16:g} bars) '
                    f'long; Coconet takes at most {MAX_INPUT_STEPS} ({MAX_INPUT_STEPS // 16} '
                    f'bars): crop it with --length={MAX_INPUT_STEPS} or less')


def check_request(config: Any, request: generation.Request) -> dict[str, Any]:
  """What generate_pieces needs from the request, checked without a model (so that the command
  line refuses a bad melody or flag before loading one): {'task', 'sampler', and 'soprano' (T,),
  'piece' (T, 4) or 'length'}. UserError names what is wrong."""
  task = request.task_or(TASKS, 'coconet')
  prepared: dict[str, Any] = dict(task=task, sampler=sampler_options(request))
  source = request.input_names[0] if request.input_names else (
      '--pitches' if request.pitches else 'input')
  if task == 'harmonize':
    soprano = data.soprano_from_melody(_melody(request), steps_per_note=request.steps_per_note,
                                       transpose=request.transpose, name=source,
                                       num_steps=request.length)
    check_length(len(soprano), source)
    prepared['soprano'] = soprano
  elif task == 'generate':
    length = int(request.length or config.get('crop_len', 64))
    if not 1 <= length <= MAX_INPUT_STEPS:
      raise UserError(f'--length must be in 1..{MAX_INPUT_STEPS}, got {length}')
    prepared['length'] = length
  else:
    prepared['piece'] = _four_part_piece(request, task, source)
  return prepared


def generate_pieces(model: nnx.Module, config: Any, request: generation.Request
                    ) -> list[generation.Piece]:
  """Runs one task (harmonize by default) and returns the chorales as NoteSequences.

  harmonize takes request.inputs[0] (a melody) or request.pitches; complete, revoice and upsample
  take a four-part piece in request.inputs[0]; generate writes request.length 16th steps
  (default: the config's crop length). request.length also crops an input piece.
  """
  prepared = check_request(config, request)
  task = prepared['task']
  key = jax.random.key(request.seed)
  kwargs = dict(prepared['sampler'], num_samples=request.num_samples,
                progress=ProgressBar(task))
  if task == 'harmonize':
    out = harmonize(model, key, prepared['soprano'], **kwargs)
  elif task == 'generate':
    out = generate_from_scratch(model, key, prepared['length'], **kwargs)
  else:
    piece = prepared['piece']
    if task == 'complete':
      out = complete(model, key, piece, _erase_middle(piece), **kwargs)
    elif task == 'revoice':
      out = revoice(model, key, piece, **kwargs)
    else:
      out = upsample(model, key, data.to_quarter_grid(piece), **kwargs)
  qpm = request.qpm or 90.0
  return [generation.Piece(f'{task}_{i:02d}', data.pitches_to_sequence(pitches, qpm=qpm,
                                                                       programs=request.programs))
          for i, pitches in enumerate(np.asarray(out))]


def sampler_options(request: generation.Request) -> dict[str, Any]:
  """The sampler keyword arguments of `sample` a request asks for; None fields get DEFAULTS
  (the original code's). UserError for a bad choice."""
  method = request.sampler or DEFAULTS['method']
  if method not in METHODS:
    raise UserError(f'--sampler={method}: expected one of {", ".join(METHODS)}')
  order = request.order or DEFAULTS['order']
  if order not in ORDERS:
    raise UserError(f'--order={order}: expected one of {", ".join(ORDERS)}')
  if request.order and method != 'ancestral':
    raise UserError(f'--order applies to --sampler=ancestral, not {method}')
  schedule = [request.pmax, request.pmin, request.eta, request.gibbs_steps]
  if method != 'gibbs' and any(v is not None for v in schedule):
    raise UserError(f'--pmax, --pmin, --eta and --gibbs_steps apply to --sampler=gibbs, not '
                    f'{method}')
  pmax = DEFAULTS['pmax'] if request.pmax is None else float(request.pmax)
  pmin = DEFAULTS['pmin'] if request.pmin is None else float(request.pmin)
  eta = DEFAULTS['eta'] if request.eta is None else float(request.eta)
  check_schedule(pmax, pmin, eta)
  if request.gibbs_steps is not None and request.gibbs_steps < 0:
    raise UserError(f'--gibbs_steps must be >= 0, got {request.gibbs_steps}')
  temperature = DEFAULTS['temperature'] if request.temperature is None else request.temperature
  if not temperature >= 0:
    raise UserError(f'--temperature must be >= 0, got {temperature:g}')
  options = dict(method=method, temperature=float(temperature))
  if method == 'ancestral':
    options['order'] = order
  elif method == 'gibbs':
    options.update(pmax=pmax, pmin=pmin, alpha=eta, gibbs_steps=request.gibbs_steps)
  return options


class ProgressBar:
  """A sampler's progress on stderr, shown only for runs longer than DELAY_SECONDS: a tqdm bar on
  a terminal, else a line every LOG_SECONDS (a log file gets lines, not carriage returns)."""
  DELAY_SECONDS = 2.0
  LOG_SECONDS = 10.0

  def __init__(self, desc: str, file: Any = None):
    self.desc, self.file = desc, file
    self._bar = None
    self._start = self._last_line = None
    self._total = None

  def __call__(self, done: int, total: int) -> None:
    out = self.file or sys.stderr
    if self._total != total or (self._bar is not None and done < self._bar.n):
      self.close()
      self._total, self._start, self._last_line = total, time.monotonic(), None
    if hasattr(out, 'isatty') and out.isatty():
      self._tty_update(out, done, total)
    else:
      self._log_update(out, done, total)
    if done >= total:
      self.close()

  def _tty_update(self, out: Any, done: int, total: int) -> None:
    import tqdm  # pylint: disable=g-import-not-at-top
    if self._bar is None:
      self._bar = tqdm.tqdm(total=total, desc=self.desc, unit='step', file=out,
                            delay=self.DELAY_SECONDS, mininterval=0.5)
    self._bar.update(done - self._bar.n)

  def _log_update(self, out: Any, done: int, total: int) -> None:
    now = time.monotonic()
    elapsed = now - self._start
    due = (self._last_line is None and elapsed >= self.DELAY_SECONDS) or (
        self._last_line is not None and now - self._last_line >= self.LOG_SECONDS)
    if not due and not (done >= total and self._last_line is not None):
      return
    self._last_line = now
    left = elapsed / max(done, 1) * (total - done)
    print(f'{self.desc}: {done}/{total} steps ({100 * done / max(total, 1):.0f}%), '
          f'{elapsed:.0f} s, about {left:.0f} s left', file=out, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    self._total = None


def _melody(request: generation.Request) -> Any:
  if request.inputs:
    return request.inputs[0]
  if request.pitches:
    return list(request.pitches)
  raise UserError('harmonize needs --melody=FILE (.mid/.xml) or --pitches="60,62,64,..."')


def _four_part_piece(request: generation.Request, task: str, source: str) -> np.ndarray:
  """A four-part piece from the request's first input, for complete/revoice/upsample."""
  if not request.inputs:
    raise UserError(f'task {task} needs --melody=FILE holding a four-part piece')
  piece = data.sequence_to_pitches(request.inputs[0], name=source)
  if request.length:
    piece = piece[:int(request.length)]
  check_length(len(piece), source, 'piece')
  return piece


def _erase_middle(piece_TI: np.ndarray) -> np.ndarray:
  """For 'complete': erase the middle half of the piece in all voices (a simple, useful default)."""
  erase = np.zeros(piece_TI.shape, bool)
  steps = piece_TI.shape[0]
  erase[steps // 4: steps - steps // 4] = True
  return erase
