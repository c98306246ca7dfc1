"""Aggregators: golden values (torchjd 0.18.0 outputs) and the properties each paper promises.

Every aggregator is jitted once per (name, options) and only sees shapes (2, 3)
and (4, 6), so the file compiles each program at most twice.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from mtl_jax.weighting import AGGREGATORS, active_set_qp

KEY = jax.random.key(0)
J23 = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
J2 = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # orthogonal: no conflict
J46 = np.array([[2.0, 0.0, 1.0, -1.0, 0.0, 1.0], [0.0, 1.0, -1.0, 0.0, 2.0, 0.0],
                [-1.0, 1.0, 0.5, 1.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.0, 1.0, 2.0]])
SHAPE = (4, 6)
PROPS = settings(max_examples=25, deadline=None, derandomize=True)


FAST_COMPILE = {"xla_backend_optimization_level": 0}  # halves XLA compile time; tiny inputs


@functools.lru_cache(maxsize=None)
def jitted(name, opts=()):
  return jax.jit(AGGREGATORS.get(name)(**dict(opts)), compiler_options=FAST_COMPILE)


def run(name, jac, rng=KEY, **opts):
  out = jitted(name, tuple(sorted(opts.items())))(jnp.asarray(jac, jnp.float32), rng)
  return np.asarray(out, np.float64)


# torchjd 0.18.0 on the same matrices (CAGrad with c=0.5, NashMTL with defaults). PCGrad on J46
# depends on the random visiting order, so only its 2-task values are fixed.
GOLDEN = {
    "upgrad": [(J23, [0.2929, 1.9004, 1.9004]), (J2, [0.5, 0.5, 0]),
               (J46, [0.4037, 0.5876, 0.3776, 0.2343, 0.8323, 0.9183])],
    "mgda": [(J23, [0, 1, 1]), (J2, [0.5, 0.5, 0]),
             (J46, [0.1207, 0.5327, 0.3914, 0.2447, 0.3545, 0.4673])],
    "pcgrad": [(J23, [0.5848, 3.8012, 3.8012]), (J2, [1, 1, 0])],
    "dualproj": [(J23, [0.5563, 1.1109, 1.1109]), (J2, [0.5, 0.5, 0]),
                 (J46, [0.4425, 0.3075, 0.1537, 0.0575, 0.75, 0.75])],
    "imtl_g": [(J23, [0.0767, 1, 1]), (J2, [0.5, 0.5, 0]),
               (J46, [0.189, 0.5191, 0.3644, 0.191, 0.4005, 0.4809])],
    "aligned_mtl": [(J23, [0.2133, 0.9673, 0.9673]), (J2, [0.5, 0.5, 0]),
                    (J46, [0.1923, 0.3058, 0.1852, 0.1045, 0.3916, 0.4134])],
    "cagrad": [(J23, [0.1835, 1.2041, 1.2041]), (J2, [0.75, 0.75, 0]),
               (J46, [0.1657, 0.5843, 0.2922, 0.3343, 0.75, 0.75])],
    "nash_mtl": [(J23, [0.0542, 0.7061, 0.7061]), (J2, [0.7071, 0.7071, 0]),
                 (J46, [0.2088, 0.4554, 0.2615, 0.1982, 0.5545, 0.5778])],
    "config": [(J23, [0.1588, 2.0706, 2.0706]), (J2, [1, 1, 0]),
               (J46, [0.8124, 2.2315, 1.5666, 0.8213, 1.7217, 2.0675])],
    "mean": [(J23, [1, 1, 1]), (J46, [0.5, 0.25, 0.125, 0, 0.75, 0.75])],
    "sum": [(J23, [2, 2, 2]), (J46, [2, 1, 0.5, 0, 3, 3])],
}


@pytest.mark.parametrize("name,jac,expected",
                         [(n, j, e) for n, cases in GOLDEN.items() for j, e in cases])
def test_golden_values(name, jac, expected):
  np.testing.assert_allclose(run(name, jac), expected, atol=2e-4)


def test_graddrop_keeps_one_sign_per_coordinate():
  # Purity of column 0 is 0.6: keep the 6 with probability 0.6, else the -4; columns 1-2 are pure.
  outs = np.stack([run("graddrop", J23, jax.random.key(s)) for s in range(200)])
  assert {tuple(o) for o in outs} <= {(6.0, 2.0, 2.0), (-4.0, 2.0, 2.0)}
  assert abs(np.mean(outs[:, 0] == 6.0) - 0.6) < 0.12


def test_constant_and_random_weights():
  np.testing.assert_allclose(run("constant", J23, weights=(1.0, 2.0)), [8.0, 3.0, 3.0])
  w = run("random", J2)[:2]  # J2 rows are unit vectors: the output holds the weights
  assert np.all(w > 0) and abs(w.sum() - 1) < 1e-5


def test_every_aggregator_jits_and_is_finite():
  jac = np.random.default_rng(0).standard_normal(SHAPE)
  for name in AGGREGATORS:
    opts = (("weights", (0.25,) * SHAPE[0]),) if name == "constant" else ()
    out = jitted(name, opts)(jnp.asarray(jac, jnp.float32), KEY)  # jitted = jax.jit(agg)
    assert out.shape == (SHAPE[1],) and bool(jnp.all(jnp.isfinite(out))), name


def test_unknown_name_lists_valid_names():
  with pytest.raises(KeyError, match="valid names.*upgrad"):
    AGGREGATORS.get("upgard")


def test_random_methods_need_a_key_and_bad_options_fail():
  for name in ("pcgrad", "graddrop", "random"):
    with pytest.raises(ValueError, match="PRNG key"):
      AGGREGATORS.get(name)()(jnp.asarray(J23, jnp.float32))
  with pytest.raises(ValueError, match="scale_mode"):
    AGGREGATORS.get("aligned_mtl")(scale_mode="max")
  with pytest.raises(ValueError, match="pref_vector"):
    AGGREGATORS.get("upgrad")(pref_vector=(1.0,))(jnp.asarray(J23, jnp.float32))


def test_active_set_qp_matches_brute_force():
  # NNQP and simplex QP in 3-D: compare with the best KKT point over all 2^3 free sets.
  rng = np.random.default_rng(1)
  a = rng.standard_normal((3, 3))
  q, c = a @ a.T + 0.1 * np.eye(3), rng.standard_normal(3)
  best = min((0.5 * x @ q @ x + c @ x, tuple(x)) for x in _kkt_candidates(q, c))[1]
  got = active_set_qp(jnp.asarray(q, jnp.float32), jnp.asarray(c, jnp.float32))
  np.testing.assert_allclose(got, best, atol=1e-5)


def _kkt_candidates(q, c):
  for mask in range(8):
    free = [i for i in range(3) if mask >> i & 1]
    x = np.zeros(3)
    if free:
      x[free] = np.linalg.solve(q[np.ix_(free, free)], -c[free])
    if np.all(x >= 0):
      yield x


# ---- properties -----------------------------------------------------------------------------

def _jacobian(seed, conflict, scale):
  rng = np.random.default_rng(seed)
  jac = rng.standard_normal(SHAPE)
  if conflict:
    jac[1:] -= 1.5 * jac[:1]
  return jac * scale


JACOBIANS = st.builds(_jacobian, st.integers(0, 2**32 - 1), st.booleans(),
                      st.sampled_from([1e-2, 1.0, 30.0]))


@pytest.mark.parametrize("name", ["upgrad", "dualproj", "mgda", "nash_mtl"])
@PROPS
@given(jac=JACOBIANS)
def test_non_conflicting(name, jac):
  """J d >= 0: no task's loss goes up to first order, up to each solver's stated slack.

  UPGrad/DualProj solve their QP with G/tr(G) + 1e-4 I (as torchjd), whose KKT
  conditions give J d >= -1e-4 tr(G) w, w the weights (recovered by least squares,
  J having full row rank). MGDA's Frank-Wolfe stops once its step is < 1e-3, so its
  duality gap, hence the possible violation, is < 4e-3 max ||g_i||^2.
  """
  d = run(name, jac)
  gram = jac @ jac.T
  if name in ("upgrad", "dualproj"):
    slack = 1e-4 * np.trace(gram) * np.maximum(np.linalg.lstsq(jac.T, d, rcond=None)[0], 0.0)
  elif name == "mgda":
    slack = 4e-3 * np.max(np.diagonal(gram))
  else:
    slack = 0.0
  tol = 1e-4 * np.linalg.norm(jac, axis=1) * np.linalg.norm(d)
  assert np.all(jac @ d >= -slack - tol), (jac @ d, slack)


@pytest.mark.parametrize("name,reference", [("upgrad", "mean"), ("dualproj", "mean"),
                                            ("pcgrad", "sum")])
@PROPS
@given(seed=st.integers(0, 2**32 - 1))
def test_no_conflict_means_plain_average(name, reference, seed):
  """Without conflicts nothing is projected: UPGrad/DualProj = mean, PCGrad = sum."""
  jac = np.abs(np.random.default_rng(seed).standard_normal(SHAPE))  # all inner products > 0
  np.testing.assert_allclose(run(name, jac), run(reference, jac), rtol=1e-4, atol=1e-5)


PERMUTATION_INVARIANT = ["upgrad", "dualproj", "mgda", "imtl_g", "aligned_mtl", "cagrad",
                         "nash_mtl", "config", "mean", "sum"]


@pytest.mark.parametrize("name", PERMUTATION_INVARIANT)
@PROPS
@given(jac=JACOBIANS, perm=st.permutations(range(SHAPE[0])))
def test_permutation_invariant(name, jac, perm):
  out, out_perm = run(name, jac), run(name, jac[list(perm)])
  np.testing.assert_allclose(out_perm, out, rtol=1e-3, atol=1e-4 * np.linalg.norm(out) + 1e-7)


LINEAR = ["upgrad", "dualproj", "mgda", "pcgrad", "imtl_g", "aligned_mtl", "cagrad", "config",
          "graddrop", "mean", "sum"]


@pytest.mark.parametrize("name", LINEAR + ["nash_mtl"])
@PROPS
@given(jac=JACOBIANS, factor=st.sampled_from([1e-2, 0.5, 3.0, 100.0]))
def test_scaling(name, jac, factor):
  """d(aJ) = a d(J) for a > 0; Nash-MTL is scale-invariant instead (α ∝ 1/a, then clipped).

  UPGrad, DualProj and CAGrad divide G by its trace only when trace >= norm_eps (1e-4,
  torchjd's convention; below it they return the mean, resp. 0), so they are tested
  where both traces are above it. Aligned-MTL divides by the square roots of G's
  eigenvalues, which float32 eigh resolves to eps·λ_max: its output moves by about
  cond(G)·eps under rescaling (5e-4 of ||d|| for conflicting draws with cond(G) ~ 1e4), so
  its tolerance is 1e-3·||d|| instead of 1e-4·||d||.
  """
  if name in ("upgrad", "dualproj", "cagrad"):
    assume(np.sum(jac**2) * min(factor, 1.0)**2 > 1e-3)
  expected = run(name, jac) * (1.0 if name == "nash_mtl" else factor)
  atol = (1e-3 if name == "aligned_mtl" else 1e-4) * np.linalg.norm(expected) + 1e-7
  np.testing.assert_allclose(run(name, factor * jac), expected, rtol=1e-3, atol=atol)


@PROPS
@given(jac=JACOBIANS, scales=st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=4, max_size=4))
def test_imtl_g_direction_ignores_task_scales(jac, scales):
  """IMTL-G: rescaling one task's loss changes only the length of the update."""
  d, d_scaled = run("imtl_g", jac), run("imtl_g", np.asarray(scales)[:, None] * jac)
  cos = d @ d_scaled / (np.linalg.norm(d) * np.linalg.norm(d_scaled))
  assert abs(abs(cos) - 1) < 1e-3


@PROPS
@given(jac=JACOBIANS)
def test_imtl_g_equal_projections(jac):
  """IMTL-G: the update has the same projection on every unit task gradient."""
  d = run("imtl_g", jac)
  proj = jac @ d / np.linalg.norm(jac, axis=1)
  np.testing.assert_allclose(proj, np.full_like(proj, proj.mean()), rtol=1e-3,
                             atol=1e-4 * np.abs(proj).max())
