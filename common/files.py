"""Atomic file output: a reader never sees a half-written file, and a failed write keeps the old one."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path next to `path`; moves it over `path` only if the block succeeds.

  Not tempfile.mkstemp: its files are private (0600), while outputs should get the usual
  permissions from the umask.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp_path = os.path.join(directory, f'.tmp-{uuid.uuid4().hex}-{os.path.basename(path)}')
  try:
    yield tmp_path
    os.replace(tmp_path, path)
  finally:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)


def atomic_write(path: str, write: Callable[[Any], None], mode: str = 'wb') -> None:
  """Calls write(file) on a temporary file opened with `mode`, then renames it over `path`."""
  with atomic_path(path) as tmp, open(tmp, mode) as f:
    write(f)
