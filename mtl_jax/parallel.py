"""Device mesh, batch sharding and multi-host start-up.

Data parallelism is ``jax.jit`` over a ``Mesh`` with one axis, ``data``: the
batch is sharded on it, parameters and optimizer state are replicated. The
step is written for the global batch, so masked means are taken over the
global batch and N devices compute the same update as one.
"""

import os
from typing import Optional

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MODEL_AXIS = "model"


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
  """Starts multi-host JAX when asked by arguments or by the environment.

  Arguments win; otherwise ``MTL_JAX_COORDINATOR``, ``MTL_JAX_NUM_PROCESSES``
  and ``MTL_JAX_PROCESS_ID`` are read. On TPU pods and SLURM,
  ``jax.distributed.initialize()`` with no arguments discovers everything:
  set ``MTL_JAX_DISTRIBUTED=auto`` for that. Does nothing when none is set.
  """
  coordinator_address = coordinator_address or os.environ.get("MTL_JAX_COORDINATOR")
  if num_processes is None and "MTL_JAX_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["MTL_JAX_NUM_PROCESSES"])
  if process_id is None and "MTL_JAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["MTL_JAX_PROCESS_ID"])
  if coordinator_address:
    if "cpu" in (jax.config.jax_platforms or "cpu"):  # not default_backend(): it starts XLA
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif os.environ.get("MTL_JAX_DISTRIBUTED") == "auto":
    jax.distributed.initialize()
  else:
    return
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def make_mesh(num_devices: Optional[int] = None, model: int = 1) -> Mesh:
  """A ``(data, model)`` mesh over the first ``num_devices`` devices (all by default).

  ``model`` devices per model-parallel group (parameters split by
  ``mtl_jax.sharding`` rules); ``data`` takes the rest. The batch is sharded
  on ``data`` only.
  """
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ValueError(f"num_devices={num_devices} but only {len(devices)} devices exist")
    if jax.process_count() > 1 and num_devices != len(devices):
      raise ValueError("num_devices must use every device in a multi-host run")
    devices = devices[:num_devices]
  if model < 1 or len(devices) % model:
    raise ValueError(f"config.mesh.model={model} does not divide the {len(devices)} devices; "
                     f"the mesh is (data, model) = ({len(devices)} / model, model)")
  return Mesh(np.asarray(devices).reshape(len(devices) // model, model), (DATA_AXIS, MODEL_AXIS))


def data_size(mesh: Mesh) -> int:
  """Devices the batch is split over."""
  return mesh.shape[DATA_AXIS]


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  if global_batch_size % data_size(mesh):
    raise ValueError(f"{what}={global_batch_size} is not divisible by the {data_size(mesh)} "
                     f"devices of the mesh's data axis")


def shard_batch(local_batch, mesh: Mesh, sharding: Optional[NamedSharding] = None):
  """Assembles each process's slice of the batch into global arrays sharded on ``data``."""
  sharding = sharding or data_sharding(mesh)
  if jax.process_count() == 1:  # one transfer for the whole tree: ~2x faster per step
    return jax.device_put(local_batch, sharding)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)


def fetch(tree):
  """Brings a (possibly multi-host sharded) pytree to host NumPy, whole, on every process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)
