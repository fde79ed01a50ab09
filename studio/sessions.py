"""Sessions: each browser's state on the server, and a store that bounds how many stay in memory.

    store = SessionStore(max_sessions=64, seed=0)
    session = store.checkout(cookie)      # the cookie's session (restored if spilled), or None
    ...; store.release(session)           # after the request
    session = store.new(); ...; store.add(session)   # kept once its request has succeeded

A session is a random 32-character id in an HttpOnly, SameSite=Strict cookie (COOKIE) naming a
Session that holds its own Evolution, its outputs (by opaque random ids) and a lock. Tabs of one
browser share the cookie, so every request that changes the population names the generation it
was made from (the routes answer 409 when it is stale).

Who gets a session: the routes add one only for a request that stores something (drawing a
population, a harmonization) and succeeds; pages, files, /api/info and refused requests make none.

At most `max_sessions` sessions stay in memory. A session is *fresh* until its cookie comes back
(its second request), then *established*. When a session is added beyond the limit, the store
makes room by, in this order:
  1. dropping the least recently used fresh session (its client never came back);
  2. spilling the least recently used established session idle for over `active_seconds`;
  3. dropping the new session itself once its request is answered (its next request starts
     afresh), so newcomers never push out a session that was active in the last minutes.
A spilled session whose cookie comes back is restored and makes room the same way, except that in
place of 3 the least recently used other established session is spilled (losing nothing). A session
that a request is using is never chosen. So any number of requests without a cookie only ever
displace each other's fresh sessions.

Spilling writes the session's state as JSON to a file in `spill_dir` (a temporary directory owned
by the store, or a folder the user names): its Evolution as `Evolution.to_dict()` (every
generation's vectors, the selections, sigmas and RNG states) and the session's own RNG state; no
pickle. The file is named by a hash of the id (a directory listing reveals no cookie). When the
cookie comes back, the file is read and deleted, and the routes decode the melodies again (new
output ids, the same notes). Harmonizations and rendered files are not kept. At most `max_spilled`
files are kept (the oldest is deleted). With a named folder, `close()` spills the established
sessions at shut-down and a restarted store finds them there.

`expired(cookie)` tells a well-formed cookie the store does not know (dropped, or from before a
restart) from no cookie, so the routes can say that a new session was started.

Locks: the store's lock guards its dicts, the sessions' `established`, `last_used` and `users`,
and the spill files; it is never held while waiting for a session's lock. A session's lock guards
the rest of its state for the whole request. Only a request that counts in `users` takes a
session's lock, so a session with no users is one that nobody locks: the store spills it without
taking its lock, and never evicts a session in use.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from typing import Any, Callable

import numpy as np

from common import files
from common.errors import UserError
from musicvae import evolve
from studio import engine

COOKIE = 'studio_session'
MAX_HARMONIZATIONS = 64  # per session; older ones expire
CACHE_BYTES = 64 << 20  # rendered bytes kept per session
ACTIVE_MINUTES = 15.0  # an established session used this recently is never dropped for a newcomer
MAX_SPILLED = 256  # spill files kept
SPILL_FORMAT = 'studio.session'
SPILL_VERSION = 1
_SESSION_ID = re.compile(r'[A-Za-z0-9_-]{32}')
_SPILL_FILE = re.compile(r'[0-9a-f]{64}\.json')

log = logging.getLogger(__name__)


def well_formed(session_id: str | None) -> bool:
  """Whether `session_id` could be one of ours (never a path, never too long)."""
  return bool(session_id) and _SESSION_ID.fullmatch(session_id) is not None


@dataclasses.dataclass
class Output:
  """Something generated: its music, its download name and its rendered bytes (a cache)."""
  seq: Any
  name: str
  title: str
  rendered: dict[str, bytes] = dataclasses.field(default_factory=dict)


class Session:
  """One browser's state. Use only while holding `lock` (`established`, `last_used` and `users`
  belong to the store's lock)."""

  def __init__(self, session_id: str, seed: int):
    self.id = session_id
    self.lock = threading.Lock()
    self.rng = np.random.default_rng(seed)
    self.evolution: evolve.Evolution | None = None
    # Output ids of each generation in the history; None: not decoded since a restore.
    self.generations: list[list[str] | None] = []
    self.outputs: dict[str, Output] = {}
    self.harmonizations: collections.deque[str] = collections.deque()
    self.render_cache: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()
    self.cache_bytes = 0
    self.established = False
    self.last_used = 0.0
    self.users = 0

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

  def to_dict(self) -> dict[str, Any]:
    """What spilling keeps: JSON-ready, exact (floats and RNG states round-trip)."""
    return {'format': SPILL_FORMAT, 'version': SPILL_VERSION,
            'rng_state': self.rng.bit_generator.state,
            'evolution': None if self.evolution is None else self.evolution.to_dict()}

  @classmethod
  def from_dict(cls, session_id: str, state: dict[str, Any]) -> Session:
    """The spilled session, established, its generations not decoded yet. ValueError or
    UserError when `state` is not one."""
    if not isinstance(state, dict) or (state.get('format'), state.get('version')) != (
        SPILL_FORMAT, SPILL_VERSION):
      raise ValueError(f'not a {SPILL_FORMAT} version {SPILL_VERSION} file')
    session = cls(session_id, 0)
    session.rng.bit_generator.state = state['rng_state']
    if state['evolution'] is not None:
      session.evolution = evolve.Evolution.from_dict(state['evolution'])
      session.generations = [None] * (session.evolution.generation + 1)
    session.established = True
    return session


