"""The gradient side of the train step: Jacobian path, loss weightings, logging, end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import flat_params, tiny_config
from mtl_jax import losses, train
from mtl_jax.models import build_model, sharing
from mtl_jax.tasks import TaskSpec, group_tasks
from mtl_jax.weighting import AGGREGATORS
from mtl_jax.weighting.strategy import LossProblem, build_strategy

SPECS = (TaskSpec("a", "binary"), TaskSpec("b", "multiclass", 3), TaskSpec("c", "regression"))
GROUPS = group_tasks(SPECS)
RNG = np.random.default_rng(0)
BATCH = {"inputs": jnp.asarray(RNG.normal(size=(16, 6)), jnp.float32),
         "labels": {"a": jnp.asarray(RNG.integers(0, 2, 16)), "b": jnp.asarray(RNG.integers(0, 3, 16)),
                    "c": jnp.asarray(RNG.normal(size=16), jnp.float32)},
         "mask": {k: jnp.asarray(RNG.random(16) > 0.2) for k in "abc"}}
MODEL = build_model({"sharing": "hard", "trunk": {"name": "mlp", "features": (8, 8)}}, GROUPS)
PARAMS = MODEL.init(jax.random.PRNGKey(0), BATCH["inputs"])["params"]
STATIC = jnp.asarray([1.0, 0.5, 2.0])


def loss_terms(params, z=None):
  out = MODEL.apply({"params": params}, BATCH["inputs"])
  return losses.task_losses(SPECS, GROUPS, out, BATCH["labels"], BATCH["mask"]), jnp.zeros(())


_flat = flat_params
PROBLEM = LossProblem(terms=loss_terms, static_weights=STATIC)


def _per_task_grads_loop():
  """Oracle: one jax.grad per task (a Python loop, fine in a test)."""
  return [_flat(jax.grad(lambda p, t=t: STATIC[t] * loss_terms(p)[0][t])(PARAMS)) for t in range(3)]


def test_equal_weighting_is_the_gradient_of_the_weighted_sum():
  comb = build_strategy(None, 3, PARAMS)
  grads, info, m = comb.gradients(PROBLEM, PARAMS, comb.init_state(), jax.random.PRNGKey(1))
  want = _flat(jax.grad(lambda p: jnp.sum(STATIC * loss_terms(p)[0]))(PARAMS))
  for k, v in _flat(grads).items():
    np.testing.assert_allclose(v, want[k], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(m["task_weight"], [1, 1, 1])


@pytest.mark.parametrize("name", ["mean", "upgrad", "mgda", "pcgrad"])
def test_jacobian_path_matches_a_per_task_loop(name):
  comb = build_strategy({"aggregator": name}, 3, PARAMS)
  grads, _, m = jax.jit(lambda p: comb.gradients(PROBLEM, p, {}, jax.random.PRNGKey(1)))(PARAMS)
  per_task = _per_task_grads_loop()
  shared = sorted(k for k in per_task[0] if k.startswith("trunk/"))
  jac = np.stack([np.concatenate([g[k].ravel() for k in shared]) for g in per_task])
  direction = np.asarray(AGGREGATORS.get(name)()(jnp.asarray(jac), jax.random.PRNGKey(1)))
  got = _flat(grads)
  np.testing.assert_allclose(np.concatenate([got[k].ravel() for k in shared]), direction,
                             rtol=2e-4, atol=1e-6)
  for k in got:  # heads: each task's own gradient (the sum of the per-task ones)
    if not k.startswith("trunk/"):
      np.testing.assert_allclose(got[k], sum(g[k] for g in per_task), rtol=1e-5, atol=1e-7)
  norms = np.linalg.norm(jac, axis=1)
  np.testing.assert_allclose(m["task_grad_norm"], norms, rtol=1e-4)
  np.testing.assert_allclose(m["task_grad_cosine"][0, 1], jac[0] @ jac[1] / norms[0] / norms[1],
                             rtol=1e-4, atol=1e-6)


def test_gradnorm_gets_the_last_shared_layer_norms():
  comb = build_strategy({"name": "gradnorm"}, 3, PARAMS)
  assert comb.method.layer_regex == "trunk/block_1/.*kernel"
  _, info, _ = comb.gradients(PROBLEM, PARAMS, comb.init_state(), jax.random.PRNGKey(1))
  per_task = _per_task_grads_loop()
  want = [np.linalg.norm(g["trunk/block_1/Dense_0/kernel"]) / STATIC[t] for t, g in enumerate(per_task)]
  np.testing.assert_allclose(info["layer_grad_norms"], want, rtol=1e-4)


def test_bad_weighting_configs():
  with pytest.raises(KeyError, match="unknown aggregator 'upgrade'"):
    build_strategy({"aggregator": "upgrade"}, 3, PARAMS)
  with pytest.raises(KeyError, match="unknown loss weighting 'uw'"):
    build_strategy({"name": "uw"}, 3, PARAMS)
  with pytest.raises(ValueError, match="either a loss weighting"):
    build_strategy({"name": "dwa", "aggregator": "mgda"}, 3, PARAMS)
  with pytest.raises(ValueError, match="matches no parameter"):
    build_strategy({"aggregator": "mgda", "shared": "encoder/.*"}, 3, PARAMS)


@pytest.mark.parametrize("weighting", [
    {"name": "uncertainty"}, {"name": "famo"}, {"name": "gradnorm", "options": {"alpha": 0.12}},
    {"aggregator": "upgrad"}, {"aggregator": "cagrad"}])
def test_end_to_end_training_logs_weights_and_conflict(workdir, weighting):
  c = tiny_config(weighting=weighting)
  c.num_train_steps = 6
  c.log_every_steps = 3
  c.checkpoint_every_steps = 3
  res = train.train_and_evaluate(c, workdir)
  assert np.isfinite(res["test"]["digit"]["loss"])
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")) if "train/loss" in l]
  assert "train/digit/weight" in rows[-1] or "train/digit/grad_norm" in rows[-1]
  if "aggregator" in weighting:
    assert -1.0 <= rows[-1]["train/grad_cosine/digit__digit_ge5"] <= 1.0
  # Resuming restores the weighting state too (a longer run on the same workdir).
  c.num_train_steps = 8
  train.train_and_evaluate(c, workdir)


def test_representation_mode_weights_one_backward_pass(workdir):
  """MGDA-UB: weights from the Gramian of d L_t / d z (z = trunk output)."""
  model = MODEL
  z0 = sharing.zero_features(model, BATCH["inputs"])

  def terms(params, z):
    out = model.apply(sharing.variables(params, z), BATCH["inputs"])
    return losses.task_losses(SPECS, GROUPS, out, BATCH["labels"], BATCH["mask"]), jnp.zeros(())

  comb = build_strategy({"aggregator": "mgda", "mode": "representation"}, 3, PARAMS)
  grads, _, m = comb.gradients(LossProblem(terms, STATIC, lambda: z0), PARAMS, None,
                               jax.random.PRNGKey(1))
  # Oracle: the representation Jacobian by a loop, MGDA weights, one weighted gradient.
  zjac = np.stack([np.asarray(jax.grad(lambda z, t=t: STATIC[t] * terms(PARAMS, z)[0][t])(z0)).ravel()
                   for t in range(3)])
  w = np.asarray(AGGREGATORS.get("mgda")().weights(jnp.asarray(zjac @ zjac.T)))
  np.testing.assert_allclose(m["task_weight"], w, rtol=1e-4, atol=1e-6)
  want = _flat(jax.grad(lambda p: jnp.sum(w * STATIC * terms(p, None)[0]))(PARAMS))
  for k, v in _flat(grads).items():
    np.testing.assert_allclose(v, want[k], rtol=1e-4, atol=1e-6)
  c = tiny_config(weighting={"aggregator": "mgda", "mode": "representation"})
  c.num_train_steps = 3
  train.train_and_evaluate(c, workdir)


def test_jacobian_path_adds_the_regularizer_gradient():
  from mtl_jax import regularizers
  reg = regularizers.build_regularizer([dict(name="l2", weight=0.1, select="trunk/.*")])

  def terms(params, z=None):
    per_task, _ = loss_terms(params)
    return per_task, reg(params)

  comb = build_strategy({"aggregator": "mean"}, 3, PARAMS)
  with_reg, _, _ = comb.gradients(LossProblem(terms, STATIC, reg_grad=jax.grad(reg)), PARAMS, {},
                                  jax.random.PRNGKey(1))
  without, _, _ = comb.gradients(PROBLEM, PARAMS, {}, jax.random.PRNGKey(1))
  k = "trunk/block_0/Dense_0/kernel"
  np.testing.assert_allclose(_flat(with_reg)[k] - _flat(without)[k], 0.2 * _flat(PARAMS)[k],
                             rtol=1e-4, atol=1e-6)
