"""An automatic stand-in for the paper's listening test of Coconet's samplers.

The paper judged its samplers by ear (annealed blocked Gibbs against ancestral and independent
sampling). Here every sampler gets the same conditions and the same random seed, and its pieces
are scored two ways:

  (a) NLL per note under a scorer: a separately trained Coconet (another seed), note-wise chain
      rule in chronological order (coconet.evaluate), nats per sounding note of the whole piece
      (the given soprano included when harmonizing). Lower means more chorale-like to a model
      that did not make the piece; the real held-out crops are scored the same way.
  (b) Distance of note statistics to held-out JSB chorales (the test split, whole pieces): total
      variation, TV(p, q) = 1/2 sum |p - q| (0 = the same distribution, 1 = disjoint), of four
      histograms over the voices the sampler wrote (alto, tenor, bass when harmonizing; all four
      when generating), notes being runs of one pitch in one voice (coconet.data's reading):
        pitch_class  the 12 pitch classes of the notes, duration-weighted (16th steps),
        interval     melodic intervals between consecutive notes of a voice, -12..+12 semitones
                     (larger leaps in the end bins), rests skipped,
        range        each voice's pitches (46 bins), the TV averaged over the voices,
        length       note lengths in 16th steps, 1..16 (longer in the last bin).
      'mean_tv' averages the four.

Conditions: 'harmonize' (the sopranos of the first held-out pieces, cropped) and 'generate' (from
scratch, the same length). The row 'bach' holds the held-out crops themselves.
"""

from __future__ import annotations

from typing import Any, Sequence

from flax import nnx
import jax
import numpy as np

from common.errors import UserError
from coconet import data
from coconet import evaluate
from coconet import sample

# name -> the `sample.sample` arguments of that sampler (defaults: the original code's).
SAMPLERS = {
    'gibbs': dict(method='gibbs'),
    'ancestral_chronological': dict(method='ancestral', order='chronological'),
    'ancestral_random': dict(method='ancestral', order='random'),
    'independent': dict(method='independent'),
}
CONDITIONS = ('harmonize', 'generate')
STATISTICS = ('pitch_class', 'interval', 'range', 'length')
MAX_INTERVAL = 12
MAX_LENGTH = 16


def held_out_crops(pieces: Sequence[np.ndarray], length: int, count: int) -> np.ndarray:
  """(count, length, 4): the first `length` steps of the first `count` pieces that are that long
  and whose soprano sounds throughout them."""
  crops = [p[:length] for p in pieces
           if len(p) >= length and not np.isnan(p[:length, 0]).any()][:count]
  if len(crops) < count:
    raise UserError(f'only {len(crops)} held-out pieces have a soprano sounding for {length} '
                    f'steps; ask for --num_pieces={len(crops)} or a shorter --length')
  return np.stack(crops).astype(np.float32)


def _notes(column_T: np.ndarray) -> list[tuple[float, int]]:
  """(pitch, length) of each run of one pitch in a voice; rests (NaN) are not notes."""
  notes, start = [], 0
  for t in range(1, len(column_T) + 1):
    if t == len(column_T) or not (column_T[t] == column_T[start]
                                  or (np.isnan(column_T[t]) and np.isnan(column_T[start]))):
      if not np.isnan(column_T[start]):
        notes.append((float(column_T[start]), t - start))
      start = t
  return notes


def note_histograms(pieces: Sequence[np.ndarray], voices: Sequence[int]) -> dict[str, np.ndarray]:
  """The four histograms (normalised; STATISTICS) of `voices` over (T, 4) pieces."""
  pitch_class = np.zeros(12)
  interval = np.zeros(2 * MAX_INTERVAL + 1)
  ranges = np.zeros((len(voices), data.NUM_PITCHES))
  length = np.zeros(MAX_LENGTH)
  for piece in pieces:
    for row, voice in enumerate(voices):
      notes = _notes(np.asarray(piece[:, voice], np.float32))
      for pitch, steps in notes:
        pitch_class[int(pitch) % 12] += steps
        ranges[row, int(pitch) - data.MIN_PITCH] += steps
        length[min(steps, MAX_LENGTH) - 1] += 1
      for (a, _), (b, _) in zip(notes, notes[1:]):
        interval[int(np.clip(b - a, -MAX_INTERVAL, MAX_INTERVAL)) + MAX_INTERVAL] += 1
  normalise = lambda h: h / max(h.sum(), 1e-12)
  return {'pitch_class': normalise(pitch_class), 'interval': normalise(interval),
          'range': np.stack([normalise(r) for r in ranges]), 'length': normalise(length)}


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
  """1/2 sum |p - q| (rows averaged for 2-D histograms)."""
  tv = 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(axis=-1)
  return float(np.mean(tv))


