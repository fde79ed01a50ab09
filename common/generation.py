"""What every model's generation entry takes and gives, and the one place its files are written.

Each model has one entry with the same shape,

    <model>.sample.generate(model, config, request: Request) -> list[Piece]   (pianonet: .generate)

that takes a loaded model (common.training.load_model) and returns NoteSequences; it reads no
checkpoint and writes no file. experiments/generate.py builds the Request from flags, reads the
input files before any model loads (so a bad file fails at once), and writes the pieces with
write_pieces().
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

from common.errors import UserError


@dataclasses.dataclass(frozen=True)
class Request:
  """A generation request; each model reads the fields it knows (None: the model's default).

  Attributes:
    task: what to generate, one of the model's tasks (None: its first one).
    inputs: input pieces, read by the caller (NoteSequences), with their names in input_names.
    pitches: a melody typed as MIDI pitches (None for a rest), steps_per_note 16ths each.
    length: how much to generate, in the model's own unit: 16th steps (Coconet), words or events
      (CP-word / REMI); PianoNet uses `seconds` and MusicVAE its config's bars.
    min_length: CP-word: no end of song before this many words.
    num_samples: how many pieces.
    temperature: sampling temperature (CP-word: a factor on every family's temperature).
    seed: the random seed.
    gibbs_steps: Coconet's number of Gibbs steps (None: the model's default).
    sampler, order, pmax, pmin, eta: Coconet's sampler ('gibbs' | 'ancestral' | 'independent'),
      the ancestral order ('chronological' | 'random') and the Gibbs schedule (None: the
      model's defaults, as the original code).
    transpose: shift a melody outside the model's range by whole octaves.
    programs, qpm: instruments and tempo of Coconet's written chorales.
    seconds: PianoNet's length of the continuation.
    attribute, attribute_scale: MusicVAE's attribute vector and its scale.
    emotion: CP-word's emotion quadrant (Q1..Q4), for models trained with emotion.
    assets: files shipped beside the checkpoint, loaded by the caller (MusicVAE: attribute
      vectors).
  """
  task: str | None = None
  inputs: tuple[Any, ...] = ()
  input_names: tuple[str, ...] = ()
  pitches: tuple[int | None, ...] | None = None
  steps_per_note: int = 4
  length: int | None = None
  min_length: int = 0
  num_samples: int = 1
  temperature: float | None = None
  seed: int = 0
  gibbs_steps: int | None = None
  sampler: str | None = None
  order: str | None = None
  pmax: float | None = None
  pmin: float | None = None
  eta: float | None = None
  transpose: bool = False
  programs: str = 'choir'
  qpm: float | None = None
  seconds: float = 10.0
  attribute: str | None = None
  attribute_scale: float = 1.5
  emotion: str | None = None
  assets: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def task_or(self, tasks: Sequence[str], model: str) -> str:
    """The requested task, or the first of `tasks`; UserError naming the choices otherwise."""
    task = self.task or tasks[0]
    if task not in tasks:
      raise UserError(f'{model} cannot --task={task}; it can: {", ".join(tasks)}')
    return task


@dataclasses.dataclass(frozen=True)
class Piece:
  """One generated piece: `name` is its file stem (e.g. 'harmonize_00')."""
  name: str
  sequence: Any  # a NoteSequence


def write_pieces(pieces: Sequence[Piece], out_dir: str, *, wav: bool = False,
                 png: bool = False) -> list[str]:
  """Writes each piece as <out_dir>/<name>.mid (and .wav / .png when asked), each file
  atomically; returns the paths in order."""
  from common import midi  # pylint: disable=g-import-not-at-top
  from common import render  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for piece in pieces:
    stem = os.path.join(out_dir, piece.name)
    midi.write_midi(piece.sequence, stem + '.mid')
    paths.append(stem + '.mid')
    if wav:
      render.render_wav(piece.sequence, stem + '.wav')
      paths.append(stem + '.wav')
    if png:
      render.piano_roll_png(piece.sequence, stem + '.png', title=piece.name)
      paths.append(stem + '.png')
  return paths
