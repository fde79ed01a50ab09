"""Importing `common` tunes XLA:CPU unless the user chose the setting."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGION = '--xla_cpu_copy_insertion_use_region_analysis=true'
YNN = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def _flags_after_import(xla_flags: str | None) -> str:
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  code = 'import os, common; print(os.environ["XLA_FLAGS"])'
  return subprocess.run([sys.executable, '-c', code], env=env, check=True, capture_output=True,
                        text=True).stdout.strip()


def test_import_adds_the_cpu_flags_and_keeps_other_flags():
  assert _flags_after_import(None).split() == [REGION, YNN]
  flags = _flags_after_import('--xla_force_host_platform_device_count=8')
  assert flags.split() == ['--xla_force_host_platform_device_count=8', REGION, YNN]


def test_users_own_choice_is_left_alone():
  mine = '--xla_cpu_experimental_ynn_fusion_type=dot'
  assert _flags_after_import(mine).split() == [mine, REGION]


def test_loop_carried_buffer_is_updated_in_place():
  """A scan that writes one slot of a big carried buffer per step must not copy the buffer
  inside the loop (the region-analysis flag's effect, checked on the compiled HLO)."""
  code = '''
import re, common, jax, jax.numpy as jnp
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
