"""The studio's Flask application: pages, a JSON API, and generated outputs by opaque id.

    app = create_app(engine.load_models(musicvae_workdir, coconet_workdir))
    serve(app, '127.0.0.1', 8000)

Sessions: a random id in an HttpOnly, SameSite=Strict cookie names a server-side Session that
holds its own Evolution, its outputs and a lock; tabs of one browser share the cookie, so every
request that changes the population names the generation it was made from (409 when it is stale).
At most `max_sessions` live at once (the least recently used is dropped).

Files: the static files are read into memory at start-up and served from that dict; outputs
(MIDI, WAV, PNG) are rendered from NoteSequences held in the session and looked up by an opaque
random id. No part of a request path or parameter ever reaches the filesystem.

Locks: the session store's lock guards the dict of sessions; a session's lock guards its state
for the whole request; `Models.lock` serializes model calls and is only ever taken while holding
at most one session lock (never the other way round), so there is no lock-order cycle.

Errors: every error is JSON {"error": message} with a 4xx status for bad input (bad JSON, bad
ids, oversized uploads, corrupt MIDI, melodies out of range) and 500 for bugs.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import math
import os
import re
import secrets
import threading
import time
from typing import Any

import flask
import numpy as np
from werkzeug import exceptions
from werkzeug import serving

from common.errors import UserError
from musicvae import evolve
from studio import engine

COOKIE = 'studio_session'
MAX_UPLOAD_BYTES = 1 << 20
MAX_POPULATION = 32
MAX_HARMONIZATIONS = 64  # per session; older ones expire
CACHE_BYTES = 64 << 20  # rendered bytes kept per session
LOOPBACK_HOSTS = ('127.0.0.1', 'localhost', '::1')
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
STATIC_TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
                '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png'}
PAGES = {'evolve': 'evolve.html', 'harmonize': 'harmonize.html'}
MIMETYPES = {'mid': 'audio/midi', 'wav': 'audio/wav', 'png': 'image/png'}
_SESSION_ID = re.compile(r'[A-Za-z0-9_-]{32}')
_OUTPUT_FILE = re.compile(r'([A-Za-z0-9_-]{22})\.(mid|wav|png)')
_SECURITY_HEADERS = {
    'Content-Security-Policy': ("default-src 'self'; img-src 'self' data:; media-src 'self'; "
                                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
}

log = logging.getLogger(__name__)


class ApiError(Exception):
  """A request the API refuses: HTTP `status` with a JSON message."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status
    self.message = message


# ------------------------------------------------------------------------------------------------
# Sessions


@dataclasses.dataclass
class Output:
  """Something generated: its music, its download name and its rendered bytes (a cache)."""
  seq: Any
  name: str
  title: str
  rendered: dict[str, bytes] = dataclasses.field(default_factory=dict)


class Session:
  """One browser's state. Use only while holding `lock`."""

  def __init__(self, session_id: str, seed: int):
    self.id = session_id
    self.lock = threading.Lock()
    self.rng = np.random.default_rng(seed)
    self.evolution: evolve.Evolution | None = None
    self.generations: list[list[str]] = []  # output ids of each generation in the history
    self.outputs: dict[str, Output] = {}
    self.harmonizations: collections.deque[str] = collections.deque()
    self.render_cache: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()
    self.cache_bytes = 0

  def new_seed(self) -> int:
    return int(self.rng.integers(0, 2**31 - 1))

  def add_output(self, output: Output) -> str:
    output_id = secrets.token_urlsafe(16)  # 22 characters
    self.outputs[output_id] = output
    return output_id

  def drop_output(self, output_id: str) -> None:
    self.outputs.pop(output_id, None)
    for kind in engine.RENDER_KINDS:
      self.cache_bytes -= self.render_cache.pop((output_id, kind), 0)

  def remember(self, output_id: str, kind: str, data: bytes) -> None:
    """Caches rendered bytes, dropping the least recently used ones beyond CACHE_BYTES."""
    output = self.outputs.get(output_id)
    if output is None or kind in output.rendered:
      return
    output.rendered[kind] = data
    self.render_cache[(output_id, kind)] = len(data)
    self.cache_bytes += len(data)
    while self.cache_bytes > CACHE_BYTES and len(self.render_cache) > 1:
      (old_id, old_kind), size = self.render_cache.popitem(last=False)
      self.cache_bytes -= size
      if old_id in self.outputs:
        self.outputs[old_id].rendered.pop(old_kind, None)


