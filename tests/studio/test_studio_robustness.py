"""The studio under hostile or unlucky traffic, through the real threaded server over loopback:
deeply nested JSON, floods of requests without a cookie, sessions spilled and restored, and
sessions that expired. Every connection has a timeout, so a hang fails instead of blocking."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import http.cookies
import json
import threading
import time
from typing import Any, Iterator

import numpy as np
import pytest

from common.errors import UserError
from musicvae import evolve
from studio import app as app_lib
from studio.routes import context

TIMEOUT_S = 60  # per request; a whole test takes seconds
DEEP = '[' * 5000
JSON_ENDPOINTS = ('/api/evolve/next', '/api/evolve/undo', '/api/evolve/reset', '/api/harmonize')
SETTINGS = app_lib.StudioSettings(population_size=4)  # quick to decode, many times over


@contextlib.contextmanager
def _served(app) -> Iterator[int]:
  """The app on a free loopback port, in a thread of this process; yields the port."""
  server = app_lib.make_server(app, '127.0.0.1', 0)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield server.server_port
  finally:
    server.shutdown()
    thread.join(TIMEOUT_S)
    server.server_close()


class Browser:
  """An HTTP client that keeps the studio's cookie, as a browser does (cookie=None: sends none)."""

  def __init__(self, port: int, cookie: str | None = None, keep_cookie: bool = True):
    self.port = port
    self.cookie = cookie
    self.keep_cookie = keep_cookie
    self.set_cookie = None  # the last Set-Cookie header

  def request(self, method: str, path: str, body: Any = None, raw: str | None = None
              ) -> tuple[int, Any]:
    """(status, JSON answer or None)."""
    connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=TIMEOUT_S)
    headers = {}
    if self.cookie:
      headers['Cookie'] = f'{app_lib.COOKIE}={self.cookie}'
    if body is not None or raw is not None:
      headers['Content-Type'] = 'application/json'
    data = raw if raw is not None else None if body is None else json.dumps(body)
    try:
      connection.request(method, path, body=data, headers=headers)
      response = connection.getresponse()
      payload = response.read()
      self.set_cookie = response.getheader('Set-Cookie')
      kind = response.getheader('Content-Type') or ''
    finally:
      connection.close()
    if self.set_cookie and self.keep_cookie:
      self.cookie = http.cookies.SimpleCookie(self.set_cookie)[app_lib.COOKIE].value
    return response.status, json.loads(payload) if kind.startswith('application/json') else None

  def get(self, path: str) -> tuple[int, Any]:
    return self.request('GET', path)

  def post(self, path: str, body: Any = None, raw: str | None = None) -> tuple[int, Any]:
    return self.request('POST', path, body if body is not None or raw is not None else {}, raw)


def _store(app):
  return app.extensions['studio'].sessions


def _vectors(app, session_id: str) -> np.ndarray:
  """The session's population vectors, read on the server's side."""
  store = _store(app)
  session = store.checkout(session_id)
  try:
    return session.evolution.population
  finally:
    store.release(session)


def _notes(state) -> list:
  return [c['notes'] for c in state['population']]


def _flood(port: int, count: int) -> list[int]:
  """`count` requests without a cookie, four at a time: mostly ones that make a session (a
  population each), some read-only, some refused. Their statuses."""
  def one(i: int) -> int:
    browser = Browser(port, keep_cookie=False)
    if i % 5 == 0:
      return browser.get('/api/info')[0]
    if i % 5 == 1:
      return browser.post('/api/evolve/next', dict(generation=0, selected=[0]))[0]
    if i % 5 == 2:
      return browser.post('/api/evolve/reset')[0]
    return browser.get('/api/evolve')[0]

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    return list(pool.map(one, range(count)))


def _evolve_to_generation_2(browser: Browser) -> dict:
  assert browser.get('/api/evolve')[0] == 200
  assert browser.post('/api/evolve/next', dict(generation=0, selected=[0, 1], sigma=0.4))[0] == 200
  status, state = browser.post('/api/evolve/next', dict(generation=1, selected=[2]))
  assert status == 200 and state['generation'] == 2
  return state


