"""What the routes share: the studio's settings, models and sessions, and the request's session.

    studio = context.current()              # in a request
    session = context.known_session()       # the cookie's session, or None; never makes one
    session = context.session_for_update()  # the cookie's session, or a new one

A new session is added to the store (and its cookie set) after the request, only when it
succeeded (status < 400): pages, files, read-only and refused requests never make one. When the
request came with a well-formed cookie that the store does not know (a session that was dropped,
or one from before a restart), `answer` adds a `notice` saying so, once: the new session's cookie
replaces the old one.

A session taken from the store is counted as in use until the request ends (the store never evicts
it meanwhile).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flask

from studio import engine
from studio import sessions
from studio.requests import ApiError

EXPIRED_NOTICE = ('Your studio session had expired (the server was restarted or had to make room '
                  'for others), so a new one was started.')


@dataclasses.dataclass
class StudioSettings:
  population_size: int = 8
  sigma: float = 0.5
  crossover: str = 'uniform'
  num_foreign: int = 2
  keep_selected: str = 'mutated'  # musicvae.evolve.KEEP_SELECTED
  elitism: bool = False  # the same as keep_selected='unchanged'
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


def _cookie() -> str | None:
  return flask.request.cookies.get(sessions.COOKIE)


def known_session() -> sessions.Session | None:
  """The session that the request's cookie names (restored if it was spilled), or None."""
  if 'studio_session' not in flask.g:
    flask.g.studio_session = current().sessions.checkout(_cookie())
  return flask.g.studio_session


def session_for_update() -> sessions.Session:
  """The request's session, or a new one that the store keeps if the request succeeds."""
  session = known_session()
  if session is None:
    session = flask.g.get('studio_new_session')
    if session is None:
      session = flask.g.studio_new_session = current().sessions.new()
  return session


def replaces_expired_session() -> bool:
  """Whether this request made a new session in place of one that the store no longer knows."""
  return 'studio_new_session' in flask.g and current().sessions.expired(_cookie())


def urls(output_id: str) -> dict[str, str]:
  """The output's URLs by kind (mid, wav, png)."""
  return {kind: f'/out/{output_id}.{kind}' for kind in engine.RENDER_KINDS}


def answer(**fields: Any) -> flask.Response:
  """A JSON answer about the session's state, with the expired-session notice when due."""
  if replaces_expired_session():
    fields['notice'] = EXPIRED_NOTICE
  return flask.jsonify(**fields)


def keep_new_session(response: flask.Response) -> flask.Response:
  """After a request: a new session that the request filled is added, and its cookie set."""
  session = flask.g.pop('studio_new_session', None)
  if session is not None and response.status_code < 400:
    current().sessions.add(session)
    response.set_cookie(sessions.COOKIE, session.id, httponly=True, samesite='Strict', path='/')
  return response


def release_session(_: BaseException | None = None) -> None:
  """When the request ends: the session it took from the store is no longer in use."""
  session = flask.g.pop('studio_session', None)
  if session is not None:
    current().sessions.release(session)