class SessionStore:
  """Sessions by id, at most `max_sessions` (least recently used dropped first)."""

  def __init__(self, max_sessions: int, seed: int | None):
    self._lock = threading.Lock()
    self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
    self._max = max(int(max_sessions), 1)
    self._seeds = np.random.default_rng(seed)

  def get(self, session_id: str | None) -> Session | None:
    if not session_id or not _SESSION_ID.fullmatch(session_id):
      return None
    with self._lock:
      session = self._sessions.get(session_id)
      if session is not None:
        self._sessions.move_to_end(session_id)
      return session

  def create(self) -> Session:
    with self._lock:
      session = Session(secrets.token_urlsafe(24), int(self._seeds.integers(0, 2**31 - 1)))
      self._sessions[session.id] = session
      while len(self._sessions) > self._max:
        self._sessions.popitem(last=False)
      return session

  def __len__(self) -> int:
    with self._lock:
      return len(self._sessions)


# ------------------------------------------------------------------------------------------------
# Request parsing


def _json_body() -> dict[str, Any]:
  body = flask.request.get_json(silent=True)
  if not isinstance(body, dict):
    raise ApiError(400, 'expected a JSON object as the request body '
                        '(Content-Type: application/json)')
  return body


def _int(value: Any, name: str, low: int, high: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
    raise ApiError(400, f'{name} must be an integer in {low}..{high}, got {value!r}')
  return value


def _number(value: Any, name: str, low: float, high: float) -> float:
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
      or not low <= value <= high):
    raise ApiError(400, f'{name} must be a number in [{low:g}, {high:g}], got {value!r}')
  return float(value)


def _bool(value: Any, name: str) -> bool:
  if isinstance(value, bool):
    return value
  if isinstance(value, str) and value.lower() in ('true', 'false', 'on', 'off', '1', '0', ''):
    return value.lower() in ('true', 'on', '1')
  raise ApiError(400, f'{name} must be true or false, got {value!r}')


def _gibbs_steps(value: Any) -> int:
  if isinstance(value, str) and value.isdigit():
    value = int(value)
  try:
    return engine.check_gibbs_steps(value)
  except UserError as e:
    raise ApiError(400, str(e)) from None


def _seed(value: Any, session: Session) -> int:
  return session.new_seed() if value is None else _int(value, 'seed', 0, 2**31 - 2)


# ------------------------------------------------------------------------------------------------
# The application


@dataclasses.dataclass
class StudioSettings:
  population_size: int = 8
  sigma: float = 0.5
  crossover: str = 'uniform'
  num_foreign: int = 2
  elitism: bool = False
  default_gibbs_steps: int = engine.DEFAULT_GIBBS_STEPS


def _load_static() -> dict[str, tuple[bytes, str]]:
  files = {}
  for name in sorted(os.listdir(STATIC_DIR)):
    mimetype = STATIC_TYPES.get(os.path.splitext(name)[1])
    if mimetype:
      with open(os.path.join(STATIC_DIR, name), 'rb') as f:
        files[name] = (f.read(), mimetype)
  return files


