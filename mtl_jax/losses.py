"""Masked per-task losses (jax.numpy), used inside the jitted train step.

Each loss is a masked mean over the labelled examples of the batch. A task
with no labelled example contributes exactly 0 (not NaN), and placeholder
values under mask=False (NaN targets, -1 classes) never reach a gradient.
Losses are computed per TaskGroup on stacked [tasks, batch, outputs] arrays,
so the traced program does not grow with the number of tasks.
"""

from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import optax

from mtl_jax.tasks import TaskGroup, TaskSpec


def per_example_loss(kind: str, outputs: jax.Array, labels: jax.Array) -> jax.Array:
  """Loss per example: outputs [..., num_outputs], labels [...] or [..., n] -> [...]."""
  if kind == "binary":
    return optax.sigmoid_binary_cross_entropy(outputs[..., 0], labels.astype(outputs.dtype))
  if kind == "multiclass":
    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels.astype(jnp.int32))
  if kind == "multilabel":
    return optax.sigmoid_binary_cross_entropy(outputs, labels.astype(outputs.dtype)).mean(-1)
  if kind == "regression":
    target = labels.astype(outputs.dtype).reshape(outputs.shape)
    return jnp.square(outputs - target).mean(-1)
  raise ValueError(f"unknown task kind {kind!r}")


def safe_labels(labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Replaces placeholders under mask=False by 0 so they cannot make NaN gradients."""
  m = mask.reshape(mask.shape + (1,) * (labels.ndim - mask.ndim))
  return jnp.where(m, labels, jnp.zeros_like(labels))


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over the last axis of the mask=True entries; exactly 0 where none is."""
  total = jnp.sum(jnp.where(mask, values, 0.0), axis=-1)
  count = jnp.sum(mask.astype(values.dtype), axis=-1)
  return total / jnp.maximum(count, 1.0)


def task_loss(spec: TaskSpec, outputs: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Masked mean loss of one task (a scalar); outputs [batch, num_outputs]."""
  return masked_mean(per_example_loss(spec.kind, outputs, safe_labels(labels, mask)), mask)


def group_losses(group: TaskGroup, outputs: jax.Array, labels: Dict[str, jax.Array],
                 mask: Dict[str, jax.Array]) -> jax.Array:
  """Losses of a group's tasks, shape [len(group.names)]; outputs [T, batch, n]."""
  lab = jnp.stack([labels[n] for n in group.names])
  msk = jnp.stack([mask[n] for n in group.names])
  return masked_mean(per_example_loss(group.kind, outputs, safe_labels(lab, msk)), msk)


def task_losses(specs: Sequence[TaskSpec], groups: Sequence[TaskGroup],
                outputs: Dict[str, jax.Array], labels: Dict[str, jax.Array],
                mask: Dict[str, jax.Array]) -> jax.Array:
  """Per-task losses in ``specs`` order, shape [num_tasks].

  ``outputs`` maps each group key to its stacked [T_g, batch, n] outputs.
  """
  per_group = [group_losses(g, outputs[g.key], labels, mask) for g in groups]
  flat = jnp.concatenate(per_group)
  flat_names = [n for g in groups for n in g.names]
  order = [flat_names.index(s.name) for s in specs]
  if order == list(range(len(order))):
    return flat
  return flat[jnp.asarray(order)]
