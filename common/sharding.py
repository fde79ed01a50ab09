"""Device mesh, data-parallel shardings and multi-host start-up.

Data parallelism is plain `jax.jit` over a 1-D Mesh whose only axis is 'data': the batch is split
along its leading dimension, parameters and optimizer state are replicated. XLA inserts the
gradient all-reduce. On one CPU this is a mesh of one device and costs nothing.
"""

from __future__ import annotations

from typing import Any

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def maybe_initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                                 process_id: int | None) -> None:
  """Joins a multi-host job when a coordinator is given; a no-op for single-process runs."""
  if not coordinator_address:
    return
  # CPU processes exchange gradients through gloo (a no-op setting for GPU and TPU clients); it
  # must be chosen before the CPU client exists.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (all by default), axis 'data'."""
  devices = jax.devices()
  if num_devices is not None:
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f'num_devices={num_devices} but {len(devices)} devices are visible')
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding for parameters, optimizer state and scalars: a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding for batches: leading (batch) dimension split over the 'data' axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Fails early, with the numbers, when the global batch cannot be split evenly."""
  num_devices = mesh.devices.size
  if batch_size % num_devices or batch_size % jax.process_count():
    raise ValueError(f'batch_size={batch_size} must be divisible by the number of devices '
                     f'({num_devices}) and of processes ({jax.process_count()})')


def global_batch(local_batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's share of a batch into global arrays sharded on 'data'."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
