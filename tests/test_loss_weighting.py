"""Loss weightings: weights after known steps vs NumPy re-derivations, validation, jit and grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.weighting.loss import LOSS_WEIGHTINGS, StepInfo

OPTIONS = {"static": dict(weights=(1.0, 0.5, 2.0)), "gradnorm": dict(layer_regex="trunk/.*"),
           "dwa": dict(window_steps=2)}


def make(name, num_tasks=3, **options):
  return LOSS_WEIGHTINGS.get(name)(num_tasks=num_tasks, **{**OPTIONS.get(name, {}), **options})


def info(losses, step=0, **kw):
  return StepInfo(step=jnp.int32(step), losses=jnp.asarray(losses, jnp.float32), **kw)


def np_adam(x, g, m, v, k, lr, b1=0.9, b2=0.999, eps=1e-8):
  m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
  return x - lr * (m / (1 - b1 ** k)) / (np.sqrt(v / (1 - b2 ** k)) + eps), m, v


def test_unknown_name_lists_valid_names():
  with pytest.raises(KeyError, match=r"unknown loss weighting 'foo'.*'dwa'.*'uncertainty'"):
    LOSS_WEIGHTINGS.get("foo")
  assert set(LOSS_WEIGHTINGS) == {"equal", "static", "uncertainty", "dwa", "gradnorm", "rlw",
                                  "famo"}


def test_equal_and_static():
  losses = jnp.array([1.0, 2.0, 3.0])
  total, w = jax.jit(make("equal").combine)({}, losses, None)
  assert float(total) == pytest.approx(6.0) and np.allclose(w, 1.0)
  total, w = jax.jit(make("static").combine)({}, losses, None)
  assert float(total) == pytest.approx(1.0 + 1.0 + 6.0) and np.allclose(w, [1.0, 0.5, 2.0])
  with pytest.raises(ValueError, match="got 2 weights for 3 tasks"):
    make("static", weights=(1.0, 1.0))
  with pytest.raises(ValueError, match="non-negative"):
    make("static", weights=(1.0, -1.0, 1.0))
  with pytest.raises(ValueError, match="non-negative"):
    make("static", weights=(1.0, float("nan"), 1.0))
  with pytest.raises(ValueError, match="needs `weights`"):
    LOSS_WEIGHTINGS.get("static")(num_tasks=3)
  with pytest.raises(ValueError, match=r"shape \(2,\), expected \(3,\)"):
    make("equal").combine({}, jnp.ones(2), None)


def test_uncertainty_total_grad_and_fixed_point():
  m = make("uncertainty", optimizer="sgd", lr=0.1)
  s = np.array([0.0, 0.5, -1.0], np.float32)
  L = np.array([0.2, 1.0, 4.0], np.float32)
  state = {**m.init(), "log_vars": jnp.asarray(s)}
  f = lambda st, l: m.combine(st, l, None)
  (total, w), (gs, gl) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(state, L)
  assert float(total) == pytest.approx(np.sum(np.exp(-s) * L + s), rel=1e-6)
  np.testing.assert_allclose(w, np.exp(-s), rtol=1e-6)
  np.testing.assert_allclose(gl, np.exp(-s), rtol=1e-6)
  np.testing.assert_allclose(gs["log_vars"], 1 - np.exp(-s) * L, rtol=1e-6)
  # SGD on s with fixed losses settles at s = log L (weights 1/L).
  update, grad = jax.jit(m.update), jax.jit(jax.grad(lambda st: f(st, L)[0]))
  state = m.init()
  for k in range(150):
    state = update(state, info(L, k, state_grad=grad(state)))
  np.testing.assert_allclose(state["log_vars"], np.log(L), atol=1e-3)
  # Adam: each step moves s towards log L.
  m = make("uncertainty", lr=0.05)
  L = np.array([0.2, 2.0, 4.0], np.float32)
  state = m.init()
  update, grad = jax.jit(m.update), jax.jit(jax.grad(lambda st: m.combine(st, L, None)[0]))
  dist = np.abs(np.log(L))
  for k in range(5):
    state = update(state, info(L, k, state_grad=grad(state)))
    new = np.abs(np.asarray(state["log_vars"]) - np.log(L))
    assert np.all(new < dist)
    dist = new


def test_dwa_weights_over_windows():
  m = make("dwa", window_steps=2, temperature=2.0)
  seq = np.array([[4.0, 2.0, 1.0], [2.0, 2.0, 1.0],     # window 0: mean (3, 2, 1)
                  [3.0, 1.0, 1.0], [1.0, 1.0, 0.5],     # window 1: mean (2, 1, .75)
                  [1.0, 0.8, 0.5], [1.0, 0.6, 0.5]])    # window 2: mean (1, .7, .5)
  state, seen = m.init(), []
  combine, update = jax.jit(m.combine), jax.jit(m.update)
  for k, L in enumerate(seq):
    seen.append(np.asarray(combine(state, jnp.asarray(L), None)[1]))
    state = update(state, info(L, k))
  def np_dwa(last, before):
    e = np.exp(last / before / 2.0)
    return 3 * e / e.sum()
  assert np.allclose(seen[:4], 1.0)  # windows 0 and 1: no ratio yet
  for k in (4, 5):                   # window 2: ratio of windows 1 and 0
    np.testing.assert_allclose(
        seen[k], np_dwa(np.array([2.0, 1.0, 0.75]), np.array([3.0, 2.0, 1.0])), rtol=1e-5)
  w3 = np.asarray(combine(state, jnp.asarray(seq[0]), None)[1])   # after 3 windows
  np.testing.assert_allclose(w3, np_dwa(np.array([1.0, 0.7, 0.5]), np.array([2.0, 1.0, 0.75])),
                             rtol=1e-5)
  # One more step stays in window 3: same weights; its ratio is windows 2 / 1.
  state = update(state, info([9.0, 9.0, 9.0], 6))
  np.testing.assert_allclose(combine(state, jnp.asarray(seq[0]), None)[1], w3, rtol=1e-6)
  assert w3.sum() == pytest.approx(3.0)


def np_gradnorm(w, norms, losses, l0, alpha, lr, min_weight):
  G = w * norms
  r = (losses / l0) / np.mean(losses / l0)
  target = G.mean() * r ** alpha
  w = w - lr * np.sign(G - target) * norms
  w = np.maximum(w, min_weight)
  return len(w) * w / w.sum()


def test_gradnorm_two_updates_vs_numpy():
  m = make("gradnorm", alpha=0.12, lr=0.1)
  assert m.needs_layer_grad_norms and not m.needs_new_losses and m.layer_regex == "trunk/.*"
  norms = [np.array([1.0, 3.0, 0.5]), np.array([1.2, 2.0, 0.4])]
  losses = [np.array([2.0, 1.0, 0.5]), np.array([1.0, 0.9, 0.25])]
  update = jax.jit(m.update)
  state, w, l0 = m.init(), np.ones(3), losses[0]
  for k in range(2):
    state = update(state, info(losses[k], k, layer_grad_norms=jnp.asarray(norms[k])))
    w = np_gradnorm(w, norms[k], losses[k], l0, 0.12, 0.1, 1e-3)
    np.testing.assert_allclose(state["weights"], w, rtol=1e-5)
  np.testing.assert_allclose(state["initial_losses"], l0)
  total, applied = jax.jit(m.combine)(state, jnp.asarray(losses[1]), None)
  np.testing.assert_allclose(applied, w, rtol=1e-5)
  assert float(total) == pytest.approx(float(np.dot(w, losses[1])), rel=1e-5)
  # The task with the largest gradient norm is weighted down, as the paper intends.
  assert np.argmin(w) == 1 and w.sum() == pytest.approx(3.0)
  # A huge step is clipped: weights stay positive and sum to T.
  big = make("gradnorm", lr=100.0)
  st = jax.jit(big.update)(big.init(), info(losses[0], layer_grad_norms=jnp.asarray(norms[0])))
  assert np.all(np.asarray(st["weights"]) > 0) and float(st["weights"].sum()) == pytest.approx(3.0)
  with pytest.raises(ValueError, match="needs `layer_regex`"):
    LOSS_WEIGHTINGS.get("gradnorm")(num_tasks=3)
  with pytest.raises(ValueError, match="needs StepInfo.layer_grad_norms"):
    m.update(m.init(), info(losses[0]))


def test_rlw_weights():
  m = make("rlw", num_tasks=4)
  combine = jax.jit(m.combine)
  L = jnp.array([1.0, 2.0, 3.0, 4.0])
  t1, w1 = combine({}, L, jax.random.key(0))
  _, w1b = combine({}, L, jax.random.key(0))
  _, w2 = combine({}, L, jax.random.key(1))
  assert np.all(np.asarray(w1) > 0) and float(w1.sum()) == pytest.approx(4.0)
  np.testing.assert_array_equal(w1, w1b)
  assert not np.allclose(w1, w2)
  assert float(t1) == pytest.approx(float(np.dot(w1, L)), rel=1e-6)
  z = np.asarray(jax.random.normal(jax.random.key(0), (4,)))
  np.testing.assert_allclose(w1, 4 * np.exp(z) / np.exp(z).sum(), rtol=1e-5)
  with pytest.raises(ValueError, match="PRNG key"):
    m.combine({}, L, None)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_famo_combine_and_update_vs_numpy(optimizer):
  m = make("famo", lr=0.1, gamma=0.01, eps=1e-8, optimizer=optimizer)
  assert m.needs_new_losses and not m.needs_layer_grad_norms
  xi = np.array([0.3, -0.2, 0.0])
  L = np.array([0.5, 2.0, 1.0])
  state = {**m.init(), "logits": jnp.asarray(xi, jnp.float32)}
  f = lambda st, l: m.combine(st, l, None)
  (total, w), (gs, gl) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
      state, jnp.asarray(L, jnp.float32))
  z = np.exp(xi) / np.exp(xi).sum()
  c = 1 / np.sum(z / (L + 1e-8))
  assert float(total) == pytest.approx(c * np.sum(z * np.log(L + 1e-8)), rel=1e-5)
  np.testing.assert_allclose(w, c * z / L, rtol=1e-5)
  np.testing.assert_allclose(gl, w, rtol=1e-5)    # d total / d L_t = the weights reported
  assert float(np.sum(w)) == pytest.approx(1.0)
  assert np.allclose(gs["logits"], 0.0)          # ξ is not learned through total
  # Two updates vs NumPy.
  olds = [L, np.array([0.4, 1.9, 0.5])]
  news = [np.array([0.4, 1.9, 0.5]), np.array([0.3, 1.85, 0.45])]
  update = jax.jit(m.update)
  m_, v_ = np.zeros(3), np.zeros(3)
  for k in range(2):
    state = update(state, info(olds[k], k, new_losses=jnp.asarray(news[k], jnp.float32)))
    delta = np.log(olds[k] + 1e-8) - np.log(news[k] + 1e-8)
    z = np.exp(xi) / np.exp(xi).sum()
    g = z * (delta - z @ delta) + 0.01 * xi
    if optimizer == "sgd":
      xi = xi - 0.1 * g
    else:
      xi, m_, v_ = np_adam(xi, g, m_, v_, k + 1, 0.1)
    np.testing.assert_allclose(state["logits"], xi, rtol=1e-5, atol=1e-5)
    if k == 0:
      # Task 2 halved its loss, task 1 barely moved: task 1 gains logit on task 2 (was -0.2).
      assert xi[1] - xi[2] > -0.2
  with pytest.raises(ValueError, match="needs StepInfo.new_losses"):
    m.update(m.init(), info(L))


@pytest.mark.parametrize("name", sorted(LOSS_WEIGHTINGS))
def test_jitted_train_step_for_every_method(name):
  """What the train step does: grads of total w.r.t. (params, state), then update, all under jit."""
  m = make(name)
  targets = jnp.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])

  def per_task(p):
    return jnp.sum((p["W"][None] - targets) ** 2, axis=1)

  @jax.jit
  def step(params, state, k, rng):
    losses_fn = lambda p, st: m.combine(st, per_task(p), rng)
    grad_fn = jax.value_and_grad(losses_fn, argnums=(0, 1), has_aux=True)
    (total, w), (gp, gs) = grad_fn(params, state)
    losses = per_task(params)
    norms = jnp.stack([jnp.linalg.norm(jax.grad(lambda p: per_task(p)[t])(params)["W"])
                       for t in range(3)]) if m.needs_layer_grad_norms else None
    new_params = jax.tree.map(lambda x, g: x - 0.05 * g, params, gp)
    new = per_task(new_params) if m.needs_new_losses else None
    s = m.update(state, StepInfo(k, jax.lax.stop_gradient(losses), gs, norms, new, rng))
    return new_params, s, total, w, gs

  params, state = {"W": jnp.zeros(2)}, m.init()
  structure = jax.tree.structure(state)
  for k in range(4):
    params, state, total, w, gs = step(params, state, jnp.int32(k), jax.random.key(k))
    frozen = {key: v for key, v in gs.items() if key != "log_vars"}  # only UW's s learns via total
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(frozen))
    assert "log_vars" not in gs or np.any(np.asarray(gs["log_vars"]) != 0)
    assert jax.tree.structure(state) == structure
    assert all(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(state))
    assert w.shape == (3,) and np.all(np.isfinite(w)) and np.isfinite(float(total))
  assert float(per_task(params).sum()) < float(per_task({"W": jnp.zeros(2)}).sum())
