"""Masked losses (jax) against NumPy on random data, including all-masked tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses, metrics
from mtl_jax.tasks import TaskSpec, group_tasks

RNG = np.random.default_rng(0)
B = 64


def _random_task(kind, n):
  if kind == "binary":
    return RNG.normal(size=(B, 1)), RNG.integers(0, 2, B)
  if kind == "multiclass":
    return RNG.normal(size=(B, n)), RNG.integers(0, n, B)
  if kind == "multilabel":
    return RNG.normal(size=(B, n)), RNG.integers(0, 2, (B, n))
  return RNG.normal(size=(B, n)), RNG.normal(size=(B, n) if n > 1 else (B,))


def _numpy_reference(kind, o, y):
  """Straight from the definitions, independent of metrics.numpy_loss."""
  if kind == "binary":
    p = 1 / (1 + np.exp(-o[:, 0]))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))
  if kind == "multiclass":
    p = np.exp(o) / np.exp(o).sum(-1, keepdims=True)
    return -np.log(p[np.arange(len(y)), y])
  if kind == "multilabel":
    p = 1 / (1 + np.exp(-o))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(-1)
  return ((o - y.reshape(o.shape)) ** 2).mean(-1)


CASES = [("binary", 1), ("multiclass", 7), ("multilabel", 5), ("regression", 1), ("regression", 3)]


@pytest.mark.parametrize("kind,n", CASES)
@pytest.mark.parametrize("mask_rate", [0.0, 0.5, 1.0])
def test_task_loss_matches_numpy(kind, n, mask_rate):
  spec = TaskSpec("t", kind, n)
  o, y = _random_task(kind, n)
  mask = RNG.random(B) >= mask_rate
  got = losses.task_loss(spec, jnp.asarray(o, jnp.float32), jnp.asarray(y), jnp.asarray(mask))
  ref = _numpy_reference(kind, o, y)[mask].mean() if mask.any() else 0.0
  np.testing.assert_allclose(float(got), ref, rtol=1e-5, atol=1e-6)
  # The NumPy twin used by eval agrees too.
  if mask.any():
    np.testing.assert_allclose(metrics.numpy_loss(spec, o[mask], y[mask]).mean(), ref, rtol=1e-10)


def test_all_masked_task_is_exactly_zero_with_zero_gradient():
  spec = TaskSpec("t", "regression", 1)
  labels = jnp.full((B,), jnp.nan)  # placeholders under the mask must not leak
  mask = jnp.zeros((B,), bool)
  f = lambda o: losses.task_loss(spec, o, labels, mask)  # noqa: E731
  o = jnp.ones((B, 1))
  assert float(f(o)) == 0.0
  g = jax.grad(f)(o)
  assert np.all(np.asarray(g) == 0.0)


def test_nan_placeholders_under_mask_do_not_poison_gradients():
  spec = TaskSpec("t", "multiclass", 4)
  labels = jnp.asarray([0, -1, 3, -1])
  mask = jnp.asarray([True, False, True, False])
  o = jnp.asarray(RNG.normal(size=(4, 4)), jnp.float32)
  g = jax.grad(lambda o: losses.task_loss(spec, o, labels, mask))(o)
  assert np.all(np.isfinite(np.asarray(g)))
  assert np.all(np.asarray(g)[[1, 3]] == 0.0)


def test_grouped_losses_equal_per_task_losses_in_spec_order():
  specs = (TaskSpec("a", "binary"), TaskSpec("b", "multiclass", 3), TaskSpec("c", "binary"),
           TaskSpec("d", "regression", 2))
  groups = group_tasks(specs)
  assert [g.names for g in groups] == [("a", "c"), ("b",), ("d",)]
  outs, labels, mask = {}, {}, {}
  per_task_out = {}
  for s in specs:
    o, y = _random_task(s.kind, s.num_outputs)
    per_task_out[s.name] = o.astype(np.float32)
    labels[s.name] = y
    mask[s.name] = RNG.random(B) > 0.3
  mask["c"][:] = False
  for g in groups:
    outs[g.key] = jnp.stack([per_task_out[n] for n in g.names])
  got = losses.task_losses(specs, groups, outs, labels, mask)
  want = [losses.task_loss(s, per_task_out[s.name], labels[s.name], mask[s.name]) for s in specs]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
  assert float(got[2]) == 0.0
