"""Task kinds as plug-ins: the registry, a kind added from outside, and the
heads for kinds with a position axis (tokens, candidates)."""

import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import kinds, losses, metrics
from mtl_jax.kinds.base import TaskKind, masked_mean, register
from mtl_jax.models.heads import StackedDense, TaskHeads, outputs_by_task
from mtl_jax.tasks import TaskSpec, group_tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = ("binary", "multiclass", "multilabel", "regression", "similarity", "ranking",
           "token_classification")


@register("test_poisson")
class _Poisson(TaskKind):
  """A kind defined outside mtl_jax/kinds: counts, Poisson NLL on log-rates."""
  default_metrics = ("loss", "mean_rate")
  valid_metrics = ("loss", "mean_rate")

  def label_shape(self, num_outputs):
    return ()

  def per_example_loss(self, outputs, labels, mask=None):
    return jnp.exp(outputs[..., 0]) - labels * outputs[..., 0]

  def numpy_loss(self, spec, outputs, labels, mask=None):
    return np.exp(outputs[:, 0]) - labels * outputs[:, 0]

  def metric(self, spec, metric, outputs, labels, mask):
    if metric == "mean_rate":
      return np.exp(outputs[:, 0]).mean()
    return super().metric(spec, metric, outputs, labels, mask)


def test_registry_has_the_shipped_kinds_and_names_the_valid_ones():
  assert set(SHIPPED) <= set(kinds.names())
  for name in SHIPPED:
    k = kinds.get(name)
    assert k.name == name
    assert all(k.is_valid_metric(m) for m in k.default_metrics), name
    assert not k.higher_is_better("loss")
  with pytest.raises(KeyError, match=r"unknown task kind 'nope'; valid names: \[.*'ranking'"):
    kinds.get("nope")
  with pytest.raises(ValueError, match="already registered"):
    register("binary")(_Poisson)


def test_a_kind_added_from_outside_works_end_to_end():
  specs = (TaskSpec("n", "test_poisson"), TaskSpec("b", "binary"), TaskSpec("m", "test_poisson"))
  groups = group_tasks(specs)
  rng = np.random.default_rng(0)
  out = {"test_poisson_1": jnp.asarray(rng.normal(size=(2, 8, 1)), jnp.float32),
         "binary_1": jnp.asarray(rng.normal(size=(1, 8, 1)), jnp.float32)}
  labels = {"n": rng.poisson(2, 8), "m": rng.poisson(1, 8), "b": rng.integers(0, 2, 8)}
  mask = {"n": np.ones(8, bool), "m": rng.random(8) > 0.5, "b": np.ones(8, bool)}
  got = losses.task_losses(specs, groups, out, labels, mask)
  o = np.asarray(out["test_poisson_1"], np.float64)[..., 0]
  for t, name in ((0, "n"), (2, "m")):
    ref = (np.exp(o[t // 2]) - labels[name] * o[t // 2])[mask[name]].mean()
    np.testing.assert_allclose(float(got[t]), ref, rtol=1e-5)
  r = metrics.task_metrics(specs[0], np.asarray(out["test_poisson_1"][0]), labels["n"], mask["n"])
  np.testing.assert_allclose(r["mean_rate"], np.exp(o[0]).mean(), rtol=1e-6)
  assert kinds.higher_is_better("mean_rate", "test_poisson")
  with pytest.raises(ValueError, match=r"unknown metrics \['auc'\]"):
    TaskSpec("n", "test_poisson", metrics=("auc",))


def test_core_modules_never_branch_on_a_kind_name():
  pattern = re.compile(r"[\"'](%s)[\"']" % "|".join(SHIPPED))
  for path in ("mtl_jax/tasks.py", "mtl_jax/losses.py", "mtl_jax/metrics.py",
               "mtl_jax/models/heads.py"):
    with open(os.path.join(ROOT, path)) as f:
      hits = pattern.findall(f.read())
    assert not hits, (path, hits)


def test_masked_mean_is_exactly_zero_without_entries():
  v = jnp.asarray([[1.0, 2.0], [3.0, jnp.nan]])
  m = jnp.asarray([[True, False], [False, False]])
  np.testing.assert_array_equal(np.asarray(masked_mean(v, m)), [1.0, 0.0])


@pytest.mark.parametrize("per_task", [False, True])
def test_stacked_dense_with_a_position_axis_equals_per_task_dense(per_task):
  T, B, L, D, O = 3, 4, 5, 6, 2
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (T, B, L, D) if per_task else (B, L, D))
  layer = StackedDense(num_tasks=T, features=O, extra_axes=1)
  p = layer.init(jax.random.PRNGKey(1), x)["params"]
  y = layer.apply({"params": p}, x)
  assert y.shape == (T, B, L, O)
  for t in range(T):
    ref = nn.Dense(O).apply({"params": {"kernel": p["kernel"][t], "bias": p["bias"][t]}},
                            x[t] if per_task else x)
    np.testing.assert_allclose(y[t], ref, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r"expects \[B, L, D\] or \[T, B, L, D\]"):
    layer.apply({"params": p}, jnp.zeros((B, D)))
  with pytest.raises(ValueError, match="must lead with the 3 tasks"):
    layer.apply({"params": p}, jnp.zeros((T + 1, B, L, D)))


def test_task_heads_give_per_position_outputs_for_token_and_ranking_groups():
  specs = (TaskSpec("ner", "token_classification", 5), TaskSpec("pos", "token_classification", 5),
           TaskSpec("rank", "ranking"))
  groups = group_tasks(specs)
  feats = jnp.ones((2, 7, 8))  # [B, L or C, D] from the trunk
  heads = TaskHeads(groups, hidden=(4,))
  out, _ = heads.init_with_output(jax.random.PRNGKey(0), feats)
  assert out["token_classification_5"].shape == (2, 2, 7, 5)
  assert out["ranking_1"].shape == (1, 2, 7, 1)
  per = outputs_by_task(groups, out)
  assert per["pos"].shape == (2, 7, 5) and per["rank"].shape == (2, 7, 1)
  np.testing.assert_array_equal(per["pos"], out["token_classification_5"][1])


def test_concat_batches_joins_on_the_batch_axis_and_trims_padding():
  from mtl_jax.models.heads import concat_batches
  specs = (TaskSpec("ner", "token_classification", 3), TaskSpec("b", "binary"))
  groups = group_tasks(specs)
  rng = np.random.default_rng(0)
  for lead in ((), (2,)):  # without and with a replica axis
    full = {"token_classification_3": rng.normal(size=lead + (1, 8, 5, 3)),
            "binary_1": rng.normal(size=lead + (1, 8, 1))}
    chunks = [{k: v[..., :4, :, :] if k.startswith("token") else v[..., :4, :]
               for k, v in full.items()},
              {k: v[..., 4:, :, :] if k.startswith("token") else v[..., 4:, :]
               for k, v in full.items()}]
    got = concat_batches(groups, chunks, 7)
    np.testing.assert_array_equal(got["token_classification_3"], full["token_classification_3"][..., :7, :, :])
    np.testing.assert_array_equal(got["binary_1"], full["binary_1"][..., :7, :])
