"""The Gramian path (default for Gramian-weighted aggregators) against the stored-Jacobian
path and a per-task loop: same update, same heads convention, logged weights, no T x P
buffer, any float dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import flat_params
from mtl_jax import losses
from mtl_jax.models import build_model, sharing
from mtl_jax.tasks import TaskSpec, group_tasks
from mtl_jax.weighting import AGGREGATORS
from mtl_jax.weighting.gramian_strategy import GramianStrategy
from mtl_jax.weighting.jacobian_strategy import JacobianStrategy
from mtl_jax.weighting.factory import build_strategy
from mtl_jax.weighting.strategy import LossProblem

SPECS = (TaskSpec("a", "binary"), TaskSpec("b", "multiclass", 3), TaskSpec("c", "regression"))
GROUPS = group_tasks(SPECS)
RNG = np.random.default_rng(0)
INPUTS = RNG.normal(size=(16, 6))
LABELS = {"a": RNG.integers(0, 2, 16), "b": RNG.integers(0, 3, 16), "c": RNG.normal(size=16)}
MASK = {k: RNG.random(16) > 0.2 for k in "abc"}
MODEL = build_model({"sharing": "hard", "trunk": {"name": "mlp", "features": (8, 8)}}, GROUPS)
STATIC = np.asarray([1.0, 0.5, 2.0])


def _problem(dtype):
  x = jnp.asarray(INPUTS, dtype)
  labels = {k: jnp.asarray(v, dtype if k == "c" else jnp.int32) for k, v in LABELS.items()}
  mask = {k: jnp.asarray(v) for k, v in MASK.items()}

  def terms(params, z=None):
    out = MODEL.apply(sharing.variables(params, z), x)
    return losses.task_losses(SPECS, GROUPS, out, labels, mask), jnp.zeros((), dtype)

  params = jax.tree.map(lambda p: p.astype(dtype), MODEL.init(jax.random.PRNGKey(0), x)["params"])
  return LossProblem(terms, jnp.asarray(STATIC, dtype),
                     lambda: sharing.zero_perturbations(MODEL, x, params, 3)), params


PROBLEM, PARAMS = _problem(jnp.float32)
GRAMIAN_WEIGHTED = ["mean", "upgrad", "mgda", "pcgrad", "dualproj", "imtl_g", "cagrad",
                    "nash_mtl", "aligned_mtl"]


def test_gramian_is_the_default_where_it_is_exact():
  assert isinstance(build_strategy({"aggregator": "upgrad"}, 3, PARAMS), GramianStrategy)
  assert isinstance(build_strategy({"aggregator": "graddrop"}, 3, PARAMS), JacobianStrategy)
  assert isinstance(build_strategy({"aggregator": "upgrad", "mode": "jacobian"}, 3, PARAMS),
                    JacobianStrategy)
  with pytest.raises(ValueError, match="'graddrop' is not Gramian-weighted"):
    build_strategy({"aggregator": "graddrop", "mode": "gramian"}, 3, PARAMS)
  with pytest.raises(ValueError, match="weighting.mode must be one of"):
    build_strategy({"aggregator": "upgrad", "mode": "gramain"}, 3, PARAMS)


@pytest.mark.parametrize("name", GRAMIAN_WEIGHTED)
def test_gramian_path_equals_the_stored_jacobian_path(name):
  rng = jax.random.PRNGKey(3)
  g_strat = build_strategy({"aggregator": name}, 3, PARAMS)
  j_strat = build_strategy({"aggregator": name, "mode": "jacobian"}, 3, PARAMS)
  g, _, gm = jax.jit(lambda p: g_strat.gradients(PROBLEM, p, {}, rng))(PARAMS)
  j, _, jm = jax.jit(lambda p: j_strat.gradients(PROBLEM, p, {}, rng))(PARAMS)
  for k, v in flat_params(j).items():
    np.testing.assert_allclose(flat_params(g)[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
  np.testing.assert_allclose(gm["task_weight"], jm["task_weight"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(gm["task_grad_cosine"], jm["task_grad_cosine"], atol=1e-5)


@pytest.mark.parametrize("mode", ["gramian", "jacobian"])
def test_heads_get_their_own_tasks_plain_gradient(mode):
  """The convention of every aggregator path: head t gets ∇ (static_t L_t), not w_t times it."""
  strat = build_strategy({"aggregator": "mgda", "mode": mode}, 3, PARAMS)
  grads, _, m = strat.gradients(PROBLEM, PARAMS, {}, jax.random.PRNGKey(1))
  own = flat_params(jax.grad(lambda p: jnp.sum(STATIC * PROBLEM.terms(p)[0]))(PARAMS))
  assert not np.allclose(m["task_weight"], 1.0)  # so a w-weighted head would differ
  for k, v in flat_params(grads).items():
    if k.startswith("heads/"):
      np.testing.assert_allclose(v, own[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("name", GRAMIAN_WEIGHTED + ["graddrop", "random", "config"])
def test_every_aggregator_logs_effective_weights(name):
  strat = build_strategy({"aggregator": name}, 3, PARAMS)
  grads, _, m = strat.gradients(PROBLEM, PARAMS, {}, jax.random.PRNGKey(1))
  w = np.asarray(m["task_weight"])
  assert w.shape == (3,) and np.all(np.isfinite(w))
  # Gramian-weighted: the logged weights are the ones applied (wᵀJ is the update). Others
  # (GradDrop leaves the rows' span): least squares, so the residual is orthogonal to J.
  per_task = [flat_params(jax.grad(lambda p, t=t: STATIC[t] * PROBLEM.terms(p)[0][t])(PARAMS))
              for t in range(3)]
  shared = sorted(k for k in per_task[0] if k.startswith("trunk/"))
  jac = np.stack([np.concatenate([g[k].ravel() for k in shared]) for g in per_task])
  got = np.concatenate([flat_params(grads)[k].ravel() for k in shared])
  if name in GRAMIAN_WEIGHTED + ["random", "config"]:
    np.testing.assert_allclose(w @ jac, got, rtol=2e-3, atol=1e-5)
  else:
    np.testing.assert_allclose(jac @ (w @ jac - got), 0.0, atol=1e-3 * np.abs(jac @ got).max())


def _shared_size(params):
  return sum(v.size for k, v in flat_params(params).items() if k.startswith("trunk/"))


@pytest.mark.parametrize("mode,has_jacobian", [("gramian", False), ("jacobian", True)])
def test_gramian_program_holds_no_t_by_p_buffer(mode, has_jacobian):
  strat = build_strategy({"aggregator": "upgrad", "mode": mode}, 3, PARAMS)
  hlo = jax.jit(lambda p: strat.gradients(PROBLEM, p, {}, jax.random.PRNGKey(1))[0]).lower(
      PARAMS).compile().as_text()
  assert (f"f32[3,{_shared_size(PARAMS)}]" in hlo) == has_jacobian


@pytest.mark.parametrize("mode", ["gramian", "jacobian", "representation"])
def test_float64_runs_and_stays_float64(mode):
  with jax.enable_x64(True):
    problem, params = _problem(jnp.float64)
    strat = build_strategy({"aggregator": "upgrad", "mode": mode}, 3, params)
    grads, _, m = jax.jit(lambda p: strat.gradients(problem, p, {}, jax.random.PRNGKey(1)))(params)
    assert all(g.dtype == jnp.float64 for g in jax.tree.leaves(grads))
    assert m["task_weight"].dtype == jnp.float64
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("mode,name", [(m, "upgrad") for m in ("gramian", "jacobian", "representation")]
                         + [("gramian", a) for a in GRAMIAN_WEIGHTED if a != "upgrad"]
                         + [("jacobian", "graddrop")])
def test_bfloat16_forward_gives_finite_float32_weights(mode, name):
  problem, params = _problem(jnp.bfloat16)
  strat = build_strategy({"aggregator": name, "mode": mode}, 3, params)
  grads, _, m = jax.jit(lambda p: strat.gradients(problem, p, {}, jax.random.PRNGKey(1)))(params)
  assert m["task_weight"].dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(m["task_weight"])))
  assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in jax.tree.leaves(grads))
