"""Parameter sharding over a 2-D ``(data, model)`` mesh: ordered (regex, PartitionSpec) rules.

``config.sharding`` is ``"replicated"`` (default), ``"fsdp"``,
``"tensor_parallel"`` or a list of ``(regex, spec)`` rules, where ``spec`` is
a tuple with one entry per dimension (a mesh axis name, a tuple of names, or
None). Rules match full ``/``-joined parameter paths like the parameter
groups: the first match wins and every parameter must be matched.

* ``fsdp``: every parameter (and so its optimizer state) is split over
  ``data`` on its largest dimension that the axis divides; the rest stay
  replicated. XLA gathers them for the forward pass (ZeRO-3 / FSDP).
* ``tensor_parallel``: Dense and stacked-head kernels are split over
  ``model`` on their output dimension (their biases with them); the rest are
  replicated. Stacked per-task tensors ([T, ...]) may be split over tasks
  with a rule such as ``("heads/.*", ("model", None, None))``.

The mesh is ``config.mesh = dict(model=M)`` (``data`` takes the remaining
devices). Checkpoints store whole arrays, so a run resumes onto another mesh
or sharding (orbax restores onto the current state's shardings).
"""

import re
from typing import Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mtl_jax import paths
from mtl_jax.parallel import DATA_AXIS, MODEL_AXIS

PRESETS = ("replicated", "fsdp", "tensor_parallel")


def _axis_size(mesh: Mesh, entry) -> int:
  names = entry if isinstance(entry, tuple) else (entry,)
  return int(np.prod([mesh.shape[n] for n in names if n is not None]))


def fsdp_spec(shape: Tuple[int, ...], mesh: Mesh) -> Tuple:
  """Split the largest dimension that ``data`` divides; replicate if none does."""
  n = mesh.shape[DATA_AXIS]
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if n > 1 and shape[d] % n == 0 and shape[d] >= n:
      return tuple(DATA_AXIS if i == d else None for i in range(len(shape)))
  return (None,) * len(shape)


def tensor_parallel_spec(path: str, shape: Tuple[int, ...], mesh: Mesh) -> Tuple:
  """Output dimension of kernels and their biases over ``model``, when it divides."""
  m = mesh.shape[MODEL_AXIS]
  last = path.rsplit("/", 1)[-1]
  if m > 1 and last in ("kernel", "bias") and shape and shape[-1] % m == 0:
    return (None,) * (len(shape) - 1) + (MODEL_AXIS,)
  return (None,) * len(shape)


def rules_for(config_sharding, params, mesh: Mesh):
  """[(path, spec)] for every parameter of ``params`` (one replica's shapes)."""
  flat = paths.flatten(params)
  if config_sharding in (None, "replicated"):
    return [(p, (None,) * len(x.shape)) for p, x in flat.items()]
  if config_sharding == "fsdp":
    return [(p, fsdp_spec(tuple(x.shape), mesh)) for p, x in flat.items()]
  if config_sharding == "tensor_parallel":
    return [(p, tensor_parallel_spec(p, tuple(x.shape), mesh)) for p, x in flat.items()]
  if isinstance(config_sharding, str):
    raise ValueError(f"config.sharding={config_sharding!r} is not a preset; valid: "
                     f"{list(PRESETS)} or a list of (regex, spec) rules")
  compiled = []
  for rule in config_sharding:
    if len(rule) != 2:
      raise ValueError(f"sharding rule {rule!r} must be (regex, spec tuple)")
    compiled.append((re.compile(rule[0]), rule[0], tuple(rule[1])))
  out, unmatched, used = [], [], set()
  for p, x in flat.items():
    for regex, pattern, spec in compiled:
      if regex.fullmatch(p):
        out.append((p, spec))
        used.add(pattern)
        break
    else:
      unmatched.append(p)
  if unmatched:
    raise ValueError(f"sharding rules match no rule for parameters {unmatched[:6]}"
                     f"{' ...' if len(unmatched) > 6 else ''}; add a final ('.*', ()) to "
                     "replicate the rest")
  unused = [pattern for _, pattern, _ in compiled if pattern not in used]
  if unused:
    raise ValueError(f"sharding rules {unused} match no parameter; paths look like "
                     f"{list(flat)[:6]}")
  return out


def param_shardings(config_sharding, params, mesh: Mesh, replica_axis: bool = False):
  """A tree of NamedShardings for ``params``; checks every spec against shape and mesh.

  ``replica_axis``: the leaves carry a leading ``num_seeds`` axis (kept whole).
  """
  one = (jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), params)
         if replica_axis else params)
  flat = paths.flatten(one)
  out = {}
  for path, spec in rules_for(config_sharding, one, mesh):
    shape = tuple(flat[path].shape)
    spec = tuple(spec) + (None,) * (len(shape) - len(spec)) if len(spec) <= len(shape) else spec
    if len(spec) != len(shape):
      raise ValueError(f"sharding of {path!r}: spec {spec} has {len(spec)} entries for a "
                       f"parameter of shape {shape}")
    for dim, entry in zip(shape, spec):
      names = entry if isinstance(entry, tuple) else (entry,)
      bad = [n for n in names if n is not None and n not in mesh.shape]
      if bad:
        raise ValueError(f"sharding of {path!r}: mesh axes {bad} are not in the mesh "
                         f"{dict(mesh.shape)}")
      if entry is not None and dim % _axis_size(mesh, entry):
        raise ValueError(f"sharding of {path!r}: dimension {dim} of shape {shape} is not "
                         f"divisible by mesh axis {entry!r} of size {_axis_size(mesh, entry)} "
                         f"(mesh {dict(mesh.shape)})")
    out[path] = NamedSharding(mesh, P(*(((None,) if replica_axis else ()) + spec)))
  return paths.unflatten(out)


def opt_state_shardings(opt_state_shapes, params_shardings, params_shapes, mesh: Mesh):
  """Optimizer-state leaves that mirror a parameter (Adam's mu/nu: same path suffix and shape)
  take its sharding; the rest (counts, masked-out frozen groups) are replicated."""
  rep = NamedSharding(mesh, P())
  shard = paths.flatten(params_shardings)
  shape = {k: tuple(v.shape) for k, v in paths.flatten(params_shapes).items()}

  def one(path, leaf):
    keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    for start in range(len(keys)):
      candidate = "/".join(keys[start:])
      if candidate in shard and shape[candidate] == tuple(leaf.shape):
        return shard[candidate]
    return rep

  return jax.tree_util.tree_map_with_path(one, opt_state_shapes)


def state_shardings(state, mesh: Mesh):
  """The shardings the state's arrays have (for jit in/out shardings); scalars replicated."""
  return jax.tree.map(lambda x: x.sharding if isinstance(x, jax.Array) else
                      NamedSharding(mesh, P()), state)


def per_device_bytes(tree) -> int:
  """Bytes of ``tree`` held by the first device (what sharding saves per device)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shards = [s for s in x.addressable_shards if s.device == jax.devices()[0]]
    total += sum(s.data.nbytes for s in shards)
  return total


