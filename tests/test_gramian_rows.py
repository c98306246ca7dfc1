"""``gramian_engine="rows"``: G row by row (a VJP and a JVP per task), against the default
leaf engine; exact under gradient accumulation and lifted transforms; its scratch memory
stays near EW's where the leaf engine's grows like T x P; bad options are errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import flat_params, tiny_config
from mtl_jax.run import build_program
from mtl_jax.weighting.gramian_strategy import GramianStrategy
from mtl_jax.weighting.factory import build_strategy
from test_gramian_path import PARAMS, PROBLEM, _problem


def _both(name, problem, params, chunk=1, rng=jax.random.PRNGKey(3)):
  leaf = build_strategy({"aggregator": name}, 3, params)
  rows = build_strategy({"aggregator": name, "gramian_engine": "rows", "gramian_chunk": chunk},
                        3, params)
  assert isinstance(rows, GramianStrategy) and rows.engine == "rows"
  return [jax.jit(lambda p, s=s: s.gradients(problem, p, {}, rng))(params) for s in (leaf, rows)]


# The engines differ only in how G is formed, so three aggregators (a mean, a QP, Frank-Wolfe)
# cover the weights; G itself is compared directly.
@pytest.mark.parametrize("name", ["mean", "upgrad", "mgda"])
def test_rows_engine_equals_the_leaf_engine(name):
  (g, _, gm), (r, _, rm) = _both(name, PROBLEM, PARAMS)
  np.testing.assert_allclose(rm["task_grad_norm"], gm["task_grad_norm"], rtol=1e-5)
  np.testing.assert_allclose(rm["task_grad_cosine"], gm["task_grad_cosine"], atol=1e-5)
  np.testing.assert_allclose(rm["task_weight"], gm["task_weight"], rtol=1e-4, atol=1e-6)
  for k, v in flat_params(g).items():
    np.testing.assert_allclose(flat_params(r)[k], v, rtol=1e-4, atol=1e-6, err_msg=k)


def test_rows_gramian_is_j_jt_of_a_per_task_loop():
  """Oracle independent of both engines: one jax.grad per task, stacked, J Jᵀ in NumPy."""
  strat = build_strategy({"aggregator": "mean", "gramian_engine": "rows"}, 3, PARAMS)
  gram = np.asarray(jax.jit(lambda p: strat.gramian(PROBLEM, p)[0])(PARAMS))
  rows = []
  for t in range(3):
    g = flat_params(jax.grad(lambda p, t=t: PROBLEM.weighted(p)[0][t])(PARAMS))
    rows.append(np.concatenate([v.ravel() for k, v in sorted(g.items())
                                if k.startswith("trunk/")]).astype(np.float64))
  jac = np.stack(rows)
  np.testing.assert_allclose(gram, jac @ jac.T, rtol=1e-5, atol=1e-7)


def test_chunked_rows_equal_single_rows():
  one, two = [_both("upgrad", PROBLEM, PARAMS, chunk)[1][2] for chunk in (1, 2)]
  np.testing.assert_allclose(two["task_grad_cosine"], one["task_grad_cosine"], atol=1e-6)
  np.testing.assert_allclose(two["task_weight"], one["task_weight"], rtol=1e-5, atol=1e-7)


def test_rows_engine_runs_in_float64_and_gives_float32_weights_from_bfloat16():
  with jax.enable_x64(True):
    problem, params = _problem(jnp.float64)
    (_, _, gm), (r, _, rm) = _both("upgrad", problem, params)
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(r))
    np.testing.assert_allclose(rm["task_grad_cosine"], gm["task_grad_cosine"], atol=1e-12)
  problem, params = _problem(jnp.bfloat16)
  _, (_, _, m) = _both("upgrad", problem, params)
  assert m["task_weight"].dtype == jnp.float32 and np.all(np.isfinite(m["task_weight"]))


def _program(engine, scheme="hard", accum=1, features=(8,), t=2, batch=16, din=6):
  c = tiny_config()
  c.tasks = [dict(name=f"t{i}", kind="regression") for i in range(t)]
  c.model = dict(sharing=scheme, trunk=dict(name="mlp", features=features))
  if scheme == "mmoe":
    c.model.num_experts = 2
  c.optimizer = dict(name="sgd", learning_rate=0.1, schedule="constant")
  c.batch_size = batch
  c.grad_accum_steps = accum
  c.weighting = dict(aggregator="upgrad", gramian_engine=engine)
  rng = np.random.default_rng(0)
  b = {"inputs": jnp.asarray(rng.normal(size=(batch, din)), jnp.float32),
       "labels": {f"t{i}": jnp.asarray(rng.normal(size=batch), jnp.float32) for i in range(t)},
       "mask": {f"t{i}": jnp.asarray(rng.random(batch) > 0.2) for i in range(t)}}
  return build_program(c, b["inputs"][:1]), b


@pytest.mark.parametrize("scheme,accum", [("hard", 2), ("mmoe", 1), ("cross_stitch", 1)])
def test_rows_engine_train_step_equals_leaf(scheme, accum):
  """Through the program's own step: gradient accumulation (a sum of microbatch Jacobians)
  and schemes whose shared body is a lifted nn.vmap."""
  out = {}
  for engine in ("leaf", "rows"):
    program, batch = _program(engine, scheme, accum)
    step = jax.jit(program.train_step)
    state = program.state
    for _ in range(2):
      state, metrics = step(state, batch)
    out[engine] = (flat_params(state.params), metrics)
  (pl, ml), (pr, mr) = out["leaf"], out["rows"]
  np.testing.assert_allclose(mr["task_weight"], ml["task_weight"], rtol=1e-4, atol=1e-6)
  for k, v in pl.items():
    np.testing.assert_allclose(pr[k], v, rtol=1e-4, atol=1e-6, err_msg=f"{scheme} {k}")


def _temp_bytes(program, batch):
  return jax.jit(program.train_step).lower(program.state, batch).compile(
      ).memory_analysis().temp_size_in_bytes


def test_rows_engine_scratch_stays_near_ew_where_the_leaf_engines_grows_with_t():
  """Compile-time numbers (deterministic): T = 16 tasks on a 64 -> 256 -> 256 trunk."""
  kw = dict(features=(256, 256), t=16, batch=32, din=64)
  leaf = _temp_bytes(*_program("leaf", **kw))
  rows = _temp_bytes(*_program("rows", **kw))
  program, batch = _program("leaf", **kw)
  config = program.config
  config.weighting = {}
  ew = _temp_bytes(build_program(config, batch["inputs"][:1]), batch)
  assert rows < 0.25 * leaf, (rows, leaf)
  assert rows <= 2.0 * ew, (rows, ew)


@pytest.mark.parametrize("weighting,match", [
    (dict(aggregator="upgrad", gramian_engine="row"), "gramian_engine must be one of"),
    (dict(aggregator="upgrad", gramian_engine="rows", gramian_chunk=0), "gramian_chunk must be"),
    (dict(aggregator="upgrad", gramian_chunk=4), "gramian_chunk applies to gramian_engine='rows'"),
    (dict(aggregator="upgrad", mode="jacobian", gramian_engine="rows"),
     "gramian_engine applies to mode='gramian' only"),
    (dict(name="uncertainty", gramian_engine="rows"), "gramian_engine applies to aggregators"),
])
def test_engine_options_that_would_be_ignored_are_errors(weighting, match):
  with pytest.raises(ValueError, match=match):
    build_strategy(weighting, 3, PARAMS)
