"""model.route_heads: each example through its own task's head only, against the masked
format (same per-task losses and updates), and the inputs routing cannot take."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import flat_params, tiny_config
from mtl_jax import routing, train
from mtl_jax.run import build_program
from mtl_jax.tasks import group_tasks, specs_from_config

N, T_REG, T_CLS = 24, 3, 2
TASKS = ([dict(name=f"r{i}", kind="regression") for i in range(T_REG)]
         + [dict(name=f"c{i}", kind="multiclass", num_outputs=4) for i in range(T_CLS)])


def _batch(seed=0):
  """One labelled task per example within each group (School-like), some examples unlabelled."""
  rng = np.random.default_rng(seed)
  reg_task = rng.integers(-1, T_REG, N)   # -1: no regression label
  cls_task = rng.integers(-1, T_CLS, N)
  labels, mask = {}, {}
  for i in range(T_REG):
    mask[f"r{i}"] = reg_task == i
    labels[f"r{i}"] = np.where(mask[f"r{i}"], rng.normal(size=N), np.nan).astype(np.float32)
  for i in range(T_CLS):
    mask[f"c{i}"] = cls_task == i
    labels[f"c{i}"] = np.where(mask[f"c{i}"], rng.integers(0, 4, N), -1).astype(np.int32)
  batch = {"inputs": rng.normal(size=(N, 6)).astype(np.float32), "labels": labels, "mask": mask}
  return jax.tree.map(jnp.asarray, batch)


def _config(route, weighting=None, accum=1, hidden=(8,)):
  c = tiny_config()
  c.tasks = TASKS
  c.model = dict(sharing="hard", trunk=dict(name="mlp", features=(16,)), head_hidden=hidden,
                 route_heads=route)
  c.optimizer = dict(name="sgd", learning_rate=0.1, schedule="constant")
  c.batch_size = N
  c.grad_accum_steps = accum
  c.weighting = weighting or {}
  return c


@pytest.mark.parametrize("weighting,accum", [(None, 1), (dict(aggregator="upgrad"), 1),
                                             (dict(name="uncertainty"), 2)])
def test_routed_step_equals_the_masked_step(weighting, accum):
  batch = _batch()
  out = {}
  for route in (False, True):
    program = build_program(_config(route, weighting, accum), batch["inputs"][:1])
    step = jax.jit(program.train_step)
    state, losses = program.state, []
    for _ in range(3):
      state, m = step(state, batch)
      losses.append(np.asarray(m["task_loss"]))
    out[route] = (flat_params(state.params), np.stack(losses))
  (pm, lm), (pr, lr) = out[False], out[True]
  assert np.all(lm[0] > 0)  # every task is labelled somewhere, so every loss is real
  np.testing.assert_allclose(lr, lm, rtol=1e-5, atol=1e-6)
  for k, v in pm.items():
    np.testing.assert_allclose(pr[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_routed_losses_match_a_numpy_oracle():
  """Independent of the model: per-example squared errors averaged per task by hand."""
  specs = specs_from_config(TASKS[:T_REG])
  groups = group_tasks(specs)
  batch = _batch(1)
  mask = {k: v for k, v in batch["mask"].items() if k.startswith("r")}
  labels = {k: v for k, v in batch["labels"].items() if k.startswith("r")}
  routes = routing.route_indices(groups, mask)
  preds = np.random.default_rng(2).normal(size=(N, 1)).astype(np.float32)
  got = routing.routed_task_losses(specs, groups, {groups[0].key: jnp.asarray(preds)}, labels,
                                   mask, routes)
  want = [np.mean((preds[np.asarray(mask[f"r{i}"]), 0]
                   - np.asarray(labels[f"r{i}"])[np.asarray(mask[f"r{i}"])]) ** 2)
          for i in range(T_REG)]
  kind_scale = float(specs[0].task_kind.per_example_loss(jnp.ones((1, 1)), jnp.zeros(1))[0])
  np.testing.assert_allclose(got, np.asarray(want) * kind_scale, rtol=1e-5)


def test_an_example_labelled_for_two_tasks_of_a_group_is_an_error(tmp_path):
  """mmoe_synthetic labels y1 and y2 (one regression group) on every example; quickstart's
  digit and digit_ge5 are of two kinds, so two groups, and route fine."""
  c = tiny_config(num_train_steps=2)
  c.data = dict(name="mmoe_synthetic", num_train=64)
  c.tasks = [dict(name="y1", kind="regression"), dict(name="y2", kind="regression")]
  c.model.route_heads = True
  with pytest.raises(ValueError, match=r"route_heads: dataset 'mmoe_synthetic' train example 0 "
                                       r"is labelled for \['y1', 'y2'\]"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  c = tiny_config(num_train_steps=2, checkpoint_every_steps=0)
  c.model.route_heads = True
  assert set(train.train_and_evaluate(c, str(tmp_path / "ok"))["test"]) == {"digit", "digit_ge5"}


def test_routing_refuses_what_it_cannot_do():
  batch = _batch()
  with pytest.raises(ValueError, match="mode='representation' needs every task's head"):
    build_program(_config(True, dict(aggregator="mgda", mode="representation")),
                  batch["inputs"][:1])
  c = _config(True, hidden=())
  c.model.sharing = "pooled"
  with pytest.raises(ValueError, match="route_heads applies to sharing='hard'"):
    build_program(c, batch["inputs"][:1])
  c = _config(True)
  c.model.sharing = "mmoe"
  with pytest.raises(ValueError, match=r"unknown model options \['route_heads'\]"):
    build_program(c, batch["inputs"][:1])
  c = _config(True)
  c.tasks = [dict(name="tok", kind="token_classification", num_outputs=3)]
  with pytest.raises(ValueError, match="kind 'token_classification'.*per-example kinds only"):
    build_program(c, jnp.zeros((1, 5, 6)))


def test_routed_training_with_num_seeds_equals_masked(tmp_path):
  """Through train_and_evaluate with two vmapped replicas: the routes are computed inside
  the replica vmap; quickstart's two tasks are two groups (one labelled task each)."""
  results = {}
  for route in (False, True):
    c = tiny_config(num_train_steps=6, checkpoint_every_steps=0, num_seeds=2)
    c.model.route_heads = route
    results[route] = [r["test"]["digit"]["loss"] for r in
                      train.train_and_evaluate(c, str(tmp_path / str(route)))["replicas"]]
  assert results[False][0] != results[False][1]  # two different replicas
  np.testing.assert_allclose(results[True], results[False], rtol=1e-6)
