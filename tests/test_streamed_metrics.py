"""Kinds with ``streams_metrics``: evaluation adds per-batch sums, and equals the whole split.

A test-only twin of ``multiclass`` streams its accuracy and loss; evaluated in
padded batches, with two replicas and partly unlabelled rows, it must give the
NumPy values over the whole split, and leave the other kinds' path unchanged.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import evaluation, parallel, tasks
from mtl_jax.data.base import ArrayDataset
from mtl_jax.kinds import KINDS
from mtl_jax.kinds.base import add_sums, register
from mtl_jax.kinds.multiclass import Multiclass, numpy_softmax_ce
from mtl_jax.replicas import Replicas

STREAMED = "_streamed_multiclass_test"


def _register_once():
  if STREAMED in KINDS:
    return

  @register(STREAMED)
  class StreamedMulticlass(Multiclass):  # pylint: disable=unused-variable
    streams_metrics = True

    def metric_sums(self, spec, outputs, labels, mask):
      return {"correct": np.sum(outputs.argmax(-1) == labels, dtype=np.float64),
              "loss_sum": numpy_softmax_ce(outputs, labels).sum()}

    def metrics_from_sums(self, spec, sums):
      return {"accuracy": sums["correct"] / sums["count"],
              "loss": sums["loss_sum"] / sums["count"]}


def _oracle(outputs, labels, mask):
  o, y = outputs[mask], labels[mask]
  lse = np.log(np.exp(o - o.max(-1, keepdims=True)).sum(-1)) + o.max(-1)
  ce = lse - o[np.arange(len(y)), y]
  return {"count": float(mask.sum()), "accuracy": float((o.argmax(-1) == y).mean()),
          "loss": float(ce.mean())}


@pytest.mark.parametrize("num_seeds", [1, 2])
def test_streamed_equals_whole_split_and_other_kinds_unchanged(num_seeds):
  _register_once()
  rng = np.random.default_rng(0)
  n, batch = 37, 8  # 5 batches, the last padded
  specs = tasks.specs_from_config([dict(name="a", kind=STREAMED, num_outputs=4),
                                   dict(name="b", kind="multiclass", num_outputs=4)])
  groups = tasks.group_tasks(specs)
  table = rng.normal(size=(num_seeds, 2, n, 4)).astype(np.float32)  # replica, task, example
  labels = {k: rng.integers(0, 4, n) for k in "ab"}
  mask = {k: rng.random(n) < 0.7 for k in "ab"}
  data = ArrayDataset(np.arange(n), labels, mask)

  def eval_fn(params, idx):
    del params
    out = jnp.asarray(table)[:, :, jnp.clip(idx, 0, n - 1)]  # [R, 2, B, 4]
    out = {g.key: out[:, t:t + 1] for t, g in enumerate(groups)}
    return out if num_seeds > 1 else {k: v[0] for k, v in out.items()}

  mesh = parallel.make_mesh(1)
  mean, reps = evaluation.evaluate(eval_fn, None, data, specs, groups, batch, mesh,
                                   Replicas(num_seeds, 0))
  assert list(reps[0]) == ["a", "b"]
  for r in range(num_seeds):
    for t, name in enumerate("ab"):
      want = _oracle(table[r, t], labels[name], mask[name])
      got = reps[r][name]
      assert got["count"] == want["count"]
      np.testing.assert_allclose(got["accuracy"], want["accuracy"], rtol=0, atol=1e-12)
      np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
  if num_seeds > 1:
    np.testing.assert_allclose(mean["a"]["accuracy"], np.mean([r["a"]["accuracy"] for r in reps]))


def test_streamed_kind_with_nothing_labelled_is_nan_and_sums_add():
  _register_once()
  spec = tasks.TaskSpec("a", STREAMED, 3, metrics=("accuracy",))
  kind = spec.task_kind
  out = np.zeros((2, 3))
  none = kind.labelled_sums(spec, out, np.zeros(2, int), np.zeros(2, bool))
  assert set(none) == {"count"}  # a batch without labels contributes only its count
  res = kind.metrics_of_sums(spec, add_sums(None, none))
  assert res["count"] == 0 and np.isnan(res["accuracy"])
  one = kind.labelled_sums(spec, np.eye(3)[:2], np.array([0, 2]), np.array([True, True]))
  total = add_sums(add_sums(None, none), one)
  assert kind.metrics_of_sums(spec, total) == {"count": 2.0, "accuracy": 0.5}
  # ``metrics`` on whole arrays is the same sums path: one definition serves both
  assert kind.metrics(spec, np.eye(3)[:2], np.array([0, 2]), np.array([True, True])) == {
      "count": 2.0, "accuracy": 0.5}