class SessionStore:
  """Sessions by id: at most `max_sessions` in memory, the rest spilled to `spill_dir` or dropped
  (the module docstring says which and when)."""

  def __init__(self, max_sessions: int, seed: int | None, *, spill_dir: str | None = None,
               active_seconds: float = ACTIVE_MINUTES * 60, max_spilled: int = MAX_SPILLED,
               clock: Callable[[], float] = time.monotonic):
    self._lock = threading.Lock()
    self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()  # LRU first
    self._max = max(int(max_sessions), 1)
    self._seeds = np.random.default_rng(seed)
    self._active_seconds = float(active_seconds)
    self._max_spilled = max(int(max_spilled), 0)
    self._clock = clock
    # Spill files by name, the oldest first (a named folder may hold some from an earlier run).
    self._spilled: collections.OrderedDict[str, None] = collections.OrderedDict()
    self._tempdir = None
    if spill_dir is None:
      self._tempdir = tempfile.TemporaryDirectory(prefix='studio-sessions-')  # removed at exit
      self.spill_dir = self._tempdir.name
      return
    self.spill_dir = os.path.abspath(spill_dir)
    try:
      os.makedirs(self.spill_dir, mode=0o700, exist_ok=True)
      found = [(os.path.getmtime(os.path.join(self.spill_dir, name)), name)
               for name in os.listdir(self.spill_dir) if _SPILL_FILE.fullmatch(name)]
    except OSError as e:
      raise UserError(f'studio: cannot keep sessions in {spill_dir} ({e.strerror or e}); '
                      f'name another --session_dir') from None
    for _, name in sorted(found):
      self._spilled[name] = None
    with self._lock:
      self._trim_spilled()

  # ---------------------------------------------------------------------------- requests

  def checkout(self, session_id: str | None) -> Session | None:
    """The session named by `session_id` (restored when spilled), now established and counted as
    in use until `release`; None when there is none."""
    if not well_formed(session_id):
      return None
    with self._lock:
      session = self._sessions.get(session_id)
      if session is None:
        session = self._restore(session_id)
        if session is None:
          return None
        self._sessions[session_id] = session
      self._sessions.move_to_end(session_id)
      session.established = True
      session.last_used = self._clock()
      session.users += 1
      self._make_room(session)
      return session

  def release(self, session: Session) -> None:
    """Ends a `checkout`."""
    with self._lock:
      session.users = max(session.users - 1, 0)

  def new(self) -> Session:
    """A new session, not in the store until `add`."""
    with self._lock:
      seed = int(self._seeds.integers(0, 2**31 - 1))
    return Session(secrets.token_urlsafe(24), seed)  # 32 characters

  def add(self, session: Session) -> bool:
    """Keeps a new session, making room as the module docstring says; False when the room made
    was its own (every other session is established and active)."""
    with self._lock:
      if session.id not in self._sessions:
        session.last_used = self._clock()
        self._sessions[session.id] = session
        self._make_room(session)
      return session.id in self._sessions

  def expired(self, session_id: str | None) -> bool:
    """Whether `session_id` is well formed but names no session here, in memory or spilled."""
    if not well_formed(session_id):
      return False
    with self._lock:
      return session_id not in self._sessions and _spill_name(session_id) not in self._spilled

  def close(self) -> None:
    """Spills the established sessions not in use to a named folder (a temporary one is
    deleted), so that a restarted studio finds them."""
    with self._lock:
      if self._tempdir is not None:
        self._max_spilled = 0  # a request still running must not make the folder again
        self._tempdir.cleanup()
        self._spilled.clear()
        return
      for session in list(self._sessions.values()):
        if session.established and not session.users:
          del self._sessions[session.id]
          self._spill(session)

  def __len__(self) -> int:
    with self._lock:
      return len(self._sessions)

  def __contains__(self, session_id: str) -> bool:
    """Whether the session is in memory (not spilled)."""
    with self._lock:
      return session_id in self._sessions

  # ---------------------------------------------------------------------------- room (own lock)

  def _make_room(self, newcomer: Session) -> None:
    while len(self._sessions) > self._max:
      victim = self._victim(newcomer)
      if victim is None:
        return  # every other session is in a request: over the limit until one is added again
      del self._sessions[victim.id]
      if victim.established:
        self._spill(victim)

  def _victim(self, newcomer: Session) -> Session | None:
    idle = [s for s in self._sessions.values() if s is not newcomer and not s.users]  # LRU first
    for session in idle:
      if not session.established:
        return session
    now = self._clock()
    for session in idle:
      if now - session.last_used > self._active_seconds:
        return session
    if not newcomer.established:
      return newcomer
    return idle[0] if idle else None

  def _spill(self, session: Session) -> None:
    if not self._max_spilled:
      return
    name = _spill_name(session.id)
    text = json.dumps(session.to_dict())
    try:
      files.atomic_write(os.path.join(self.spill_dir, name), lambda f: f.write(text), mode='w')
    except OSError as e:
      log.warning('studio: cannot spill a session to %s (%s); it is dropped', self.spill_dir, e)
      return
    self._spilled[name] = None
    self._spilled.move_to_end(name)
    self._trim_spilled()

  def _trim_spilled(self) -> None:
    while len(self._spilled) > self._max_spilled:
      name, _ = self._spilled.popitem(last=False)
      _remove(os.path.join(self.spill_dir, name))

  def _restore(self, session_id: str) -> Session | None:
    name = _spill_name(session_id)
    if name not in self._spilled:
      return None
    del self._spilled[name]
    path = os.path.join(self.spill_dir, name)
    try:
      with open(path) as f:
        session = Session.from_dict(session_id, json.load(f))
    except (OSError, ValueError, KeyError, TypeError, UserError) as e:
      log.warning('studio: cannot restore a spilled session from %s (%s); it is dropped', path, e)
      session = None
    _remove(path)  # the session in memory is the one that counts now
    return session


def _spill_name(session_id: str) -> str:
  return hashlib.sha256(session_id.encode()).hexdigest() + '.json'


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except OSError:
    pass