def test_deeply_nested_json_is_a_400(studio_models):
  app = app_lib.create_app(studio_models, SETTINGS, seed=0)
  with _served(app) as port:
    browser = Browser(port)
    for path in JSON_ENDPOINTS:
      for raw in (DEEP, '{"a": ' * 5000):
        status, answer = browser.post(path, raw=raw)
        assert status == 400 and 'nested too deeply' in answer['error'], (path, answer)
        assert browser.set_cookie is None
    assert browser.get('/api/info')[0] == 200  # the server carries on
  assert len(_store(app)) == 0


def test_read_only_and_refused_requests_make_no_session(studio_models):
  app = app_lib.create_app(studio_models, SETTINGS, seed=0, max_sessions=4)
  with _served(app) as port:
    browser = Browser(port)
    for path, status in (('/', 302), ('/evolve', 200), ('/static/studio.js', 200),
                         ('/api/info', 200), ('/api/harmonize/example', 200),
                         ('/out/AAAAAAAAAAAAAAAAAAAAAA.mid', 404), ('/api/evolve/next', 405)):
      assert browser.get(path)[0] == status, path
      assert browser.set_cookie is None, path
    for path, body, status in (('/api/evolve/next', dict(generation=0, selected=[0]), 409),
                               ('/api/evolve/undo', dict(generation=0), 409),
                               ('/api/harmonize', dict(melody=[]), 400),
                               ('/api/harmonize', dict(melody=[60], gibbs_steps=7), 400)):
      assert browser.post(path, body)[0] == status, path
      assert browser.set_cookie is None, path
    assert len(_store(app)) == 0
    assert browser.get('/api/evolve')[0] == 200 and browser.set_cookie  # this one needs state
    assert len(_store(app)) == 1


def test_requests_without_a_cookie_cannot_evict_an_active_session(studio_models):
  app = app_lib.create_app(studio_models, SETTINGS, seed=0, max_sessions=4)
  with _served(app) as port:
    alice = Browser(port)
    before = _evolve_to_generation_2(alice)
    vectors = _vectors(app, alice.cookie)
    start = time.monotonic()
    statuses = _flood(port, 200)
    assert set(statuses) == {200, 409}, statuses
    assert len(_store(app)) <= 4
    status, after = alice.get('/api/evolve')
  assert status == 200 and after['generation'] == 2 and 'notice' not in after
  assert _notes(after) == _notes(before)
  np.testing.assert_array_equal(_vectors(app, alice.cookie), vectors)
  assert time.monotonic() - start < 120


def test_an_idle_session_is_spilled_and_restored(studio_models, tmp_path):
  # One session in memory, and none counts as active: the flood's first request spills Alice's.
  app = app_lib.create_app(studio_models, SETTINGS, seed=0, max_sessions=1,
                           active_session_minutes=0, session_dir=str(tmp_path))
  with _served(app) as port:
    alice = Browser(port)
    before = _evolve_to_generation_2(alice)
    vectors = _vectors(app, alice.cookie)
    bred = alice.post('/api/evolve/next', dict(generation=2, selected=[1, 3], sigma=0.2))[1]
    assert alice.post('/api/evolve/undo', dict(generation=3))[0] == 200
    statuses = _flood(port, 20)
    assert set(statuses) == {200, 409}, statuses
    assert alice.cookie not in _store(app) and len(list(tmp_path.iterdir())) == 1

    status, after = alice.get('/api/evolve')
    assert status == 200 and after['generation'] == 2 and 'notice' not in after
    assert alice.set_cookie is None  # the same session, not a new one
    assert _notes(after) == _notes(before)  # decoded again: new ids, the same melodies
    np.testing.assert_array_equal(_vectors(app, alice.cookie), vectors)
    assert alice.get(after['population'][0]['mid'])[0] == 200
    # The RNG came back too: the same selection breeds the same children.
    again = alice.post('/api/evolve/next', dict(generation=2, selected=[1, 3], sigma=0.2))[1]
    assert _notes(again) == _notes(bred)
    for generation in (3, 2):
      status, state = alice.post('/api/evolve/undo', dict(generation=generation))
      assert status == 200 and state['generation'] == generation - 1


