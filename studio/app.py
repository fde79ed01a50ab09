"""The studio's Flask application: the routes' blueprints wired together, errors, and serving.

    app = create_app(engine.load_models(musicvae_workdir, coconet_workdir))
    serve(app, '127.0.0.1', 8000)

Where things live: sessions and the store that bounds them in studio/sessions.py; reading request
bodies and values in studio/requests.py; the routes in studio/routes/ (pages and files, info,
evolve, harmonize), which share a `routes.context.Studio` kept in app.extensions['studio'].

Locks: the session store's lock guards its dicts and is never held while waiting for another
lock; a session's lock guards its state for the whole request; `Models.lock` serializes model
calls and is only ever taken while holding at most one session lock (never the other way round),
so there is no lock-order cycle.

Errors: every error is JSON {"error": message} with a 4xx status for bad input (bad JSON, bad
ids, oversized uploads, corrupt MIDI, melodies out of range), 503 when a page's model is not
loaded, and 500 for bugs.
"""

from __future__ import annotations

import logging

import flask
from werkzeug import exceptions
from werkzeug import serving

from common.errors import UserError
from musicvae import evolve
from studio import engine
from studio import requests
from studio import sessions
from studio.routes import context
from studio.routes import evolve as evolve_routes
from studio.routes import harmonize as harmonize_routes
from studio.routes import info as info_routes
from studio.routes import pages_and_files

# The public API, importable from here (experiments/studio.py and the tests use these names).
ApiError = requests.ApiError
COOKIE = sessions.COOKIE
MAX_UPLOAD_BYTES = requests.MAX_UPLOAD_BYTES
Output = sessions.Output
Session = sessions.Session
SessionStore = sessions.SessionStore
StudioSettings = context.StudioSettings

MAX_POPULATION = 32
LOOPBACK_HOSTS = ('127.0.0.1', 'localhost', '::1')
_SECURITY_HEADERS = {
    'Content-Security-Policy': ("default-src 'self'; img-src 'self' data:; media-src 'self'; "
                                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
}

log = logging.getLogger(__name__)


def _check_settings(models: engine.Models, settings: StudioSettings) -> None:
  """UserError for settings that could not work: at start-up, not on the first page view."""
  if not 1 <= settings.population_size <= MAX_POPULATION:
    raise UserError(f'population_size must be in 1..{MAX_POPULATION}, '
                    f'got {settings.population_size}')
  if not 0.0 <= settings.sigma <= 1.0:
    raise UserError(f'sigma must be in [0, 1], got {settings.sigma}')
  engine.check_gibbs_steps(settings.default_gibbs_steps)
  if models.musicvae is not None:
    evolve.Evolution(models.musicvae.z_dim, settings.population_size, crossover=settings.crossover,
                     num_foreign=min(settings.num_foreign, settings.population_size),
                     keep_selected=settings.keep_selected, elitism=settings.elitism)


def create_app(models: engine.Models, settings: StudioSettings | None = None, *,
               seed: int | None = None, max_sessions: int = 64,
               trusted_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS,
               session_dir: str | None = None,
               active_session_minutes: float = sessions.ACTIVE_MINUTES) -> flask.Flask:
  """The studio as a WSGI app.

  trusted_hosts: Host header names accepted (None: any); the default refuses DNS-rebinding
  requests to a loopback server. max_sessions, session_dir (None: a temporary directory) and
  active_session_minutes bound the sessions kept in memory (studio/sessions.py).
  """
  settings = settings or StudioSettings()
  _check_settings(models, settings)
  if not active_session_minutes >= 0:
    raise UserError(f'active_session_minutes must be >= 0, got {active_session_minutes}')
  if max_sessions < 1:
    raise UserError(f'max_sessions must be >= 1, got {max_sessions}')

  app = flask.Flask(__name__, static_folder=None)
  app.url_map.merge_slashes = False  # '//etc/passwd' is a 404, not a redirect
  app.config.update(MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES, TRUSTED_HOSTS=trusted_hosts)
  store = SessionStore(max_sessions, seed, spill_dir=session_dir,
                       active_seconds=active_session_minutes * 60)
  app.extensions['studio'] = context.Studio(models, settings, store,
                                            pages_and_files.load_static_files())
  for routes in (pages_and_files, info_routes, evolve_routes, harmonize_routes):
    app.register_blueprint(routes.blueprint)
  app.after_request(context.keep_new_session)
  app.after_request(_add_headers)
  app.teardown_request(context.release_session)
  app.register_error_handler(ApiError, lambda e: _error(e.status, e.message))
  app.register_error_handler(UserError, lambda e: _error(400, str(e)))
  app.register_error_handler(exceptions.HTTPException, _http_error)
  app.register_error_handler(Exception, _internal_error)
  return app


def _add_headers(response: flask.Response) -> flask.Response:
  for key, value in _SECURITY_HEADERS.items():
    response.headers.setdefault(key, value)
  if flask.request.path.startswith('/api/'):
    response.headers.setdefault('Cache-Control', 'no-store')
  return response


def _error(status: int, message: str) -> flask.Response:
  response = flask.jsonify(error=message)
  response.status_code = status
  return response


def _http_error(e: exceptions.HTTPException) -> flask.Response:
  if e.code == 413:
    return _error(413, f'request too large (the limit is {MAX_UPLOAD_BYTES // 1024} KiB)')
  if e.code == 404:
    return _error(404, 'not found')
  return _error(e.code or 500, e.description or e.name)


def _internal_error(e: Exception) -> flask.Response:
  log.exception('studio: internal error')
  return _error(500, f'internal error ({type(e).__name__}); see the server log')


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
  """Serves until Ctrl+C; then the sessions are spilled to --session_dir, when one is named."""
  server = make_server(app, host, port)
  print(f'Studio running at http://{_url_host(host)}:{server.server_port}/ (Ctrl+C to stop)',
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
    app.extensions['studio'].sessions.close()


def _url_host(host: str) -> str:
  return f'[{host}]' if ':' in host else host
