"""The pages, the static files and the generated outputs.

Files: the static files are read into memory at start-up (`load_static_files`) and served from
that dict; outputs (MIDI, WAV, PNG) are rendered from NoteSequences held in the session and looked
up by an opaque random id. No part of a request path or parameter ever reaches the filesystem.
"""

from __future__ import annotations

import io
import os
import re

import flask
from werkzeug import exceptions

from studio import engine
from studio.routes import context

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'static')
STATIC_TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
                '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png'}
PAGES = {'evolve': 'evolve.html', 'harmonize': 'harmonize.html'}
MIMETYPES = {'mid': 'audio/midi', 'wav': 'audio/wav', 'png': 'image/png'}
_OUTPUT_FILE = re.compile(r'([A-Za-z0-9_-]{22})\.(mid|wav|png)')

blueprint = flask.Blueprint('pages_and_files', __name__)


def load_static_files() -> dict[str, tuple[bytes, str]]:
  """The files of studio/static that have a known type: name -> (bytes, mimetype)."""
  static_files = {}
  for name in sorted(os.listdir(STATIC_DIR)):
    mimetype = STATIC_TYPES.get(os.path.splitext(name)[1])
    if mimetype:
      with open(os.path.join(STATIC_DIR, name), 'rb') as f:
        static_files[name] = (f.read(), mimetype)
  return static_files


def _static_response(name: str) -> flask.Response:
  static_files = context.current().static_files
  if name not in static_files:
    raise exceptions.NotFound()
  data, mimetype = static_files[name]
  response = flask.Response(data, mimetype=mimetype)
  response.headers['Cache-Control'] = 'no-cache'
  return response


@blueprint.get('/')
def index():
  return flask.redirect('/evolve' if context.current().models.musicvae is not None
                        else '/harmonize')


@blueprint.get('/evolve')
def evolve_page():
  return _static_response(PAGES['evolve'])


@blueprint.get('/harmonize')
def harmonize_page():
  return _static_response(PAGES['harmonize'])


@blueprint.get('/static/<path:name>')
def static_file(name: str):
  return _static_response(name)


@blueprint.get('/out/<path:name>')
def output_file(name: str):
  match = _OUTPUT_FILE.fullmatch(name)
  session = context.known_session() if match else None
  if session is None:
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
                             as_attachment=kind == 'mid', download_name=f'{output.name}.{kind}',
                             conditional=True, etag=f'{output_id}.{kind}', max_age=3600)
  response.headers['Cache-Control'] = 'private, max-age=3600'
  return response
