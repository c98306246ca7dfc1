"""Masked per-task losses (jax.numpy), used inside the jitted train step.

Each loss is a masked mean over the labelled examples (tokens, queries) of
the batch. A task with no labelled example contributes exactly 0 (not NaN),
and placeholder values under mask=False (NaN targets, -1 classes) never reach
a gradient. Losses are computed per TaskGroup on stacked [tasks, batch, ...]
arrays, so the traced program does not grow with the number of tasks. The
loss itself belongs to the task's kind (``mtl_jax/kinds/``).
"""

from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp

from mtl_jax import kinds
from mtl_jax.kinds.base import masked_mean, safe_labels  # noqa: F401  (public helpers)
from mtl_jax.tasks import TaskGroup, TaskSpec


def per_example_loss(kind: str, outputs: jax.Array, labels: jax.Array,
                     mask: Optional[jax.Array] = None) -> jax.Array:
  """Loss per example (per token for token kinds), unreduced.

  outputs [..., num_outputs], labels [...] or [..., n] -> [...]. ``mask`` is
  only read by kinds that need it to define the loss (ranking: which
  candidates exist); None means every candidate does.
  """
  return kinds.get(kind).per_example_loss(outputs, labels, mask)


def task_loss(spec: TaskSpec, outputs: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked mean loss of one task (a scalar); outputs [batch, ..., num_outputs]."""
  return spec.task_kind.loss(outputs, labels, mask)


def group_losses(group: TaskGroup, outputs: jax.Array, labels: Dict[str, jax.Array],
                 mask: Dict[str, jax.Array]) -> jax.Array:
  """Losses of a group's tasks, shape [len(group.names)]; outputs [T, batch, ..., n]."""
  lab = jnp.stack([labels[n] for n in group.names])
  msk = jnp.stack([mask[n] for n in group.names])
  return kinds.get(group.kind).loss(outputs, lab, msk)


def task_loss_counts(specs: Sequence[TaskSpec], groups: Sequence[TaskGroup],
                     labels: Dict[str, jax.Array], mask: Dict[str, jax.Array]) -> jax.Array:
  """[num_tasks] denominators of the masked means (labelled examples, tokens or queries)."""
  per_group = []
  for g in groups:
    lab = jnp.stack([labels[n] for n in g.names])
    msk = jnp.stack([mask[n] for n in g.names])
    per_group.append(kinds.get(g.kind).loss_count(lab, msk))
  return _in_spec_order(specs, groups, jnp.concatenate(per_group))


def _in_spec_order(specs, groups, flat):
  flat_names = [n for g in groups for n in g.names]
  order = [flat_names.index(s.name) for s in specs]
  if order == list(range(len(order))):
    return flat
  return flat[jnp.asarray(order)]


def task_losses(specs: Sequence[TaskSpec], groups: Sequence[TaskGroup],
                outputs: Dict[str, jax.Array], labels: Dict[str, jax.Array],
                mask: Dict[str, jax.Array]) -> jax.Array:
  """Per-task losses in ``specs`` order, shape [num_tasks].

  ``outputs`` maps each group key to its stacked [T_g, batch, ..., n] outputs.
  """
  per_group = [group_losses(g, outputs[g.key], labels, mask) for g in groups]
  return _in_spec_order(specs, groups, jnp.concatenate(per_group))