def statistics_distance(pieces: Sequence[np.ndarray], reference: dict[str, np.ndarray],
                        voices: Sequence[int]) -> dict[str, float]:
  hist = note_histograms(pieces, voices)
  out = {name: total_variation(hist[name], reference[name]) for name in STATISTICS}
  out['mean_tv'] = float(np.mean([out[name] for name in STATISTICS]))
  return out


def nll_per_note(scorer: nnx.Module, pieces: Sequence[np.ndarray], chunk_size: int = 32) -> float:
  """Chronological note-wise NLL (nats per sounding note) of the pieces under `scorer`."""
  total, notes = 0.0, 0
  for piece in pieces:
    valid = ~np.isnan(piece)
    rank = evaluate.group_ranks(valid, 'note', 'chronological')
    total -= evaluate.piece_log_likelihood(scorer, piece, rank, chunk_size=chunk_size)
    notes += int(valid.sum())
  return total / max(notes, 1)


def draw(model: nnx.Module, condition: str, crops_BTI: np.ndarray, sampler: str, seed: int,
         gibbs_steps: int | None = None) -> np.ndarray:
  """The pieces one sampler writes for a condition (one batch, key from `seed`)."""
  key = jax.random.key(seed)
  options = dict(SAMPLERS[sampler])
  if options['method'] == 'gibbs' and gibbs_steps is not None:
    options['gibbs_steps'] = gibbs_steps
  batch, length = crops_BTI.shape[:2]
  if condition == 'harmonize':
    return sample.harmonize(model, key, crops_BTI[:, :, 0], **options)
  return sample.generate_from_scratch(model, key, length, num_samples=batch, **options)


def compare(model: nnx.Module, scorer: nnx.Module, held_out: Sequence[np.ndarray], *,
            samplers: Sequence[str] = tuple(SAMPLERS), num_pieces: int = 16, length: int = 32,
            seed: int = 0, gibbs_steps: int | None = None, progress: Any = None
            ) -> dict[str, dict[str, dict[str, float]]]:
  """{condition: {sampler or 'bach': {'nll_per_note', <STATISTICS>, 'mean_tv'}}}."""
  unknown = [s for s in samplers if s not in SAMPLERS]
  if unknown:
    raise UserError(f'unknown sampler {unknown[0]!r}; choose from {", ".join(SAMPLERS)}')
  crops = held_out_crops(held_out, length, num_pieces)
  results: dict[str, dict[str, dict[str, float]]] = {}
  for condition in CONDITIONS:
    voices = (1, 2, 3) if condition == 'harmonize' else (0, 1, 2, 3)
    reference = note_histograms(held_out, voices)
    rows = {'bach': crops}
    for name in samplers:
      if progress:
        progress(f'{condition}: {name}')
      rows[name] = draw(model, condition, crops, name, seed, gibbs_steps)
    results[condition] = {
        name: dict(nll_per_note=nll_per_note(scorer, list(pieces)),
                   **statistics_distance(list(pieces), reference, voices))
        for name, pieces in rows.items()}
  return results


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
  """A Markdown table: one row per (condition, sampler)."""
  columns = ('nll_per_note',) + STATISTICS + ('mean_tv',)
  lines = ['| condition | sampler | ' + ' | '.join(columns) + ' |',
           '|---|---|' + '---:|' * len(columns)]
  for condition, rows in results.items():
    for name, row in rows.items():
      lines.append(f'| {condition} | {name} | '
                   + ' | '.join(f'{row[c]:.3f}' for c in columns) + ' |')
  return '\n'.join(lines)
