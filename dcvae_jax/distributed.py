"""Multi-host plumbing: one code path for 1 CPU, one multi-GPU host, and a pod of many hosts.

* ``maybe_initialize()`` calls ``jax.distributed.initialize()`` when the launcher asks for it:
  ``DCVAE_DISTRIBUTED=1`` (TPU pods need no arguments) or ``JAX_COORDINATOR_ADDRESS`` set, with
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (launch/slurm_gpu.sbatch sets all three). On CPU it switches the
  cross-process collectives to gloo.
* Every input of a compiled call is a global ``jax.Array`` built from process-local data: replicated arrays
  from the full value every process holds; the batch from each process's own slice of it (its devices' part
  of the global batch, by ``jax.process_index()``).
* Files (results, metrics, scores, the workdir lock) are written by process 0 only; Orbax checkpoints are
  written by all processes together (the workdir must be on a shared file system).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding


def requested() -> bool:
  return os.environ.get("DCVAE_DISTRIBUTED", "") == "1" or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))


def maybe_initialize() -> bool:
  """Start the multi-process runtime if the environment asks for it. Returns whether it did."""
  if not requested():
    return False
  address = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num = os.environ.get("JAX_NUM_PROCESSES")
  pid = os.environ.get("JAX_PROCESS_ID")
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms == "cpu" or os.environ.get("DCVAE_CPU_COLLECTIVES"):
    jax.config.update("jax_cpu_collectives_implementation", os.environ.get("DCVAE_CPU_COLLECTIVES", "gloo"))
  jax.distributed.initialize(
    coordinator_address=address, num_processes=int(num) if num else None, process_id=int(pid) if pid else None
  )
  return True


def is_primary() -> bool:
  return jax.process_index() == 0


def replicated(tree, sharding: NamedSharding):
  """A pytree of host values (the same on every process) -> global arrays replicated over the mesh."""

  def put(a):
    a = np.asarray(a)
    if jax.process_count() == 1:
      return jax.device_put(a, sharding)
    return jax.make_array_from_process_local_data(sharding, a, a.shape)

  return jax.tree.map(put, tree)


def batch_sharded(x: np.ndarray, sharding: NamedSharding, axis: int):
  """The full (host) batch -> a global array sharded along ``axis``; each process passes only its slice."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  n, p = x.shape[axis], jax.process_count()
  if n % p:
    raise ValueError(f"batch axis of size {n} does not split over {p} processes")
  per = n // p
  local = np.take(x, np.arange(jax.process_index() * per, (jax.process_index() + 1) * per), axis=axis)
  return jax.make_array_from_process_local_data(sharding, local, x.shape)


def to_host(tree):
  """Fully replicated global arrays -> numpy (works on every process)."""

  def get(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return np.asarray(a.addressable_data(0))
    return np.asarray(a)

  return jax.tree.map(get, tree)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named "data" over ``devices`` (default: every device of every process)."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices, ("data",))
