"""Routed heads: each example through its own task's head only (``model.route_heads``).

In the masked format every head runs on every example, and the mask drops
all but the labelled ones. With one labelled task per example (School-like
data, or one dataset per task) that is T - 1 wasted heads per example:
at 139 tasks the heads cost more than the trunk. With ``route_heads=True``
the train step gathers each example's own head (``StackedDense`` with a
route) and scatters the per-example losses back to per-task masked means
with a [T, B] one-hot product, so the per-task losses, hence every
weighting method, are the masked format's. Evaluation keeps the masked
format (every head's predictions, for the metrics).

Requires at most one labelled task per example within each task group
(checked on every train split, naming the example) and per-example kinds
(no token or ranking kinds).
"""

from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import kinds
from mtl_jax.kinds.base import safe_labels
from mtl_jax.losses import _in_spec_order
from mtl_jax.tasks import TaskGroup, TaskSpec

ROUTES = "routes"  # the variable collection that carries {group key: [B] task index}


def check_groups(groups: Sequence[TaskGroup]) -> None:
  """Routing gathers one head output per example: positional kinds have one per position."""
  for g in groups:
    if kinds.get(g.kind).output_axes:
      raise ValueError(f"model.route_heads: tasks {list(g.names)} are of kind {g.kind!r}, whose "
                       "outputs have a position axis; routing supports per-example kinds only")


def check_one_labelled_task(groups: Sequence[TaskGroup], mask: Dict[str, np.ndarray],
                            where: str, offset: int = 0) -> None:
  """Raises if an example is labelled for two tasks of one group (routing would drop one)."""
  for g in groups:
    m = np.stack([np.asarray(mask[n]) for n in g.names]).reshape(len(g.names), -1)
    both = np.flatnonzero(m.sum(0) > 1)
    if both.size:
      i = int(both[0])
      labelled = [n for n, row in zip(g.names, m[:, i]) if row]
      raise ValueError(f"model.route_heads: {where} example {offset + i} is labelled for "
                       f"{labelled} (one task group, kind {g.kind!r}); routing runs one head per "
                       f"example, so each example may label at most one task per group "
                       f"({both.size} such examples in this chunk). Use the masked format "
                       "(route_heads=False) for multi-labelled examples")


def route_indices(groups: Sequence[TaskGroup], mask: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
  """{group key: [B] int32}: the group's labelled task of each example (0 where none is)."""
  return {g.key: jnp.argmax(jnp.stack([mask[n] for n in g.names]), axis=0).astype(jnp.int32)
          for g in groups}


def routed_task_losses(specs: Sequence[TaskSpec], groups: Sequence[TaskGroup],
                       outputs: Dict[str, jax.Array], labels: Dict[str, jax.Array],
                       mask: Dict[str, jax.Array], routes: Dict[str, jax.Array]) -> jax.Array:
  """Per-task masked mean losses [num_tasks] from routed outputs {group key: [B, n]}.

  Equal to ``losses.task_losses`` on the masked outputs when every example
  labels at most one task per group.
  """
  per_group = []
  for g in groups:
    idx = routes[g.key]
    t = len(g.names)
    lab = jnp.stack([labels[n] for n in g.names])
    msk = jnp.stack([mask[n] for n in g.names])
    own_lab = jnp.take_along_axis(lab, idx.reshape((1, -1) + (1,) * (lab.ndim - 2)), 0)[0]
    own_mask = jnp.any(msk, axis=0)
    per = kinds.get(g.kind).per_example_loss(outputs[g.key], safe_labels(own_lab, own_mask),
                                             own_mask)
    onehot = ((idx[None, :] == jnp.arange(t)[:, None]) & own_mask[None, :]).astype(per.dtype)
    total = jnp.matmul(onehot, jnp.where(own_mask, per, 0.0),
                       precision=jax.lax.Precision.HIGHEST)
    count = jnp.sum(onehot, axis=-1)
    per_group.append(total / jnp.maximum(count, 1.0))
  return _in_spec_order(specs, groups, jnp.concatenate(per_group))
