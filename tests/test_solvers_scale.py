"""The batched solvers at T = 64 and 128 against float64 oracles (quadprog, SciPy, NumPy).

Each aggregator's `weights` is jitted once per T on the Gramian (so P costs no compile);
the direction wᵀJ and the oracles are float64 NumPy. Three Jacobians per T:
`wide` (P = 3T, rows scaled over two decades, a quarter conflicting with row 0),
`tall` (P = T/2: rank-deficient Gramian) and `dup` (wide with its second half a copy
of the first and one zero row: rank-deficient with P > T). Errors are
||ours - ref|| / ||ref|| on the direction; the tolerances are stated per method and
sit about 10x above the largest error measured in float32 (docs/weighting.md).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.weighting import AGGREGATORS, pcgrad_weights

quadprog = pytest.importorskip("quadprog", reason="the oracle extra has quadprog")
optimize = pytest.importorskip("scipy.optimize", reason="the oracle extra has scipy")

TS = (64, 128)


@functools.lru_cache(maxsize=None)
def jacobians(t):
  rng = np.random.default_rng(t)
  wide = rng.standard_normal((t, 3 * t)) * 10.0 ** rng.uniform(-1, 1, (t, 1))
  wide[1:t // 4] -= 1.5 * wide[:1]
  tall = rng.standard_normal((t, t // 2))
  tall[1:t // 4] -= 1.5 * tall[:1]
  dup = wide.copy()
  dup[t // 2:] = dup[:t // 2]
  dup[3] = 0.0
  return {"wide": wide, "tall": tall, "dup": dup}


FAST_COMPILE = {"xla_backend_optimization_level": 0}  # halves XLA compile time


@functools.lru_cache(maxsize=None)
def weights_fn(name):
  """One jitted `weights` per method, shared by every test (one compile per shape/dtype)."""
  return jax.jit(AGGREGATORS.get(name)().weights, compiler_options=FAST_COMPILE)


def ours(name, jac):
  gram = jnp.asarray(jac @ jac.T, jnp.float32)
  return np.asarray(weights_fn(name)(gram, jax.random.key(0)), np.float64) @ jac


def rel_err(out, ref):
  return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12)


def dual_cone_ref(jac, lower):
  """torchjd's problem in float64 by quadprog: v_k = argmin vᵀQv s.t. v >= lower[:, k],
  Q = G/tr(G) + 1e-4 I."""
  gram = jac @ jac.T
  q = gram / np.trace(gram) + 1e-4 * np.eye(len(gram))
  t = len(gram)
  return np.stack([quadprog.solve_qp(q, np.zeros(t), np.eye(t), u)[0] for u in lower.T], 1)


def check(name, ref_fn, tol, cases=("wide", "tall", "dup")):
  errs = {}
  for t in TS:
    for case in cases:
      jac = jacobians(t)[case]
      errs[(t, case)] = rel_err(ours(name, jac), ref_fn(jac))
  assert max(errs.values()) < tol, errs


def test_upgrad_matches_quadprog():
  def ref(jac):
    t = len(jac)
    return dual_cone_ref(jac, np.eye(t) / t).sum(1) @ jac
  check("upgrad", ref, 5e-5)


def test_dualproj_matches_quadprog():
  def ref(jac):
    t = len(jac)
    return dual_cone_ref(jac, np.full((t, 1), 1.0 / t))[:, 0] @ jac
  check("dualproj", ref, 5e-5)


def test_mgda_close_to_the_exact_min_norm_point():
  """MGDA keeps torchjd's Frank-Wolfe (stop when the step < 1e-3, 100 steps): not the exact
  min-norm point, so the test checks what it promises against quadprog's exact one:
  weights on the simplex and ||d||² within 4·epsilon·max||g_i||² of the optimum."""
  for t in TS:
    for case, jac in jacobians(t).items():
      gram = jac @ jac.T
      w = np.asarray(weights_fn("mgda")(jnp.asarray(gram, jnp.float32)), np.float64)
      ridge = 1e-12 * np.trace(gram) * np.eye(t)
      constraints = np.concatenate([np.ones((t, 1)), np.eye(t)], 1)
      w_star = quadprog.solve_qp(gram + ridge, np.zeros(t), constraints,
                                 np.r_[1.0, np.zeros(t)], meq=1)[0]
      assert np.all(w >= -1e-7) and abs(w.sum() - 1) < 1e-5, (t, case)
      excess = w @ gram @ w - w_star @ gram @ w_star
      assert -1e-5 * np.max(np.diagonal(gram)) <= excess <= 4e-3 * np.max(np.diagonal(gram)), (
          t, case, excess)


def cagrad_ref(jac, c=0.5):
  """The paper's problem min_w∈Δ g_wᵀg0 + c||g0|| ||g_w|| in float64, in the other formulation
  than ours: φ||g|| = min_τ φ(||g||²/2τ + τ/2), so each τ is a simplex QP (quadprog; a 1e-9
  ridge keeps it positive definite) and 60 bisection steps on log τ find ||g_w(τ)|| = τ."""
  t = len(jac)
  gram = jac @ jac.T / np.trace(jac @ jac.T)
  b = gram.mean(1)
  phi = c * np.sqrt(b.mean())
  q = gram + 1e-9 * np.eye(t)
  constraints = np.concatenate([np.ones((t, 1)), np.eye(t)], 1)
  lower = np.r_[1.0, np.zeros(t)]
  inner = lambda tau: quadprog.solve_qp(q, -tau / phi * b, constraints, lower, meq=1)[0]
  norm = lambda w: np.sqrt(max(w @ gram @ w, 0.0))
  lo, hi = np.log(1e-8), 0.0
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if norm(inner(np.exp(mid))) > np.exp(mid) else (lo, mid)
  w = inner(np.exp(0.5 * (lo + hi)))
  return (1 / t + phi / norm(w) * w) @ jac


def test_cagrad_matches_quadprog_bisection():
  check("cagrad", cagrad_ref, 1e-5)


def nash_ref(jac, max_norm=1.0):
  """α ⊙ Gα = 1: BFGS on ½αᵀGα - Σ log α in z = log α, then SciPy's root finder (hybr) from
  there; then the norm clip."""
  gram = jac @ jac.T
  res = optimize.minimize(lambda z: 0.5 * np.exp(z) @ gram @ np.exp(z) - z.sum(),
                          -0.5 * np.log(np.diag(gram)), method="BFGS", options=dict(gtol=1e-10),
                          jac=lambda z: np.exp(z) * (gram @ np.exp(z)) - 1)
  res = optimize.root(lambda z: np.exp(z) * (gram @ np.exp(z)) - 1, res.x, method="hybr",
                      tol=1e-14)
  alpha = np.exp(res.x)
  assert np.abs(alpha * (gram @ alpha) - 1).max() < 1e-8
  d = alpha @ jac
  return d * min(1.0, max_norm / np.linalg.norm(d))


def test_nash_mtl_matches_scipy():
  """Nash needs independent rows. In float32 its answer's sensitivity is about cond·eps, cond
  the condition number of the rows' correlation matrix (3e6 for `wide` at T = 128, whose rows
  1..T/4 are nearly parallel): float32 is checked at 1e-3 on `mild` (the same scales, rows
  1..T/4 minus 0.5 g_0: cond 4e2 and 1e5, errors seen up to 1.6e-4), float64 (x64) on `wide`
  itself at 1e-8."""
  fn = weights_fn("nash_mtl")
  for t in TS:
    rng = np.random.default_rng(t + 1)
    mild = rng.standard_normal((t, 3 * t)) * 10.0 ** rng.uniform(-1, 1, (t, 1))
    mild[1:t // 4] -= 0.5 * mild[:1]
    ours32 = np.asarray(fn(jnp.asarray(mild @ mild.T, jnp.float32)), np.float64)
    assert rel_err(ours32 @ mild, nash_ref(mild)) < 1e-3, t
    jac = jacobians(t)["wide"]
    with jax.enable_x64(True):
      ours64 = np.asarray(fn(jnp.asarray(jac @ jac.T, jnp.float64)))
    assert rel_err(ours64 @ jac, nash_ref(jac)) < 1e-8, t


def test_pcgrad_matches_numpy_loop():
  """The paper's loop on the actual gradients in float64, same visiting orders."""
  fn = jax.jit(pcgrad_weights, compiler_options=FAST_COMPILE)
  for t in TS:
    perms = np.stack([np.random.default_rng(t + i).permutation(t) for i in range(t)])
    for case, jac in jacobians(t).items():
      ref = np.zeros(jac.shape[1])
      for i in range(t):
        g = jac[i].copy()
        for j in perms[i]:
          dot, sq = g @ jac[j], jac[j] @ jac[j]
          if j != i and dot < 0 and sq > 0:
            g -= dot / sq * jac[j]
        ref += g
      w = np.asarray(fn(jnp.asarray(jac @ jac.T, jnp.float32), jnp.asarray(perms)), np.float64)
      assert rel_err(w @ jac, ref) < 1e-4, (t, case)


