"""CGC, PLE and DSelect-k: forwards against NumPy, DSelect-k's gate in closed form, and every
weighting method and aggregator for one step on each scheme, with the Gramian checked against
per-task jax.grad on the scheme's declared shared parameters."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import flat_params, tiny_config
from mtl_jax import losses, paths, transfer
from mtl_jax.config_validation import ConfigError, validate_config
from mtl_jax.models import build_model
from mtl_jax.models.dselect_k import (binary_codes, expert_weights, selector_entropy,
                                      selector_outputs, smooth_step)
from mtl_jax.models.extraction import task_experts
from mtl_jax.models.sharing import SHARED_FEATURES, TASK_FEATURES, layout, variables
from mtl_jax.run import build_program
from mtl_jax.step import TrainState, make_train_step
from mtl_jax.tasks import TaskSpec, group_tasks
from mtl_jax.weighting import AGGREGATORS, GramianWeighted
from mtl_jax.weighting.gramian_strategy import GramianStrategy
from mtl_jax.weighting.loss import LOSS_WEIGHTINGS as LOSS_WEIGHTINGS_REGISTRY, LossWeighting
from mtl_jax.weighting.loss_strategy import LossWeightingStrategy
from mtl_jax.weighting.jacobian_strategy import JacobianStrategy
from mtl_jax.weighting.factory import build_strategy

# Task order a, c | b (groups by kind), not the config order a, b, c.
SPECS = (TaskSpec("a", "binary"), TaskSpec("b", "regression"), TaskSpec("c", "binary"))
GROUPS = group_tasks(SPECS)
ORDER = ("a", "c", "b")
ROWS = {"a": ("binary_1", 0), "c": ("binary_1", 1), "b": ("regression_1", 0)}
RNG = np.random.default_rng(0)
N, F, W = 12, 5, 4
X = RNG.normal(size=(N, F)).astype(np.float32)
BATCH = {"inputs": X, "labels": {"a": RNG.integers(0, 2, N), "c": RNG.integers(0, 2, N),
                                 "b": RNG.normal(size=N).astype(np.float32)},
         "mask": {k: RNG.random(N) > 0.2 for k in "abc"}}
TRUNK = {"name": "mlp", "features": (W,)}
SCHEMES = {"cgc": dict(num_shared_experts=2, num_task_experts=1),
           "ple": dict(num_shared_experts=1, num_task_experts=2, num_levels=2),
           "dselect_k": dict(num_experts=4, num_selectors=2),
           "dselect_k_example": dict(num_experts=4, num_selectors=2, gate="example")}


# Compile-time plumbing only (every value is checked against an oracle): cheap XLA:CPU codegen.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(fn, **kw):
  return jax.jit(fn, compiler_options=FAST, **kw)


def _scheme(name):
  return name.split("_example")[0]


def _model(name, **over):
  return build_model({"sharing": _scheme(name), "trunk": TRUNK, **SCHEMES[name], **over}, GROUPS)


def _fixed_params(model, scale=0.7, seed=1):
  """Every leaf drawn from NumPy (not the model's init), so the oracles see plain numbers."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), X)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (scale * rng.normal(size=s.shape)).astype(np.float32), shapes)


# ---------------------------------------------------------------- NumPy oracles

def np_softmax(a):
  e = np.exp(a - a.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_expert(p, prefix, idx, x):
  h = x.reshape(len(x), -1)
  i = 0
  while f"{prefix}/block_{i}/Dense_0/kernel" in p:
    h = np.maximum(h @ p[f"{prefix}/block_{i}/Dense_0/kernel"][idx]
                   + p[f"{prefix}/block_{i}/Dense_0/bias"][idx], 0.0)
    i += 1
  return h


def np_heads(p, features):
  """{group: [T_g, B, n]} from per-task features in ORDER."""
  out = {"binary_1": [None, None], "regression_1": [None]}
  for t, name in enumerate(ORDER):
    g, r = ROWS[name]
    out[g][r] = features[t] @ p[f"heads/{g}/kernel"][r] + p[f"heads/{g}/bias"][r]
  return {g: np.stack(v) for g, v in out.items()}


def np_ple(p, x, levels, e, s):
  """Tang et al. (2020), written as the paper's equations, one loop per task and expert."""
  t_n, b = len(ORDER), len(x)
  task_in, shared_in = [x] * t_n, x
  for level in range(levels):
    name = "cgc" if level == levels - 1 else f"extraction_{level}"
    own = [[np_expert(p, f"{name}/task_experts", (t, j), task_in[t]) for j in range(e)]
           for t in range(t_n)]
    shared = [np_expert(p, f"{name}/shared_experts", (j,), shared_in) for j in range(s)]
    new = []
    for t in range(t_n):
      g = np_softmax(task_in[t].reshape(b, -1) @ p[f"{name}/task_gates"][t])
      experts = own[t] + shared  # task t's own experts first, then the shared ones
      new.append(sum(g[:, [k]] * experts[k] for k in range(e + s)))
    if level < levels - 1:
      g = np_softmax(shared_in.reshape(b, -1) @ p[f"{name}/shared_gate"])
      experts = [o for t in range(t_n) for o in own[t]] + shared
      shared_in = sum(g[:, [k]] * experts[k] for k in range(len(experts)))
    task_in = new
  return np_heads(p, task_in)


def np_smooth_step(x, gamma):
  x = np.asarray(x, np.float64)
  return np.piecewise(x, [x <= -gamma / 2, x >= gamma / 2],
                      [0.0, 1.0, lambda v: -2 * v ** 3 / gamma ** 3 + 3 * v / (2 * gamma) + 0.5])


def np_dselect_weights(z, w, gamma):
  """z [k, m], w [k] -> gate weights [2^m]: Hazimeh et al. (2021), Eq. for r(z) and the gate."""
  k, m = z.shape
  codes = np.array([[c == "1" for c in np.binary_repr(i, width=m)] for i in range(2 ** m)])
  s = np_smooth_step(z, gamma)
  r = np.array([[np.prod([s[j, b] if codes[i, b] else 1 - s[j, b] for b in range(m)])
                 for i in range(2 ** m)] for j in range(k)])
  return np_softmax(np.asarray(w, np.float64)) @ r


def np_dselect(p, x, gate, gamma=1.0):
  n = p["experts/block_0/Dense_0/kernel"].shape[0]
  experts = [np_expert(p, "experts", (j,), x) for j in range(n)]
  feats = []
  for t in range(len(ORDER)):
    if gate == "static":
      wts = np.broadcast_to(np_dselect_weights(p["gate/z_logits"][t], p["gate/w_logits"][t],
                                               gamma), (len(x), n))
    else:
      z = x @ p["gate/z_kernel"][t] + p["gate/z_bias"][t]
      w = x @ p["gate/w_kernel"][t] + p["gate/w_bias"][t]
      k = w.shape[-1]
      wts = np.stack([np_dselect_weights(z[i].reshape(k, -1), w[i], gamma) for i in range(len(x))])
    feats.append(sum(wts[:, [j]] * experts[j] for j in range(n)))
  return np_heads(p, feats)


# ---------------------------------------------------------------- forward golden values

def test_forward_equals_numpy(stepped):
  name, p = stepped["name"], stepped["fixed"]
  if name == "dselect_k_example":
    want = np_dselect(p, X, "example")
  else:
    want = np_ple(p, X, SCHEMES[name].get("num_levels", 1), SCHEMES[name]["num_task_experts"],
                  SCHEMES[name]["num_shared_experts"])
  out = stepped["forward"]
  assert set(out) == set(want)
  for g in want:
    np.testing.assert_allclose(out[g], want[g], rtol=2e-5, atol=2e-6, err_msg=f"{name} {g}")
  if name == "dselect_k_example":  # the golden case covers both smooth-step regions
    z = X @ p["gate/z_kernel"][0] + p["gate/z_bias"][0]
    assert np.any(np.abs(z) < 0.5) and np.any(np.abs(z) > 0.5)


def test_param_paths_and_layout():
  shapes = {n: {k: v.shape for k, v in paths.flatten(
      jax.eval_shape(_model(n).init, jax.random.PRNGKey(0), X)["params"]).items()}
      for n in ("cgc", "ple", "dselect_k")}
  heads = {"heads/binary_1/bias": (2, 1), "heads/binary_1/kernel": (2, W, 1),
           "heads/regression_1/bias": (1, 1), "heads/regression_1/kernel": (1, W, 1)}
  assert shapes["cgc"] == {"cgc/task_experts/block_0/Dense_0/kernel": (3, 1, F, W),
                           "cgc/task_experts/block_0/Dense_0/bias": (3, 1, W),
                           "cgc/shared_experts/block_0/Dense_0/kernel": (2, F, W),
                           "cgc/shared_experts/block_0/Dense_0/bias": (2, W),
                           "cgc/task_gates": (3, F, 3), **heads}
  assert shapes["ple"]["extraction_0/shared_gate"] == (F, 3 * 2 + 1)
  assert shapes["ple"]["extraction_0/task_gates"] == (3, F, 3)
  assert shapes["ple"]["cgc/task_gates"] == (3, W, 3)
  assert shapes["ple"]["cgc/task_experts/block_0/Dense_0/kernel"] == (3, 2, W, W)
  assert "cgc/shared_gate" not in shapes["ple"]
  assert shapes["dselect_k"]["gate/z_logits"] == (3, 2, 2)
  assert shapes["dselect_k"]["gate/w_logits"] == (3, 2)
  for name, s in shapes.items():
    lay = layout(name)
    shared = {k for k in s if re.fullmatch(lay.shared, k)}
    body = {k for k in s if re.fullmatch(lay.body, k)}
    assert shared and shared <= body, name
    assert shared == body, name  # per-task parts stay with the heads (as MMoE's gates)
    assert any(k.startswith(lay.blocks + "/block_0/") for k in shared), name
  assert not any(k.startswith("cgc/task") for k in shapes["cgc"]
                 if re.fullmatch(layout("cgc").shared, k))
  assert [k for k in shapes["dselect_k"] if re.fullmatch(layout("dselect_k").shared, k)] == [
      k for k in shapes["dselect_k"] if k.startswith("experts/")]


def test_experts_are_initialised_independently():
  experts = task_experts(TRUNK, 3, 2, True, "task_experts")
  params = _jit(experts.init, static_argnums=2)(
      jax.random.PRNGKey(0), X, False)["params"]
  k = np.asarray(params["block_0"]["Dense_0"]["kernel"])  # [T, E, ...]
  assert k.shape == (3, 2, F, W)
  flat = k.reshape(-1, k.shape[-2] * k.shape[-1])
  assert len({tuple(np.round(r, 6)) for r in flat}) == flat.shape[0]


# ---------------------------------------------------------------- DSelect-k gate in closed form

_weights = _jit(expert_weights, static_argnums=2)


def test_smooth_step_closed_form():
  x = np.array([-2.0, -0.5, -0.25, 0.0, 0.25, 0.5, 2.0], np.float32)
  g = 3.0
  xs = np.linspace(-2.5, 2.5, 41).astype(np.float32)
  s1, s3, d = _jit(lambda x, xs: (smooth_step(x, 1.0), smooth_step(xs, g), jax.vmap(jax.grad(
      lambda v: smooth_step(v, g)))(xs)))(x, xs)
  np.testing.assert_allclose(s1, [0, 0, 0.15625, 0.5, 0.84375, 1, 1], atol=1e-7)
  np.testing.assert_allclose(s3, np_smooth_step(xs, g), atol=1e-6)
  # C^1: the derivative is the cubic's inside and 0 outside, continuous at +-gamma/2.
  np.testing.assert_allclose(d, np.where(np.abs(xs) < g / 2, 1.5 / g - 6 * xs ** 2 / g ** 3, 0),
                             atol=1e-6)


def test_binary_codes_and_selectors_sum_to_one():
  np.testing.assert_array_equal(binary_codes(8)[[0, 1, 5, 7]],
                                [[0, 0, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1]])
  z = jnp.asarray(RNG.normal(size=(6, 3, 3)), jnp.float32)
  w = jnp.asarray(RNG.normal(size=(6, 3)), jnp.float32)
  weights, sel = _weights(z, w, 1.5)
  np.testing.assert_allclose(sel.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  assert np.all(np.asarray(weights) >= 0)
  for i in range(6):
    np.testing.assert_allclose(weights[i], np_dselect_weights(z[i], w[i], 1.5), rtol=1e-5,
                               atol=1e-7)


def test_large_logits_make_selectors_one_hot_and_the_gate_k_sparse():
  m, k, gamma = 3, 2, 1.0
  picks = [5, 2]
  codes = binary_codes(2 ** m)
  z = jnp.asarray(np.where(codes[picks], 1.0, -1.0) * 50 * gamma, jnp.float32)  # [k, m]
  w = jnp.asarray([0.3, -0.4], jnp.float32)
  weights, sel = _weights(z, w, gamma)
  np.testing.assert_array_equal(sel, np.eye(2 ** m)[picks])  # exactly one-hot
  want = np.zeros(2 ** m)
  want[picks] = np_softmax(np.asarray(w, np.float64))
  np.testing.assert_allclose(weights, want, rtol=1e-6)
  assert int(np.sum(np.asarray(weights) > 0)) == k


def test_selector_entropy_value():
  z = RNG.normal(size=(3, 2, 2)).astype(np.float32) * 0.4
  params = {"gate": {"z_logits": jnp.asarray(z)}}
  r = np.stack([np.stack([np_dselect_weights(z[t, j][None], [0.0], 2.0) for j in range(2)])
                for t in range(3)])
  want = -np.sum(r * np.log(r + 1e-6))
  value, sel = _jit(lambda p: (selector_entropy(p, gamma=2.0), selector_outputs(smooth_step(
      p["gate"]["z_logits"], 2.0))))(params)
  assert float(value) == pytest.approx(want, rel=1e-5)
  np.testing.assert_allclose(sel, r, rtol=1e-5)


# ---------------------------------------------------------------- every method, one step

# Whole strategies as a config asks for them, one per path: a loss weighting with per-task
# gradients (GradNorm's layer, the logged Gramian), the stored Jacobian of a non-Gramian
# aggregator, the representation, and on PLE (the deepest: CGC is its top level) the Gramian by
# rows (compiles cost ~2 s a path here, so the grid is kept to what differs per scheme).
PATHS = [dict(name="gradnorm", log_task_gradients=True), dict(aggregator="graddrop")]
ROWS_ENGINE = dict(aggregator="mgda", gramian_engine="rows")
REPRESENTATION = dict(aggregator="mgda", mode="representation")
LOSS_OPTIONS = {"static": dict(weights=(1.0, 0.5, 2.0))}
LOSS_WEIGHTED = [m for m in LOSS_WEIGHTINGS_REGISTRY if m != "gradnorm"]
AGGREGATOR_OPTIONS = {"constant": dict(weights=(0.2, 0.3, 0.5))}
GRAMIAN_WEIGHTED = [a for a in AGGREGATORS
                    if isinstance(AGGREGATORS.get(a)(**AGGREGATOR_OPTIONS.get(a, {})),
                                  GramianWeighted)]
LR = 0.1


class _Given(GramianWeighted):
  """Weights computed outside the step by a registered aggregator on this scheme's Gramian."""

  def __init__(self, w):
    self.w = w

  def weights(self, gram, rng=None):
    return self.w


class _GivenLoss(LossWeighting):
  """d total / d L_t computed outside the step by a registered loss weighting's own combine
  on this scheme's losses: the strategy then differentiates exactly sum_t c_t L_t."""

  def __init__(self, c):
    super().__init__(len(c))
    self.c = c

  def weights(self, state, rng):
    return self.c


@functools.lru_cache(maxsize=None)
def _weights_program():
  """Every Gramian-weighted aggregator's weights(G) in one program, compiled once: G is
  [3, 3] on every scheme, so the solvers (the slow compiles) are shared by all schemes."""
  aggs = [AGGREGATORS.get(a)(**AGGREGATOR_OPTIONS.get(a, {})) for a in GRAMIAN_WEIGHTED]
  return _jit(lambda g: jnp.stack([a.weights(g, jax.random.PRNGKey(2)) for a in aggs]))


def _aggregator_weights(gram) -> dict:
  w = np.asarray(_weights_program()(jnp.asarray(gram, jnp.float32)))
  return dict(zip(GRAMIAN_WEIGHTED, w))


@functools.lru_cache(maxsize=None)
def _cotangent_program():
  """d combine(init state, L) / d L of every other registered loss weighting, in one program."""
  methods = [LOSS_WEIGHTINGS_REGISTRY.get(m)(num_tasks=len(SPECS), **LOSS_OPTIONS.get(m, {}))
             for m in LOSS_WEIGHTED]
  return _jit(lambda l: jnp.stack([jax.grad(lambda v, m=m: m.combine(
      m.init(), v, jax.random.PRNGKey(3))[0])(l) for m in methods]))


def _config(name):
  c = tiny_config()  # its data is not built
  c.tasks = [dict(name=s.name, kind=s.kind) for s in SPECS]
  c.model = dict(sharing=_scheme(name), trunk=TRUNK, **SCHEMES[name])
  c.optimizer = dict(name="sgd", learning_rate=LR, schedule="constant")
  return c


def _task_losses(model, params, batch, z=None):
  out = model.apply(variables(params, z), batch["inputs"])
  return losses.task_losses(SPECS, GROUPS, out, batch["labels"], batch["mask"])


def _state(tx, params, strat):
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(1), weighting=strat.init_state())


def _gram(rows):
  rows = np.asarray(rows, np.float64).reshape(len(rows), -1)
  return rows @ rows.T


def _unstack(tree, n):
  return [jax.tree.map(lambda v, i=i: v[i], tree) for i in range(n)]


GRID = ("cgc", "ple", "dselect_k_example")


@pytest.fixture(scope="module", params=GRID)
def stepped(request):
  """Per scheme, on the fixed params of the NumPy oracles, two programs. (1) A step of each
  path in PATHS (and the representation), the per-task losses and gradients by one jax.grad
  per task (the oracle), the forward and the representation gradients. (2) One vmapped step
  of every other loss weighting through LossWeightingStrategy, with its own d total / d L on
  these losses, and of every Gramian-weighted aggregator through GramianStrategy and through
  JacobianStrategy, with its own weights on the oracle's Gramian: the solvers, the slow
  compiles, are then compiled once for all schemes."""
  name = request.param
  model, lay = _model(name), layout(_scheme(name))
  fixed = _fixed_params(model)
  params = jax.tree.map(jnp.asarray, fixed)
  mask = paths.mask(params, lay.shared)
  tx = optax.sgd(LR)
  kw = dict(model=model, tx=tx, specs=SPECS, groups=GROUPS,
            trainable=jax.tree.map(lambda _: True, params))
  weightings = PATHS + ([ROWS_ENGINE] if name == "ple" else [REPRESENTATION])
  steps, states = [], []
  for wcfg in weightings:
    strat = build_strategy(wcfg, len(SPECS), params, lay.shared, lay.blocks)
    steps.append(make_train_step(strategy=strat, **kw))
    states.append(_state(tx, params, strat))
  batch = jax.tree.map(jnp.asarray, BATCH)

  @_jit
  def run(states, params):
    # The oracle: the Jacobian of the per-task losses by jax.jacrev (one batched backward).
    out = dict(losses=_task_losses(model, params, batch),
               jac=jax.jacrev(lambda p: _task_losses(model, p, batch))(params),
               steps=[s(st, batch) for s, st in zip(steps, states)],
               forward=model.apply({"params": params}, batch["inputs"]))
    if name != "ple":  # d L_t / d (shared representation): per-task copies vs jacrev
      _, z = model.apply({"params": params}, batch["inputs"], mutable=["perturbations"])
      zero = jnp.zeros_like(z["perturbations"][SHARED_FEATURES])
      out["copies"] = jax.grad(lambda e: jnp.sum(_task_losses(
          model, params, batch, {SHARED_FEATURES: zero, TASK_FEATURES: e})))(
              jnp.zeros((len(SPECS),) + zero.shape))
      out["each"] = jax.jacrev(lambda v: _task_losses(model, params, batch,
                                                      {SHARED_FEATURES: v}))(zero)
    return out

  out = jax.device_get(run(states, params))
  grads = [flat_params(jax.tree.map(lambda v, t=t: v[t], out["jac"])) for t in range(len(SPECS))]
  keys = sorted(k for k in grads[0] if re.fullmatch(lay.shared, k))
  gram = _gram([np.concatenate([g[k].ravel() for k in keys]) for g in grads])
  agg_w = jnp.asarray(np.stack(list(_aggregator_weights(gram).values())))
  loss_c = _cotangent_program()(jnp.asarray(out["losses"]))

  @_jit
  def given_steps(agg_w, loss_c):
    def one(strat):
      return make_train_step(strategy=strat, **kw)(_state(tx, params, strat), batch)
    return dict(
        loss=jax.vmap(lambda c: one(LossWeightingStrategy(_GivenLoss(c), len(SPECS))))(loss_c),
        gramian=jax.vmap(lambda w: one(GramianStrategy(_Given(w), len(SPECS), mask)))(agg_w),
        jacobian=jax.vmap(lambda w: one(JacobianStrategy(_Given(w), len(SPECS), mask)))(agg_w))

  given = jax.device_get(given_steps(agg_w, loss_c))
  runs = [(str(w), st, m, None) for w, (st, m) in zip(weightings, out["steps"])]
  runs += [(f"weighting={m} mode=loss", st, mt, c) for m, (st, mt), c in
           zip(LOSS_WEIGHTED, _unstack(given["loss"], len(LOSS_WEIGHTED)), np.asarray(loss_c))]
  for path in ("gramian", "jacobian"):
    runs += [(f"aggregator={a} mode={path}", st, m, w) for a, (st, m), w in
             zip(GRAMIAN_WEIGHTED, _unstack(given[path], len(GRAMIAN_WEIGHTED)),
                 np.asarray(agg_w))]
  return dict(name=name, model=model, params=flat_params(params), shared=re.compile(lay.shared),
              runs=runs, weightings=weightings, steps=out["steps"], grads=grads, gram=gram,
              forward=out["forward"], fixed=flat_params(fixed),
              copies=out.get("copies"), each=out.get("each"))


def test_every_method_takes_a_finite_step_that_moves_the_parameters(stepped):
  before = stepped["params"]
  shared = {k for k in before if stepped["shared"].fullmatch(k)}
  labels = " ".join(label for label, *_ in stepped["runs"])
  for method in list(LOSS_WEIGHTINGS_REGISTRY) + list(AGGREGATORS):
    assert re.search(rf"(=|'){method}[ ']", labels), method
  for label, state, metrics, _ in stepped["runs"]:
    what = f"{stepped['name']} {label}"
    after = flat_params(state.params)
    assert all(np.all(np.isfinite(v)) for v in after.values()), what
    assert np.all(np.isfinite(metrics["task_weight"])), what
    moved = {k for k in before if not np.array_equal(after[k], before[k])}
    assert shared & moved, f"{what}: no shared parameter moved"
    assert any(k.startswith("heads/") for k in moved), what


def test_gramian_equals_jjt_of_per_task_grads_on_the_shared_params(stepped):
  want = stepped["gram"]
  checked = 0
  for label, _, m, _ in stepped["runs"]:
    if "task_grad_norm" not in m or "representation" in label:
      continue
    norms = np.asarray(m["task_grad_norm"], np.float64)
    got = np.asarray(m["task_grad_cosine"], np.float64) * np.outer(norms, norms)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6 * np.abs(want).max(),
                               err_msg=f"{stepped['name']} {label}")
    checked += 1
  assert checked == 2 * len(GRAMIAN_WEIGHTED) + 2 + (stepped["name"] == "ple")  # + PATHS


def test_each_update_is_the_methods_combination_of_the_per_task_gradients(stepped):
  """SGD, against the per-task jax.grad oracle: a loss weighting moves every leaf by
  -lr sum_t c_t g_t (c = d total / d L); an aggregator moves the shared leaves by
  -lr sum_t w_t g_t (w: its weights on the oracle Gramian, as logged) and every other leaf
  (heads, a task's own experts and gate) by -lr sum_t g_t, its own task's plain gradient."""
  before, checked = stepped["params"], 0
  for label, state, m, w in stepped["runs"]:
    if "'rows'" in label:  # the whole mgda strategy, on its own weights
      w = _aggregator_weights(stepped["gram"])["mgda"]
    if w is None:
      continue
    loss = "mode=loss" in label
    if not loss:
      np.testing.assert_allclose(m["task_weight"], w, rtol=1e-4, atol=1e-6, err_msg=label)
    after = flat_params(state.params)
    for k in before:
      coef = w if loss or stepped["shared"].fullmatch(k) else np.ones(len(w))
      want = before[k] - LR * sum(c * g[k] for c, g in zip(coef, stepped["grads"]))
      np.testing.assert_allclose(after[k], want, rtol=1e-4, atol=1e-6,
                                 err_msg=f"{stepped['name']} {label} {k}")
    checked += 1
  assert checked == 2 * len(GRAMIAN_WEIGHTED) + len(LOSS_WEIGHTED) + (stepped["name"] == "ple")
  weights = {label: w for label, _, _, w in stepped["runs"]}
  assert not np.allclose(weights["aggregator=mgda mode=gramian"], 1 / 3)  # non-trivial
  assert not np.allclose(weights["weighting=static mode=loss"], 1.0)


def test_only_the_owner_reaches_a_task_only_parameter(stepped):
  """The layout's claim: a shared leaf is reached by several tasks' losses; any other leaf
  (heads, a task's own experts and gate) only by its owner's, in its own row of task_order."""
  rows = [ORDER.index(s.name) for s in SPECS]  # grads follow the config order, rows task_order
  for k in stepped["params"]:
    reached = [t for t, g in enumerate(stepped["grads"]) if np.any(g[k] != 0)]
    if stepped["shared"].fullmatch(k):
      if not re.fullmatch(r"extraction_\d+/task_gates", k):  # the documented exception
        assert len(reached) > 1, (stepped["name"], k, reached)
      continue
    if k.startswith("heads/"):
      continue
    assert reached, (stepped["name"], k)
    for t in reached:
      assert np.all(np.delete(stepped["grads"][t][k], rows[t], axis=0) == 0), (k, t)


def test_representation_path(stepped):
  name = stepped["name"]
  if name == "ple":
    params = jax.tree.map(jnp.asarray, paths.unflatten(stepped["params"]))
    with pytest.raises(ValueError, match=r"sharing 'ple' with 2 levels .* mode='representation'"):
      jax.eval_shape(lambda p: stepped["model"].apply({"params": p}, X,
                                                      mutable=["perturbations"]), params)
    return
  each = np.asarray(stepped["each"])  # [T (config order), B, experts, D]
  assert each.shape[:2] == (3, N)  # batch first, so microbatches split it
  assert np.all(np.abs(each).sum(axis=(1, 2, 3)) > 0)
  # Copy r feeds task_order[r]'s gate: one backward pass gives every task's gradient.
  rows = [SPECS.index(next(s for s in SPECS if s.name == n)) for n in ORDER]
  np.testing.assert_allclose(stepped["copies"], each[rows], rtol=1e-5, atol=1e-7)
  # The train step hands the copies over in config order: MGDA-UB's weights are MGDA's on the
  # representation Gramian of tasks a, b, c (not of a, c, b).
  _, m = stepped["steps"][stepped["weightings"].index(REPRESENTATION)]
  want = _aggregator_weights(_gram(each))["mgda"]
  np.testing.assert_allclose(m["task_weight"], want, rtol=1e-4, atol=1e-6)
  assert not np.allclose(want, np.asarray(want)[[0, 2, 1]], atol=1e-3)  # the order matters


# ---------------------------------------------------------------- end to end, transfer, errors

def test_static_gate_forward_equals_numpy():
  """gate='static' beside the grid (which runs gate='example'): the NumPy forward."""
  model = _model("dselect_k")
  fixed = _fixed_params(model)
  out = _jit(lambda q: model.apply({"params": q}, X))(fixed)
  want = np_dselect(flat_params(fixed), X, "static")
  for g in want:
    np.testing.assert_allclose(out[g], want[g], rtol=2e-5, atol=2e-6, err_msg=g)


def test_entropy_regularizer_trains_static_gates_to_k_sparse():
  """config.regularizers' selector_entropy, through build_program's train step (200 Adam steps
  in one scan): every selector reaches exactly one expert, so each gate mixes at most k = 2 of
  the 8 experts, with weights summing to 1."""
  c = _config("dselect_k")
  c.tasks = [dict(name="y1", kind="regression"), dict(name="y2", kind="regression")]
  c.model = dict(sharing="dselect_k", trunk=dict(name="mlp", features=(4,)), num_experts=8,
                 num_selectors=2, gamma=1.0)
  c.regularizers = [dict(name="selector_entropy", weight=1.0, gamma=1.0)]
  c.optimizer = dict(name="adam", learning_rate=0.05, schedule="constant")
  validate_config(c)
  rng = np.random.default_rng(5)
  x = rng.normal(size=(200, 32, F)).astype(np.float32)
  y = x @ rng.normal(size=(F, 2)).astype(np.float32)
  program = build_program(c, jnp.asarray(x[0, :1]))
  batches = {"inputs": x, "labels": {"y1": y[..., 0], "y2": y[..., 1]},
             "mask": {"y1": np.ones((200, 32), bool), "y2": np.ones((200, 32), bool)}}
  train_scan = _jit(lambda st, bs: jax.lax.scan(program.train_step, st, bs))
  state, metrics = train_scan(program.state, jax.tree.map(jnp.asarray, batches))
  assert metrics["regularizer"][-1] < 1e-3 * metrics["regularizer"][0]
  gate = state.params["gate"]
  weights, sel = _weights(gate["z_logits"], gate["w_logits"], 1.0)
  assert np.all(np.isin(np.asarray(sel), [0.0, 1.0])), sel  # smooth-step saturated: exact 0/1
  assert np.all((np.asarray(weights) > 0).sum(-1) <= 2), weights
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(metrics["task_loss"])))


