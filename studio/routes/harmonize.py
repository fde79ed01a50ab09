"""The Harmonize API: Coconet adds alto, tenor and bass to a soprano from the grid or a MIDI file.

A request is checked whole before the model runs; the model runs under `Models.lock` while the
session's lock is held. Each session keeps its last MAX_HARMONIZATIONS harmonizations.
"""

from __future__ import annotations

import os
import re
import time

import flask
import numpy as np

from common.errors import UserError
from studio import engine
from studio import requests
from studio import sessions
from studio.requests import ApiError
from studio.routes import context

blueprint = flask.Blueprint('harmonize', __name__)


def _sampler(value) -> str:
  try:
    return engine.check_sampler('gibbs' if value is None else value)
  except UserError as e:
    raise ApiError(400, str(e)) from None


def _harmonize(soprano_T: np.ndarray, shift: int, gibbs_steps: int, seed: int | None,
               source: str, sampler: str = 'gibbs') -> flask.Response:
  studio = context.current()
  coco = studio.coconet()
  session = context.session_for_update()
  with session.lock:
    seed = session.new_seed() if seed is None else seed
    start = time.perf_counter()
    with studio.models.lock:
      pitches_TI = engine.harmonize(coco, soprano_T, gibbs_steps=gibbs_steps, seed=seed,
                                    sampler=sampler)
    seconds = time.perf_counter() - start
    seq = engine.harmony_sequence(pitches_TI)
    how = f'{gibbs_steps} Gibbs steps' if sampler == 'gibbs' else f'{sampler} sampling'
    output_id = session.add_output(sessions.Output(
        seq, f'harmonization_{seed}', f'{source} harmonized ({how})'))
    session.harmonizations.append(output_id)
    while len(session.harmonizations) > sessions.MAX_HARMONIZATIONS:
      session.drop_output(session.harmonizations.popleft())
    return context.answer(
        id=output_id, num_steps=len(pitches_TI), voices=engine.pitches_json(pitches_TI),
        soprano=[row[0] for row in engine.pitches_json(soprano_T[:, None])],
        transposed_by=shift, gibbs_steps=gibbs_steps, sampler=sampler, seed=seed,
        seconds=round(seconds, 3),
        notes=engine.notes_json(seq), **context.urls(output_id))


@blueprint.post('/api/harmonize')
def harmonize_grid():
  studio = context.current()
  studio.coconet()
  body = requests.json_object()
  melody = body.get('melody')
  if not isinstance(melody, list) or not melody:
    raise ApiError(400, 'melody must be a non-empty list of MIDI pitches (null for a rest)')
  steps_per_note = requests.integer(body.get('steps_per_note', engine.GRID_STEP_SIXTEENTHS),
                                    'steps_per_note', 1, 16)
  if len(melody) * steps_per_note > engine.MAX_MELODY_STEPS:
    raise ApiError(400, f'the melody is too long: at most {engine.MAX_MELODY_STEPS} 16th steps')
  pitches = [None if p is None else requests.integer(p, 'a melody pitch', 0, 127)
             for p in melody]
  gibbs_steps = requests.gibbs_steps(body.get('gibbs_steps', studio.settings.default_gibbs_steps))
  transpose = requests.boolean(body.get('transpose', False), 'transpose')
  seed = requests.optional_seed(body.get('seed'))
  sampler = _sampler(body.get('sampler'))
  soprano_T, shift = engine.soprano_from_grid(pitches, steps_per_note=steps_per_note,
                                              transpose=transpose)
  return _harmonize(soprano_T, shift, gibbs_steps, seed, 'the grid melody', sampler)


@blueprint.post('/api/harmonize/upload')
def harmonize_upload():
  studio = context.current()
  studio.coconet()
  upload = flask.request.files.get('file')
  if upload is None:
    raise ApiError(400, 'expected a MIDI file in the form field "file" (multipart/form-data)')
  data = upload.read(requests.MAX_UPLOAD_BYTES + 1)
  if len(data) > requests.MAX_UPLOAD_BYTES:
    raise ApiError(413, f'the file is too large (the limit is '
                        f'{requests.MAX_UPLOAD_BYTES // 1024} KiB)')
  # The client's file name only ever appears in messages.
  name = re.sub(r'[^\w .()-]', '_', os.path.basename(upload.filename or ''))[:80] or 'upload'
  form = flask.request.form
  gibbs_steps = requests.gibbs_steps(form.get('gibbs_steps', studio.settings.default_gibbs_steps))
  transpose = requests.boolean(form.get('transpose', 'false'), 'transpose')
  seed = form.get('seed')
  seed = requests.optional_seed(int(seed) if seed is not None and seed.isdigit() else seed)
  sampler = _sampler(form.get('sampler'))
  soprano_T, shift = engine.soprano_from_midi(data, name=name, transpose=transpose)
  return _harmonize(soprano_T, shift, gibbs_steps, seed, name, sampler)


@blueprint.get('/api/harmonize/example')
def example():
  return flask.jsonify(melody=engine.example_grid(), step_sixteenths=engine.GRID_STEP_SIXTEENTHS)
