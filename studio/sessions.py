"""Sessions: each browser's state on the server, and a store that bounds how many are kept.

A session is a random 32-character id in an HttpOnly, SameSite=Strict cookie (COOKIE) naming a
Session that holds its own Evolution, its outputs (by opaque random ids) and a lock. Tabs of one
browser share the cookie, so every request that changes the population names the generation it
was made from (the routes answer 409 when it is stale). At most `max_sessions` live at once (the
least recently used is dropped).

Locks: the store's lock guards the dict of sessions; a session's lock guards its state for the
whole request.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import secrets
import threading
from typing import Any

import numpy as np

from musicvae import evolve
from studio import engine

COOKIE = 'studio_session'
MAX_HARMONIZATIONS = 64  # per session; older ones expire
CACHE_BYTES = 64 << 20  # rendered bytes kept per session
_SESSION_ID = re.compile(r'[A-Za-z0-9_-]{32}')


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
