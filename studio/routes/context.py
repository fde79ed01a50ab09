"""What the routes share: the studio's settings, models and sessions, and the request's session.

    studio = context.current()              # in a request
    session = context.session_for_api()     # the cookie's session, or a new one

A new session's cookie is set on the response (`set_new_session_cookie`, after the request).
"""

from __future__ import annotations

import dataclasses

import flask

from studio import engine
from studio import sessions
from studio.requests import ApiError


@dataclasses.dataclass
class StudioSettings:
  population_size: int = 8
  sigma: float = 0.5
  crossover: str = 'uniform'
  num_foreign: int = 2
  elitism: bool = False
  default_gibbs_steps: int = engine.DEFAULT_GIBBS_STEPS


@dataclasses.dataclass
class Studio:
  """The app's shared state (app.extensions['studio']); `static_files`: name -> (bytes, type)."""
  models: engine.Models
  settings: StudioSettings
  sessions: sessions.SessionStore
  static_files: dict[str, tuple[bytes, str]]

  def musicvae(self) -> engine.LoadedMusicVAE:
    """The MusicVAE, or ApiError 503 saying why there is none."""
    if self.models.musicvae is None:
      raise ApiError(503, self.models.musicvae_message)
    return self.models.musicvae

  def coconet(self) -> engine.LoadedCoconet:
    """The Coconet, or ApiError 503 saying why there is none."""
    if self.models.coconet is None:
      raise ApiError(503, self.models.coconet_message)
    return self.models.coconet


def current() -> Studio:
  return flask.current_app.extensions['studio']


def known_session() -> sessions.Session | None:
  """The session that the request's cookie names, or None."""
  return current().sessions.get(flask.request.cookies.get(sessions.COOKIE))


def session_for_api() -> sessions.Session:
  """The request's session, made (and its cookie set) when there is none."""
  session = known_session()
  if session is None:
    session = current().sessions.create()
    flask.g.new_session_id = session.id
  return session


def urls(output_id: str) -> dict[str, str]:
  """The output's URLs by kind (mid, wav, png)."""
  return {kind: f'/out/{output_id}.{kind}' for kind in engine.RENDER_KINDS}


def set_new_session_cookie(response: flask.Response) -> flask.Response:
  """After a request that made a session: its cookie."""
  new_id = flask.g.pop('new_session_id', None)
  if new_id:
    response.set_cookie(sessions.COOKIE, new_id, httponly=True, samesite='Strict', path='/')
  return response
