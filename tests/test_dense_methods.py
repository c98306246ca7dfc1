"""Every weighting method and aggregator on the dense models (hard SegNet, MTAN, single-task
SegNets; conv decoders) on dense_shapes, one SGD step each, checked against per-task jax.grad:
the logged Gramian is J J^T on the scheme's shared parameters, every update is the method's
combination of the per-task gradients (its own weights on this model's Gramian or losses),
and nothing is NaN. The machinery (weights computed by each registered method, then one
vmapped step per path) is test_moe_family's, so the solvers compile once."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import flat_params
from mtl_jax import losses, paths
from mtl_jax.data import DATASETS
from mtl_jax.models import build_model
from mtl_jax.models.sharing import SHARED_FEATURES, layout, variables
from mtl_jax.step import make_train_step
from mtl_jax.tasks import TaskSpec, group_tasks
from mtl_jax.weighting import AGGREGATORS
from mtl_jax.weighting.factory import build_strategy
from mtl_jax.weighting.gramian_strategy import GramianStrategy
from mtl_jax.weighting.loss import LOSS_WEIGHTINGS
from mtl_jax.weighting.loss_strategy import LossWeightingStrategy
from test_moe_family import (GRAMIAN_WEIGHTED, LOSS_WEIGHTED, _aggregator_weights,
                             _cotangent_program, _Given, _GivenLoss, _gram, _jit, _state,
                             _unstack)

SPECS = (TaskSpec("segmentation", "segmentation", 4), TaskSpec("depth", "depth"),
         TaskSpec("normal", "normals", 3))
GROUPS = group_tasks(SPECS)
SEG = dict(name="segnet", features=(4,), convs_per_level=(0,), norm_groups=2)  # one level
SCHEMES = {"hard": dict(sharing="hard"), "mtan": dict(sharing="mtan"),
           "single_task": dict(sharing="single_task")}
LR = 0.05
# Real strategies, one per path that differs per scheme: a loss weighting with per-task
# gradients (GradNorm's layer, the logged Gramian) and a non-Gramian aggregator on the stored
# Jacobian; on hard also MGDA-UB on the SegNet's feature map. (The Jacobian path of the
# Gramian-weighted aggregators and the rows engine are scheme-independent code, tested on the
# MoE family; each costs a compile of these conv nets.)
PATHS = [dict(name="gradnorm", log_task_gradients=True), dict(aggregator="graddrop")]
EXTRA = {"hard": dict(aggregator="mgda", mode="representation")}


@pytest.fixture(scope="module")
def batch():
  train = DATASETS.get("dense_shapes")(size=8, num_train=6, num_validation=1, num_test=0,
                                       num_classes=4, missing_rate=0.2, seed=3).train
  mask = {k: np.asarray(v) for k, v in train.mask.items()}
  mask["depth"][0] = False  # an unlabelled example: masked out, never NaN
  return jax.tree.map(jnp.asarray, {"inputs": train.inputs, "labels": train.labels, "mask": mask})


def _task_losses(model, params, batch, z=None):
  out = model.apply(variables(params, z), batch["inputs"])
  return losses.task_losses(SPECS, GROUPS, out, batch["labels"], batch["mask"])


@pytest.fixture(scope="module", params=list(SCHEMES))
def stepped(request, batch):
  name = request.param
  model = build_model(dict(SCHEMES[name], trunk=SEG, decoder=dict(name="conv")), GROUPS)
  lay = layout(SCHEMES[name]["sharing"])
  params = model.init(jax.random.PRNGKey(0), batch["inputs"])["params"]
  mask = paths.mask(params, lay.shared)
  tx = optax.sgd(LR)
  kw = dict(model=model, tx=tx, specs=SPECS, groups=GROUPS,
            trainable=jax.tree.map(lambda _: True, params))
  weightings = PATHS + ([EXTRA[name]] if name in EXTRA else [])
  steps, states = [], []
  for wcfg in weightings:
    strat = build_strategy(wcfg, len(SPECS), params, lay.shared, lay.blocks)
    steps.append(make_train_step(strategy=strat, **kw))
    states.append(_state(tx, params, strat))

  @_jit
  def run(states, params):
    out = dict(losses=_task_losses(model, params, batch),
               jac=jax.jacrev(lambda p: _task_losses(model, p, batch))(params),
               steps=[s(st, batch) for s, st in zip(steps, states)])
    if name == "hard":  # d L_t / d (the SegNet's feature map)
      _, z = model.apply({"params": params}, batch["inputs"], mutable=["perturbations"])
      zero = jnp.zeros_like(z["perturbations"][SHARED_FEATURES])
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
        gramian=jax.vmap(lambda w: one(GramianStrategy(_Given(w), len(SPECS), mask)))(agg_w))

  given = jax.device_get(given_steps(agg_w, loss_c))
  runs = [(str(w), st, m, None) for w, (st, m) in zip(weightings, out["steps"])]
  runs += [(f"weighting={m} mode=loss", st, mt, c) for m, (st, mt), c in
           zip(LOSS_WEIGHTED, _unstack(given["loss"], len(LOSS_WEIGHTED)), np.asarray(loss_c))]
  for path in ("gramian",):
    runs += [(f"aggregator={a} mode={path}", st, m, w) for a, (st, m), w in
             zip(GRAMIAN_WEIGHTED, _unstack(given[path], len(GRAMIAN_WEIGHTED)),
                 np.asarray(agg_w))]
  return dict(name=name, params=flat_params(params), shared=re.compile(lay.shared), runs=runs,
              weightings=weightings, steps=out["steps"], grads=grads, gram=gram,
              losses=np.asarray(out["losses"]), each=out.get("each"))


def test_every_method_takes_a_finite_step_on_every_scheme(stepped):
  assert np.all(np.isfinite(stepped["losses"])) and np.all(stepped["losses"] > 0)
  labels = " ".join(label for label, *_ in stepped["runs"])
  for method in list(LOSS_WEIGHTINGS) + list(AGGREGATORS):
    assert re.search(rf"(=|'){method}[ ']", labels), method
  before = stepped["params"]
  shared = {k for k in before if stepped["shared"].fullmatch(k)}
  for label, state, metrics, _ in stepped["runs"]:
    what = f"{stepped['name']} {label}"
    after = flat_params(state.params)
    assert all(np.all(np.isfinite(v)) for v in after.values()), what
    assert np.all(np.isfinite(metrics["task_weight"])), what
    moved = {k for k in before if not np.array_equal(after[k], before[k])}
    assert shared & moved and any(k.startswith("heads/") for k in moved), what


def test_gramian_is_jjt_of_the_per_task_gradients(stepped):
  want, checked = stepped["gram"], 0
  assert np.all(np.diag(want) > 0)
  for label, _, m, _ in stepped["runs"]:
    if "task_grad_norm" not in m or "representation" in label:
      continue
    norms = np.asarray(m["task_grad_norm"], np.float64)
    got = np.asarray(m["task_grad_cosine"], np.float64) * np.outer(norms, norms)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6 * np.abs(want).max(),
                               err_msg=f"{stepped['name']} {label}")
    checked += 1
  assert checked == len(GRAMIAN_WEIGHTED) + 2  # + gradnorm's logged Gramian, graddrop's Jacobian


def test_each_update_is_the_methods_combination_of_the_per_task_gradients(stepped):
  """SGD: a loss weighting moves every leaf by -lr sum_t c_t g_t; an aggregator moves the
  shared leaves by -lr sum_t w_t g_t and the task-only ones (heads, MTAN's attention, a
  single-task column) by -lr sum_t g_t (each reached by its own task only)."""
  before, checked = stepped["params"], 0
  for label, state, m, w in stepped["runs"]:
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
  assert checked == len(GRAMIAN_WEIGHTED) + len(LOSS_WEIGHTED)


def test_representation_path_on_the_hard_segnet(stepped):
  if stepped["name"] != "hard":
    pytest.skip("hard sharing only: mtan has none (test_dense_models), single_task no shared")
  each = np.asarray(stepped["each"])  # [T, B, H, W, D]
  assert each.shape[:2] == (3, 6) and np.all(np.abs(each).sum(axis=(1, 2, 3, 4)) > 0)
  _, m = stepped["steps"][stepped["weightings"].index(EXTRA["hard"])]
  want = _aggregator_weights(_gram(each))["mgda"]
  np.testing.assert_allclose(m["task_weight"], want, rtol=1e-4, atol=1e-6)