def test_transfer_plans_use_the_declared_layout():
  for name in ("cgc", "ple", "dselect_k"):
    c = _config(name)
    lay = layout(name)
    c.transfer = dict(strategy="linear_probe", upstream="/nonexistent")
    plan = transfer.plan(c)
    assert plan.config.param_groups[0] == (lay.body, None)
    assert plan.config.init_from.load == lay.body
    c.transfer = dict(strategy="cached_probe", upstream="/nonexistent")
    with pytest.raises(ValueError, match=f"sharing '{name}' has per-task or per-expert bodies"):
      transfer.plan(c)
  c = _config("cgc")
  c.transfer = dict(strategy="finetune", upstream="/x", trunk_lr_mult=0.1)
  groups = transfer.plan(c).config.param_groups
  assert groups[0] == ("cgc/shared_experts/block_0/.*", 0.1)


@pytest.mark.parametrize("over,match", [
    (dict(sharing="dselect_k", num_experts=6), r"num_experts=6 must be a power of 2"),
    (dict(sharing="dselect_k", gate="topk"), r"gate='topk'; valid: \['static', 'example'\]"),
    (dict(sharing="dselect_k", gamma=0.0), r"gamma=0.0 must be a number > 0"),
    (dict(sharing="dselect_k", num_selectors=0), r"num_selectors=0 must be an integer >= 1"),
    (dict(sharing="cgc", num_task_experts=0), r"'cgc': num_task_experts=0 must be an integer"),
    (dict(sharing="ple", num_levels=0), r"'ple': num_levels=0 must be an integer >= 1"),
    (dict(sharing="cgc", num_levels=2), r"unknown model options \['num_levels'\]"),
])
def test_bad_options_name_themselves(over, match):
  cfg = {"sharing": "cgc", "trunk": TRUNK, **over}
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(build_model(cfg, GROUPS).init, jax.random.PRNGKey(0), X)


def test_entropy_regularizer_config_is_checked():
  c = _config("dselect_k")
  c.regularizers = [dict(name="selector_entropy", weight=0.1, gamma=2.0)]
  with pytest.raises(ConfigError, match=r"regularizers\[0\].gamma = 2.0 must equal "
                                        r"config.model.gamma = 1.0"):
    validate_config(c)
  c.model.gate = "example"
  with pytest.raises(ConfigError, match=r"gate='example' \(needs 'dselect_k', 'static'\)"):
    validate_config(c)
  c = _config("cgc")
  c.regularizers = [dict(name="selector_entropy", weight=0.1, gamma=1.0)]
  with pytest.raises(ConfigError, match=r"sharing='cgc'"):
    validate_config(c)
  with pytest.raises(ValueError, match="needs gamma="):
    selector_entropy({"gate": {"z_logits": jnp.zeros((1, 1, 1))}})
