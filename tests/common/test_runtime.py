"""common.runtime.configure_process: the XLA:CPU flags (unless the user chose the setting), the
malloc tuning and inline dispatch; MUSICGEN_PROCESS_TUNING=0 turns it off."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGION = '--xla_cpu_copy_insertion_use_region_analysis=true'
YNN = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def _print_after_import(code: str, **env_vars: str | None) -> str:
  """stdout of `code` in a fresh interpreter; env_vars set (None: removed) in its environment."""
  env = dict(os.environ, PYTHONPATH=REPO)
  for name, value in env_vars.items():
    env.pop(name, None)
    if value is not None:
      env[name] = value
  return subprocess.run([sys.executable, '-c', code], env=env, check=True, capture_output=True,
                        text=True).stdout.strip()


_CONFIGURE = 'from common import runtime; runtime.configure_process(); '


def _flags_after_import(xla_flags: str | None, tuning: str | None = None) -> str:
  return _print_after_import(_CONFIGURE + 'import os; print(os.environ.get("XLA_FLAGS"))',
                             XLA_FLAGS=xla_flags, MUSICGEN_PROCESS_TUNING=tuning)


def test_import_adds_the_cpu_flags_and_keeps_other_flags():
  assert _flags_after_import(None).split() == [REGION, YNN]
  flags = _flags_after_import('--xla_force_host_platform_device_count=8')
  assert flags.split() == ['--xla_force_host_platform_device_count=8', REGION, YNN]


def test_users_own_choice_is_left_alone():
  mine = '--xla_cpu_experimental_ynn_fusion_type=dot'
  assert _flags_after_import(mine).split() == [mine, REGION]


def test_the_switch_turns_it_all_off():
  assert _flags_after_import(None, tuning='0') == 'None'
  assert _flags_after_import('--xla_cpu_x=1', tuning='0') == '--xla_cpu_x=1'


def test_importing_common_alone_changes_nothing():
  assert _print_after_import('import os, common; print(os.environ.get("XLA_FLAGS"))',
                             XLA_FLAGS=None) == 'None'



def test_loop_carried_buffer_is_updated_in_place():
  """A scan that writes one slot of a big carried buffer per step must not copy the buffer
  inside the loop (the region-analysis flag's effect, checked on the compiled HLO)."""
  code = '''
from common import runtime
runtime.configure_process()
import re, jax, jax.numpy as jnp
def body(q, i):
  return jax.lax.dynamic_update_index_in_dim(q, q[(i + 1) % 64] + 1.0, i % 64, 0), None
f = jax.jit(lambda q: jax.lax.scan(body, q, jnp.arange(10))[0])
text = f.lower(jnp.zeros((64, 32, 16))).compile().as_text()
print(len(re.findall(r"f32\\[64,32,16\\]\\S* copy\\(", text)))
'''
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  out = subprocess.run([sys.executable, '-c', code], env=env, check=True, capture_output=True,
                       text=True).stdout.strip()
  assert int(out) <= 1  # at most the one copy of the input before the loop



_FAULTS_OF_A_FRESH_OUTPUT = '''
import resource, sys
from common import malloc, runtime
runtime.configure_process()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0 + 1.0)
x = jnp.ones((16, 1024, 1024))  # 64 MiB: above glibc's largest mmap threshold (32 MiB)
for _ in range(12):  # compiles; the heap settles into holes that fit the output
  f(x).block_until_ready()
if sys.argv[1] == 'trip':
  assert malloc.restore_defaults_if_above(0)
# Measured on a size no free hole of the heap can hold: a hole that the trim left and a call then
# filled and freed again keeps its pages, so same-size calls would not all fault (CI saw 1 in 3).
y = jnp.ones((64, 1024, 1024))
for _ in range(8):  # a tuned heap takes 3-4 calls of this size to settle
  f(y).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  f(y).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3, malloc.is_tuned())
'''
_PAGES_OF_THE_OUTPUT = 64 * 1024 * 1024 * 4 // 4096


def _page_faults_per_call(tuning: str, action: str = '') -> tuple[int, str]:
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', MUSICGEN_PROCESS_TUNING=tuning)
  out = subprocess.run([sys.executable, '-c', _FAULTS_OF_A_FRESH_OUTPUT, action], env=env,
                       check=True, capture_output=True, text=True).stdout.split()
  return int(out[0]), out[1]


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='tunes glibc malloc on Linux')
def test_freed_memory_is_reused_without_page_faults():
  """A call whose fresh 256 MiB output was freed before does not fault its pages in again; glibc's
  defaults (tuning off) unmap freed memory, so each call faults in all 65,536 pages."""
  faults, tuned = _page_faults_per_call('1')
  assert tuned == 'True' and faults < _PAGES_OF_THE_OUTPUT // 10
  faults, tuned = _page_faults_per_call('0')
  assert tuned == 'False' and faults > _PAGES_OF_THE_OUTPUT // 2


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='tunes glibc malloc on Linux')
def test_guard_restores_the_defaults_above_the_memory_limit():
  """Past the resident-size limit the guard gives glibc its defaults back (so a huge job keeps
  its usual peak): freed memory is unmapped again and each call faults its output in."""
  faults, tuned = _page_faults_per_call('1', 'trip')
  assert tuned == 'False' and faults > _PAGES_OF_THE_OUTPUT // 2


def _async_dispatch_after_import(env_value: str | None, tuning: str = '1') -> str:
  return _print_after_import(
      _CONFIGURE + 'import jax; print(jax.config.read("jax_cpu_enable_async_dispatch"))',
      JAX_PLATFORMS='cpu', MUSICGEN_PROCESS_TUNING=tuning, JAX_CPU_ENABLE_ASYNC_DISPATCH=env_value)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='tunes glibc malloc on Linux')
def test_cpu_computations_run_inline_unless_the_user_chose():
  """With the malloc tuning on, computations run on the calling thread (whose freed memory glibc
  keeps); the user's JAX_CPU_ENABLE_ASYNC_DISPATCH and MUSICGEN_PROCESS_TUNING=0 are respected."""
  assert _async_dispatch_after_import(None) == 'False'
  assert _async_dispatch_after_import('true') == 'True'
  assert _async_dispatch_after_import(None, tuning='0') == 'True'