def create_app(models: engine.Models, settings: StudioSettings | None = None, *,
               seed: int | None = None, max_sessions: int = 64,
               trusted_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS) -> flask.Flask:
  """The studio as a WSGI app. trusted_hosts: Host header names accepted (None: any); the
  default refuses DNS-rebinding requests to a loopback server."""
  settings = settings or StudioSettings()
  if not 1 <= settings.population_size <= MAX_POPULATION:
    raise UserError(f'population_size must be in 1..{MAX_POPULATION}, '
                    f'got {settings.population_size}')
  if not 0.0 <= settings.sigma <= 1.0:
    raise UserError(f'sigma must be in [0, 1], got {settings.sigma}')
  engine.check_gibbs_steps(settings.default_gibbs_steps)
  if models.musicvae is not None:  # fail at start-up, not on the first page view
    evolve.Evolution(models.musicvae.z_dim, settings.population_size, crossover=settings.crossover,
                     num_foreign=min(settings.num_foreign, settings.population_size),
                     elitism=settings.elitism)

  app = flask.Flask(__name__, static_folder=None)
  app.url_map.merge_slashes = False  # '//etc/passwd' is a 404, not a redirect
  app.config.update(MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES, TRUSTED_HOSTS=trusted_hosts)
  static = _load_static()
  sessions = SessionStore(max_sessions, seed)
  app.extensions['studio'] = dict(models=models, settings=settings, sessions=sessions)

  # ---------------------------------------------------------------------------- plumbing

  def session_for_api() -> Session:
    """The request's session, made (and its cookie set) when there is none."""
    session = sessions.get(flask.request.cookies.get(COOKIE))
    if session is None:
      session = sessions.create()
      flask.g.new_session_id = session.id
    return session

  @app.after_request
  def finish(response: flask.Response) -> flask.Response:
    new_id = flask.g.pop('new_session_id', None)
    if new_id:
      response.set_cookie(COOKIE, new_id, httponly=True, samesite='Strict', path='/')
    for key, value in _SECURITY_HEADERS.items():
      response.headers.setdefault(key, value)
    if flask.request.path.startswith('/api/'):
      response.headers.setdefault('Cache-Control', 'no-store')
    return response

  def error(status: int, message: str) -> flask.Response:
    response = flask.jsonify(error=message)
    response.status_code = status
    return response

  @app.errorhandler(ApiError)
  def api_error(e: ApiError):
    return error(e.status, e.message)

  @app.errorhandler(UserError)
  def user_error(e: UserError):
    return error(400, str(e))

  @app.errorhandler(exceptions.HTTPException)
  def http_error(e: exceptions.HTTPException):
    if e.code == 413:
      return error(413, f'request too large (the limit is {MAX_UPLOAD_BYTES // 1024} KiB)')
    if e.code == 404:
      return error(404, 'not found')
    return error(e.code or 500, e.description or e.name)

  @app.errorhandler(Exception)
  def internal_error(e: Exception):
    log.exception('studio: internal error')
    return error(500, f'internal error ({type(e).__name__}); see the server log')

  def musicvae() -> engine.LoadedMusicVAE:
    if models.musicvae is None:
      raise ApiError(503, models.musicvae_message)
    return models.musicvae

  def coconet() -> engine.LoadedCoconet:
    if models.coconet is None:
      raise ApiError(503, models.coconet_message)
    return models.coconet

  def urls(output_id: str) -> dict[str, str]:
    return {kind: f'/out/{output_id}.{kind}' for kind in engine.RENDER_KINDS}

  # ---------------------------------------------------------------------------- pages and files

  @app.get('/')
  def index():
    return flask.redirect('/evolve' if models.musicvae is not None else '/harmonize')

  def static_response(name: str) -> flask.Response:
    if name not in static:
      raise exceptions.NotFound()
    data, mimetype = static[name]
    response = flask.Response(data, mimetype=mimetype)
    response.headers['Cache-Control'] = 'no-cache'
    return response

  @app.get('/evolve')
  def evolve_page():
    return static_response(PAGES['evolve'])

  @app.get('/harmonize')
  def harmonize_page():
    return static_response(PAGES['harmonize'])

  @app.get('/static/<path:name>')
  def static_file(name: str):
    return static_response(name)

  @app.get('/out/<path:name>')
  def output_file(name: str):
    match = _OUTPUT_FILE.fullmatch(name)
    session = sessions.get(flask.request.cookies.get(COOKIE))
    if match is None or session is None:
      raise exceptions.NotFound()
    output_id, kind = match.groups()
    with session.lock:
      output = session.outputs.get(output_id)
      if output is None:
        raise exceptions.NotFound()
      data = output.rendered.get(kind)
    if data is None:  # render outside the session lock: the session stays responsive
      data = engine.render_bytes(output.seq, kind, output.title)
      with session.lock:
        session.remember(output_id, kind, data)
    response = flask.send_file(io.BytesIO(data), mimetype=MIMETYPES[kind],
                               as_attachment=kind == 'mid',
                               download_name=f'{output.name}.{kind}', conditional=True,
                               etag=f'{output_id}.{kind}', max_age=3600)
    response.headers['Cache-Control'] = 'private, max-age=3600'
    return response

  # ---------------------------------------------------------------------------- info

  @app.get('/api/info')
  def info():
    mvae, coco = models.musicvae, models.coconet
    return flask.jsonify(
        musicvae=dict(available=mvae is not None, message=models.musicvae_message,
                      workdir=mvae.workdir if mvae else None,
                      z_dim=mvae.z_dim if mvae else None,
                      population_size=settings.population_size, sigma=settings.sigma),
        coconet=dict(available=coco is not None, message=models.coconet_message,
                     workdir=coco.workdir if coco else None,
                     gibbs_steps=list(engine.GIBBS_STEPS),
                     default_gibbs_steps=settings.default_gibbs_steps,
                     grid=dict(steps=engine.GRID_STEPS,
                               step_sixteenths=engine.GRID_STEP_SIXTEENTHS,
                               low=engine.SOPRANO_RANGE[0], high=engine.SOPRANO_RANGE[1]),
                     max_upload_bytes=MAX_UPLOAD_BYTES))

  # ---------------------------------------------------------------------------- evolve

  def decode_generation(session: Session, mvae: engine.LoadedMusicVAE) -> list[str]:
    evo = session.evolution
    with models.lock:
      seqs = engine.decode_population(mvae, evo.population, seed=evo.seed,
                                      generation=evo.generation)
    ids = []
    for i, seq in enumerate(seqs):
      name = f'evolve_g{evo.generation:03d}_{i}'
      ids.append(session.add_output(Output(seq, name, f'generation {evo.generation}, #{i + 1}')))
    return ids

  def new_evolution(session: Session, mvae: engine.LoadedMusicVAE) -> None:
    session.evolution = evolve.Evolution(
        mvae.z_dim, settings.population_size, seed=session.new_seed(),
        crossover=settings.crossover, sigma=settings.sigma,
        num_foreign=min(settings.num_foreign, settings.population_size),
        elitism=settings.elitism)
    session.generations = [decode_generation(session, mvae)]

  def evolve_state(session: Session) -> flask.Response:
    evo = session.evolution
    last = evo.history[-1]
    population = []
    for i, output_id in enumerate(session.generations[-1]):
      output = session.outputs[output_id]
      population.append(dict(
          index=i, id=output_id, name=output.name, origin=last.origins[i],
          parents=[int(p) for p in last.parents_N2[i] if p >= 0],
          notes=engine.notes_json(output.seq),
          num_steps=int(output.seq.total_quantized_steps), **urls(output_id)))
    return flask.jsonify(generation=evo.generation, can_undo=evo.generation > 0,
                         seed=evo.seed, sigma=evo.sigma, selected=list(last.selected),
                         last_sigma=last.sigma, population=population)

  def check_generation(body: dict[str, Any], evo: evolve.Evolution) -> None:
    generation = _int(body.get('generation'), 'generation', 0, 10**9)
    if generation != evo.generation:
      raise ApiError(409, f'this page shows generation {generation} but the session is at '
                          f'generation {evo.generation} (changed in another tab?); reload the '
                          f'page')

  @app.get('/api/evolve')
  def evolve_get():
    mvae = musicvae()
    session = session_for_api()
    with session.lock:
      if session.evolution is None:
        new_evolution(session, mvae)
      return evolve_state(session)

  @app.post('/api/evolve/next')
  def evolve_next():
    mvae = musicvae()
    body = _json_body()
    session = session_for_api()
    with session.lock:
      if session.evolution is None:
        raise ApiError(409, 'no population yet: load the Evolve page first')
      evo = session.evolution
      check_generation(body, evo)
      selected = body.get('selected')
      if not isinstance(selected, list) or not selected:
        raise ApiError(400, 'select at least one melody (selected: a non-empty list of indices)')
      selected = [_int(i, 'a selected index', 0, evo.population_size - 1) for i in selected]
      if len(set(selected)) != len(selected):
        raise ApiError(400, f'selected indices repeat: {selected}')
      sigma = body.get('sigma')
      sigma = evo.sigma if sigma is None else _number(sigma, 'sigma', 0.0, 1.0)
      evo.next_generation(selected, sigma)
      try:
        session.generations.append(decode_generation(session, mvae))
      except BaseException:
        evo.undo()  # keep the population and its decoded melodies in step
        raise
      return evolve_state(session)

  @app.post('/api/evolve/undo')
  def evolve_undo():
    musicvae()
    body = _json_body()
    session = session_for_api()
    with session.lock:
      if session.evolution is None:
        raise ApiError(409, 'no population yet: load the Evolve page first')
      check_generation(body, session.evolution)
      if session.evolution.generation == 0:
        raise ApiError(409, 'nothing to undo: this is the first generation')
      session.evolution.undo()
      session.generations.pop()
      return evolve_state(session)

  @app.post('/api/evolve/reset')
  def evolve_reset():
    mvae = musicvae()
    _json_body()
    session = session_for_api()
    with session.lock:
      new_evolution(session, mvae)
      return evolve_state(session)

  # ---------------------------------------------------------------------------- harmonize

  def harmonize_response(session: Session, soprano_T: np.ndarray, shift: int, gibbs_steps: int,
                         seed: int, source: str) -> flask.Response:
    coco = coconet()
    start = time.perf_counter()
    with models.lock:
      pitches_TI = engine.harmonize(coco, soprano_T, gibbs_steps=gibbs_steps, seed=seed)
    seconds = time.perf_counter() - start
    seq = engine.harmony_sequence(pitches_TI)
    output_id = session.add_output(Output(
        seq, f'harmonization_{seed}', f'{source} harmonized ({gibbs_steps} Gibbs steps)'))
    session.harmonizations.append(output_id)
    while len(session.harmonizations) > MAX_HARMONIZATIONS:
      session.drop_output(session.harmonizations.popleft())
    return flask.jsonify(
        id=output_id, num_steps=len(pitches_TI), voices=engine.pitches_json(pitches_TI),
        soprano=[row[0] for row in engine.pitches_json(soprano_T[:, None])],
        transposed_by=shift, gibbs_steps=gibbs_steps, seed=seed, seconds=round(seconds, 3),
        notes=engine.notes_json(seq), **urls(output_id))

  @app.post('/api/harmonize')
  def harmonize_grid():
    coconet()
    body = _json_body()
    melody = body.get('melody')
    if not isinstance(melody, list) or not melody:
      raise ApiError(400, 'melody must be a non-empty list of MIDI pitches (null for a rest)')
    steps_per_note = _int(body.get('steps_per_note', engine.GRID_STEP_SIXTEENTHS),
                          'steps_per_note', 1, 16)
    if len(melody) * steps_per_note > engine.MAX_MELODY_STEPS:
      raise ApiError(400, f'the melody is too long: at most {engine.MAX_MELODY_STEPS} 16th steps')
    pitches = [None if p is None else _int(p, 'a melody pitch', 0, 127) for p in melody]
    gibbs_steps = _gibbs_steps(body.get('gibbs_steps', settings.default_gibbs_steps))
    transpose = _bool(body.get('transpose', False), 'transpose')
    soprano_T, shift = engine.soprano_from_grid(pitches, steps_per_note=steps_per_note,
                                                transpose=transpose)
    session = session_for_api()
    with session.lock:
      return harmonize_response(session, soprano_T, shift, gibbs_steps,
                                _seed(body.get('seed'), session), 'the grid melody')

  @app.post('/api/harmonize/upload')
  def harmonize_upload():
    coconet()
    upload = flask.request.files.get('file')
    if upload is None:
      raise ApiError(400, 'expected a MIDI file in the form field "file" (multipart/form-data)')
    data = upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
      raise ApiError(413, f'the file is too large (the limit is {MAX_UPLOAD_BYTES // 1024} KiB)')
    # The client's file name only ever appears in messages.
    name = re.sub(r'[^\w .()-]', '_', os.path.basename(upload.filename or ''))[:80] or 'upload'
    form = flask.request.form
    gibbs_steps = _gibbs_steps(form.get('gibbs_steps', settings.default_gibbs_steps))
    transpose = _bool(form.get('transpose', 'false'), 'transpose')
    seed = form.get('seed')
    if seed is not None:
      seed = _int(int(seed) if seed.isdigit() else seed, 'seed', 0, 2**31 - 2)
    soprano_T, shift = engine.soprano_from_midi(data, name=name, transpose=transpose)
    session = session_for_api()
    with session.lock:
      return harmonize_response(session, soprano_T, shift, gibbs_steps, _seed(seed, session),
                                name)

  @app.get('/api/harmonize/example')
  def harmonize_example():
    return flask.jsonify(melody=engine.example_grid(),
                         step_sixteenths=engine.GRID_STEP_SIXTEENTHS)

  return app


# ------------------------------------------------------------------------------------------------
# Serving


def make_server(app: flask.Flask, host: str, port: int) -> serving.BaseWSGIServer:
  """A threaded WSGI server bound to host:port (port 0: a free one; see server.server_port)."""
  try:
    return serving.make_server(host, port, app, threaded=True)
  except OSError as e:
    raise UserError(f'studio: cannot listen on {host}:{port} ({e.strerror or e}); pick another '
                    f'--port or --host') from None
  except (UnicodeError, ValueError) as e:
    raise UserError(f'studio: bad --host {host!r} ({e})') from None


def serve(app: flask.Flask, host: str, port: int) -> None:
  """Serves until Ctrl+C."""
  server = make_server(app, host, port)
  print(f'Studio running at http://{_url_host(host)}:{server.server_port}/ (Ctrl+C to stop)',
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


def _url_host(host: str) -> str:
  return f'[{host}]' if ':' in host else host
