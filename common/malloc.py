"""Keeps freed memory in the process while its working set is small (glibc malloc on Linux).

XLA:CPU allocates every execution's temporary buffers afresh. glibc serves allocations above
32 MiB with mmap and unmaps them on free, so every step would page-fault its whole working set in
again (hundreds of MB per Coconet train step). With no mmap-ed chunks and no trimming, freed
memory is reused instead. That holds for the memory of glibc's main arena, i.e. of the thread that
started the process, which is why `common.runtime.configure_process` also makes jax run CPU
computations on the calling thread. (One arena for all threads would avoid the faults too, but its
shared lock slows down loop-heavy sampling.)

The cost is memory: the heap keeps its peak, and freed holes that small allocations split cannot
hold the next huge buffer, so a process with a working set of many GiB grows well past its usual
peak. A guard thread therefore watches the resident size; once it passes a third of the machine's
(or the cgroup's) memory, glibc's defaults come back and the free memory is returned. Small and
medium jobs, where the page faults cost the most, keep the speed; huge ones keep their memory.

A process that runs one model after another (the benchmark suite) calls release_free_memory() in
between, so that each starts as in a fresh process.

Nothing here runs at import: common.runtime.configure_process() calls keep_freed_memory().
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

# mallopt parameters (<malloc.h>, mallopt(3)).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_NO_TRIMMING = -1  # mallopt(3): -1 disables trimming altogether
# What the guard restores: glibc's default mmap count, and the thresholds where its dynamic
# adjustment ends up once buffers of 32 MiB and more have been freed (any mallopt call turns that
# adjustment off; left at the initial 128 KiB every medium buffer would be mmap-ed and faulted
# in again).
_DEFAULT_MMAP_MAX = 65536
_STEADY_MMAP_THRESHOLD = 32 * 1024 * 1024
_STEADY_TRIM_THRESHOLD = 2 * _STEADY_MMAP_THRESHOLD

RSS_LIMIT_FRACTION = 1 / 3
_POLL_SECONDS = 0.5

_state = {'libc': None, 'tuned': False, 'guard_limit': None}
_lock = threading.Lock()


def _glibc():
  if not sys.platform.startswith('linux'):
    return None
  try:
    libc = ctypes.CDLL('libc.so.6')
    libc.mallopt, libc.malloc_trim  # pylint: disable=pointless-statement
    return libc
  except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
    return None


def memory_limit_bytes() -> int | None:
  """Physical memory, or the cgroup's limit when lower; None when neither can be read."""
  limits = []
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemTotal:'):
          limits.append(int(line.split()[1]) * 1024)
  except OSError:
    pass
  for path in ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'):
    try:
      with open(path) as f:
        text = f.read().strip()
      if text.isdigit():
        limits.append(int(text))
    except OSError:
      pass
  return min(limits) if limits else None


def resident_bytes() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def is_tuned() -> bool:
  return _state['tuned']


def keep_freed_memory(*, guard: bool = True) -> bool:
  """Makes glibc's malloc reuse freed memory (see the module docstring); True when it did.

  With `guard`, a daemon thread restores the defaults once the process's resident size
  passes RSS_LIMIT_FRACTION of memory_limit_bytes()."""
  libc = _glibc()
  if libc is None:
    return False
  with _lock:
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIMMING)
    _state.update(libc=libc, tuned=True)
  limit = memory_limit_bytes()
  if guard and limit:
    _state['guard_limit'] = int(limit * RSS_LIMIT_FRACTION)
    _start_guard()
    # A forked child (a data-loader worker) inherits the tuning but not the thread.
    os.register_at_fork(after_in_child=_restart_guard_in_child)
  return True


def _restart_guard_in_child() -> None:
  global _lock
  _lock = threading.Lock()  # the parent's guard may have held it at the fork
  _start_guard()


def _start_guard() -> None:
  if _state['tuned'] and _state['guard_limit']:
    threading.Thread(target=_watch, args=(_state['guard_limit'],), daemon=True,
                     name='malloc-guard').start()


def restore_defaults_if_above(limit_bytes: int) -> bool:
  """Restores glibc's mmap and trimming defaults and returns free memory to the system when the
  resident size exceeds limit_bytes; True when it did (then or earlier)."""
  with _lock:
    if not _state['tuned']:
      return True
    if resident_bytes() <= limit_bytes:
      return False
    libc = _state['libc']
    libc.mallopt(_M_MMAP_THRESHOLD, _STEADY_MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, _STEADY_TRIM_THRESHOLD)
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.malloc_trim(0)
    _state['tuned'] = False
    return True


def release_free_memory() -> None:
  """Returns the memory freed so far to the system (glibc's malloc_trim), so that what runs
  next starts as in a fresh process; the tuning stays on. A no-op when it is off."""
  with _lock:
    if _state['tuned']:
      _state['libc'].malloc_trim(0)


def _watch(limit_bytes: int) -> None:
  while not restore_defaults_if_above(limit_bytes):
    time.sleep(_POLL_SECONDS)
