"""Trunks and stacked heads: parameter paths and equivalence to separate layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mtl_jax.models import build_model, outputs_by_task
from mtl_jax.models.heads import StackedDense
from mtl_jax.models.trunks import build_trunk
from mtl_jax.tasks import TaskSpec, group_tasks


def _paths(params):
  return sorted("/".join(k) for k in traverse_util.flatten_dict(params))


def test_stacked_dense_equals_independent_dense_layers():
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
  layer = StackedDense(num_tasks=3, features=2)
  p = layer.init(jax.random.PRNGKey(1), x)["params"]
  y = layer.apply({"params": p}, x)
  assert y.shape == (3, 6, 2)
  for t in range(3):
    ref = nn.Dense(2).apply({"params": {"kernel": p["kernel"][t], "bias": p["bias"][t]}}, x)
    np.testing.assert_allclose(y[t], ref, rtol=1e-6)
  # Each task's slice is drawn independently (not one init repeated).
  assert not np.allclose(p["kernel"][0], p["kernel"][1])


def test_hard_sharing_paths_and_grouping():
  specs = (TaskSpec("a", "binary"), TaskSpec("b", "multiclass", 4), TaskSpec("c", "binary"))
  groups = group_tasks(specs)
  model = build_model({"sharing": "hard", "trunk": {"name": "mlp", "features": (8, 8)},
                       "head_hidden": (4,)}, groups)
  x = jnp.ones((3, 10))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  assert _paths(params) == [
      "heads/binary_1/bias", "heads/binary_1/kernel",
      "heads/binary_1_hidden_0/bias", "heads/binary_1_hidden_0/kernel",
      "heads/multiclass_4/bias", "heads/multiclass_4/kernel",
      "heads/multiclass_4_hidden_0/bias", "heads/multiclass_4_hidden_0/kernel",
      "trunk/block_0/Dense_0/bias", "trunk/block_0/Dense_0/kernel",
      "trunk/block_1/Dense_0/bias", "trunk/block_1/Dense_0/kernel"]
  assert params["heads"]["binary_1"]["kernel"].shape == (2, 4, 1)
  out = outputs_by_task(groups, model.apply({"params": params}, x))
  assert {k: v.shape for k, v in out.items()} == {"a": (3, 1), "b": (3, 4), "c": (3, 1)}


def test_cnn_1d_and_2d_and_truncation():
  x1 = jnp.ones((2, 40))
  cnn = build_trunk({"name": "cnn"})
  p = cnn.init(jax.random.PRNGKey(0), x1)["params"]
  assert sorted(p) == ["block_0", "block_1", "block_2"]
  assert cnn.apply({"params": p}, x1).shape == (2, 125)  # 40 -> 20 -> 10 -> 5, x25 channels
  x2 = jnp.ones((2, 28, 28))
  cnn2 = build_trunk({"name": "cnn", "image": True, "features": (4, 8), "kernel_sizes": (3, 3),
                      "strides": (2, 2)})
  p2 = cnn2.init(jax.random.PRNGKey(0), x2)["params"]
  assert p2["block_0"]["Conv_0"]["kernel"].shape == (3, 3, 1, 4)
  assert cnn2.apply({"params": p2}, x2).shape == (2, 7 * 7 * 8)
  short = build_trunk({"name": "mlp", "features": (8, 8, 8), "num_blocks": 2})
  assert sorted(short.init(jax.random.PRNGKey(0), x1)["params"]) == ["block_0", "block_1"]