def test_sessions_in_a_named_folder_survive_a_restart(studio_models, tmp_path):
  first = app_lib.create_app(studio_models, SETTINGS, seed=0, session_dir=str(tmp_path))
  with _served(first) as port:
    alice = Browser(port)
    state = _evolve_to_generation_2(alice)
  # A session from a run with another MusicVAE (z 3): its vectors would not decode.
  store = _store(first)
  stranger = store.new()
  stranger.evolution, stranger.generations = evolve.Evolution(3, 4, seed=0), [None]
  store.add(stranger)
  store.release(store.checkout(stranger.id))
  store.close()  # what serve() does on Ctrl+C
  assert len(list(tmp_path.iterdir())) == 2
  restarted = app_lib.create_app(studio_models, SETTINGS, seed=1, session_dir=str(tmp_path))
  with _served(restarted) as port:
    alice.port = port
    status, after = alice.get('/api/evolve')
    assert status == 200 and after['generation'] == 2 and 'notice' not in after
    assert _notes(after) == _notes(state)
    status, fresh = Browser(port, cookie=stranger.id).get('/api/evolve')
    assert status == 200 and fresh['generation'] == 0 and len(fresh['population']) == 4


def test_an_expired_session_is_told_once(studio_models):
  first = app_lib.create_app(studio_models, SETTINGS, seed=0)
  with _served(first) as port:
    alice = Browser(port)
    _evolve_to_generation_2(alice)
    old_cookie = alice.cookie
  restarted = app_lib.create_app(studio_models, SETTINGS, seed=1)  # no --session_dir
  with _served(restarted) as port:
    alice.port = port
    status, state = alice.post('/api/evolve/next', dict(generation=2, selected=[0]))
    assert status == 200 and state['generation'] == 0
    assert state['notice'] == context.EXPIRED_NOTICE and 'expired' in state['notice']
    assert alice.cookie != old_cookie  # a new session
    status, state = alice.get('/api/evolve')
    assert status == 200 and state['generation'] == 0 and 'notice' not in state

    for path, body in (('/api/evolve', None), ('/api/evolve/undo', dict(generation=2)),
                       ('/api/harmonize', dict(melody=[72, 71, 69, 67] * 8, gibbs_steps=8))):
      expired = Browser(port, cookie=old_cookie)
      status, answer = expired.request('GET' if body is None else 'POST', path, body)
      assert status == 200 and answer['notice'] == context.EXPIRED_NOTICE, path
    for cookie in ('not-one-of-ours', None):  # no cookie, or not a well-formed one: no notice
      status, answer = Browser(port, cookie=cookie).get('/api/evolve')
      assert status == 200 and 'notice' not in answer


def test_a_fresh_session_pushed_out_is_told_it_expired(studio_models):
  app = app_lib.create_app(studio_models, SETTINGS, seed=0, max_sessions=1)
  with _served(app) as port:
    bob, carol = Browser(port), Browser(port)
    assert bob.get('/api/evolve')[0] == 200  # fresh: bob has not come back yet
    assert carol.get('/api/evolve')[0] == 200  # pushes bob's session out
    status, state = bob.get('/api/evolve')
    assert status == 200 and state['notice'] == context.EXPIRED_NOTICE


@pytest.mark.parametrize('minutes, sessions', [(-1, 4), (5, 0)])
def test_bad_session_limits_are_refused(studio_models, minutes, sessions):
  with pytest.raises(UserError):
    app_lib.create_app(studio_models, active_session_minutes=minutes, max_sessions=sessions)