# ---- dtypes and degenerate Gramians -----------------------------------------------------------

SOLVERS = ("upgrad", "dualproj", "mgda", "cagrad", "nash_mtl", "pcgrad", "imtl_g", "aligned_mtl")


@pytest.mark.parametrize("name", SOLVERS)
def test_dtypes(name):
  """float64 under x64 stays float64 and agrees with float32; bf16 is promoted to float32
  inside (same weights as the bf16 Gramian cast to float32 first)."""
  jac = np.random.default_rng(5).standard_normal((8, 24))
  jac[1:4] -= 1.2 * jac[:1]
  fn, key = weights_fn(name), jax.random.key(0)
  g32 = jnp.asarray(jac @ jac.T, jnp.float32)
  w32 = np.asarray(fn(g32, key))
  with jax.enable_x64(True):
    w64 = fn(jnp.asarray(jac @ jac.T, jnp.float64), key)
    assert w64.dtype == jnp.float64, name
    w64 = np.asarray(w64)
  np.testing.assert_allclose(w32 @ jac, w64 @ jac, rtol=0,
                             atol=2e-4 * np.linalg.norm(w64 @ jac) + 1e-6)
  g16 = g32.astype(jnp.bfloat16)
  w16 = fn(g16, key)
  assert w16.dtype == jnp.float32, name
  np.testing.assert_array_equal(np.asarray(w16), np.asarray(fn(g16.astype(jnp.float32), key)))
  agg = AGGREGATORS.get(name)()
  d16 = jax.jit(agg, compiler_options=FAST_COMPILE)(jnp.asarray(jac, jnp.bfloat16), key)
  assert d16.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(d16))), name


@pytest.mark.parametrize("name", SOLVERS)
def test_degenerate_gramians_stay_finite(name):
  """Duplicate tasks, a zero row, and an all-zero Jacobian: finite weights, no NaN."""
  jac = np.random.default_rng(6).standard_normal((8, 5))
  jac[4:] = jac[:4]
  jac[2] = 0.0
  fn = weights_fn(name)
  for j in (jac, np.zeros_like(jac)):
    w = np.asarray(fn(jnp.asarray(j @ j.T, jnp.float32), jax.random.key(0)))
    assert np.all(np.isfinite(w)), (name, w)
