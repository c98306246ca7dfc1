"""Oracle: mtl_jax.weighting against torchjd 0.18.0 (the `oracle` extra) on random matrices.

Shapes: (2, 3) for T = 2, (4, 6), and (16, 4) for T >> P (rank-deficient Gramian),
plain and with conflicting rows (rows 1.. = g_i - 1.5 g_0). Errors are
||ours - ref|| / ||ref||; ours runs in float32, torchjd in float64.

- Same definition, compared directly: mean, sum, upgrad, dualproj, mgda, imtl_g,
  aligned_mtl, config (1e-4 when T <= P; 1e-3 when T >> P, where the QPs' 1e-4 ridge
  dominates the conditioning and float32 is the limit).
- Random, compared exactly by drawing the same random numbers: pcgrad (torchjd's
  per-task torch.randperm orders passed to `pcgrad_weights`), graddrop (its torch.rand
  draws passed to `graddrop_from_uniform`). GradDrop's and Random's own jax draws are
  checked against their distributions: GradDrop's mean against the NumPy expectation
  of the paper's rule, Random's weights against torchjd's Random sample moments.
- torchjd's CAGrad and NashMTL need cvxpy, clarabel and ecos (in the oracle extra; a
  skip names the missing one); CAGrad is always also compared
  with a SciPy SLSQP solution of the paper's problem (as its official code), NashMTL
  with a SciPy root of its defining equation α ⊙ Gα = 1.
"""

import functools
import importlib
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

for _mod, _why in (("torch", "oracle extra missing: pip install torch==2.13.0, then "
                             "-e '.[test,oracle]'"),
                   ("torchjd", "oracle extra missing: pip install torch==2.13.0, then "
                               "-e '.[test,oracle]'"),
                   ("quadprog", "torchjd's UPGrad/DualProj need quadprog (oracle extra)")):
  if importlib.util.find_spec(_mod) is None:
    pytest.skip(_why, allow_module_level=True)


class _OnFirstUse:
  """Imports a module when a test first uses it: importing torchjd (torch, cvxpy) takes ~7 s,
  which every test process would pay at collection for tests that only one of them runs."""

  def __init__(self, name):
    self._name = name

  def __getattr__(self, attr):
    return getattr(importlib.import_module(self._name), attr)


torch = _OnFirstUse("torch")
tja = _OnFirstUse("torchjd.aggregation")

from mtl_jax.weighting import AGGREGATORS, graddrop_from_uniform, pcgrad_weights
from mtl_jax.weighting.base import gramian

SHAPES = [(2, 3), (4, 6), (16, 4)]


def matrices(shapes=SHAPES, seeds=4):
  rng = np.random.default_rng(1234)
  for t, p in shapes:
    for s in range(seeds):
      jac = rng.standard_normal((t, p))
      if s % 2:
        jac[1:] -= 1.5 * jac[:1]
      yield (t, p, s), jac * 10.0 ** rng.uniform(-1, 1)


try:  # share compiled programs with test_aggregators.py when both run in one process
  from test_aggregators import jitted
except ImportError:
  @functools.lru_cache(maxsize=None)
  def jitted(name, opts=()):
    return jax.jit(AGGREGATORS.get(name)(**dict(opts)))


def ours(name, jac):
  return np.asarray(jitted(name)(jnp.asarray(jac, jnp.float32), jax.random.key(0)), np.float64)


def rel_err(out, ref):
  return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12)


TORCHJD = {  # torchjd.aggregation class names
    "mean": "Mean", "sum": "Sum", "upgrad": "UPGrad", "dualproj": "DualProj",
    "mgda": "MGDA", "imtl_g": "IMTLG", "aligned_mtl": "AlignedMTL", "config": "ConFIG",
}


@pytest.mark.parametrize("name", sorted(TORCHJD))
def test_same_as_torchjd(name):
  errs = {}
  for key, jac in matrices():
    ref = getattr(tja, TORCHJD[name])()(torch.tensor(jac)).numpy()
    errs[key] = (rel_err(ours(name, jac), ref), 1e-3 if key[0] > key[1] else 1e-4)
  bad = {k: e for k, e in errs.items() if e[0] > e[1]}
  assert not bad, bad


def test_pcgrad_same_as_torchjd_given_its_orders():
  weights = jax.jit(pcgrad_weights)
  for key, jac in matrices():
    t = jac.shape[0]
    torch.manual_seed(sum(key))
    perms = np.stack([torch.randperm(t).numpy() for _ in range(t)])
    torch.manual_seed(sum(key))  # PCGradWeighting draws one randperm per task, in order
    ref = tja.PCGrad()(torch.tensor(jac)).numpy()
    jac32 = jnp.asarray(jac, jnp.float32)
    out = np.asarray(weights(gramian(jac32), jnp.asarray(perms)) @ jac32, np.float64)
    assert rel_err(out, ref) < (1e-3 if key[0] > key[1] else 1e-4), key


def test_graddrop_same_as_torchjd_given_its_draws():
  drop = jax.jit(graddrop_from_uniform)
  for key, jac in matrices():
    torch.manual_seed(sum(key))
    uniform = torch.rand(jac.shape[1], dtype=torch.float64).numpy()
    torch.manual_seed(sum(key))  # GradDrop draws torch.rand(P) once
    ref = tja.GradDrop()(torch.tensor(jac)).numpy()
    out = drop(jnp.asarray(jac, jnp.float32), jnp.asarray(uniform, jnp.float32))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5 * np.abs(jac).max())


def test_graddrop_mean_matches_numpy_expectation():
  """Per column, the output is S+ (sum of positive entries) with probability P, the
  positive-sign purity, else S-: mean P S+ + (1 - P) S-, variance P (1 - P) (S+ - S-)^2."""
  jac = np.random.default_rng(0).standard_normal((4, 6))
  purity = 0.5 * (1 + jac.sum(0) / np.abs(jac).sum(0))
  s_pos, s_neg = np.where(jac > 0, jac, 0).sum(0), np.where(jac < 0, jac, 0).sum(0)
  agg = AGGREGATORS.get("graddrop")()
  keys = jax.random.split(jax.random.key(1), 4000)
  outs = np.asarray(jax.jit(jax.vmap(lambda k: agg(jnp.asarray(jac, jnp.float32), k)))(keys))
  stderr = np.sqrt(purity * (1 - purity) / len(keys)) * np.abs(s_pos - s_neg)
  np.testing.assert_allclose(outs.mean(0), purity * s_pos + (1 - purity) * s_neg,
                             atol=5 * stderr.max())


def test_random_weights_distributed_as_torchjd():
  """Rows of the identity: the output is the weight vector, softmax of N(0, I) in both."""
  jac = np.eye(4, 6)
  agg = AGGREGATORS.get("random")()
  keys = jax.random.split(jax.random.key(2), 2000)
  w = np.asarray(jax.jit(jax.vmap(lambda k: agg(jnp.asarray(jac, jnp.float32), k)))(keys))[:, :4]
  torch.manual_seed(0)
  ref = np.stack([tja.Random()(torch.tensor(jac)).numpy()[:4] for _ in range(2000)])
  assert np.all(w > 0) and np.allclose(w.sum(1), 1, atol=1e-5)
  np.testing.assert_allclose(w.mean(0), 0.25, atol=0.01)
  np.testing.assert_allclose(ref.mean(0), 0.25, atol=0.01)
  assert abs(w.std() - ref.std()) < 0.1 * ref.std()


# ---- CAGrad and Nash-MTL: SciPy references, and torchjd when cvxpy is there --------------

def cagrad_scipy(jac, c=0.5, norm_eps=1e-4):
  """The paper's problem min_w∈Δ g_wᵀg0 + c||g0|| ||g_w|| by SLSQP, as CAGrad's official code."""
  optimize = pytest.importorskip("scipy.optimize", reason="scipy comes with the oracle extra")
  t = jac.shape[0]
  gram = jac @ jac.T / np.trace(jac @ jac.T)
  b = gram.mean(1)
  phi = c * np.sqrt(b.mean())
  norm = lambda w: np.sqrt(max(w @ gram @ w, 1e-30))
  res = optimize.minimize(
      lambda w: b @ w + phi * norm(w), np.full(t, 1 / t), method="SLSQP",
      jac=lambda w: b + phi * gram @ w / norm(w), bounds=[(0, 1)] * t,
      constraints=[dict(type="eq", fun=lambda w: w.sum() - 1, jac=lambda w: np.ones(t))],
      options=dict(ftol=1e-15, maxiter=1000))
  w = np.clip(res.x, 0, None)
  return (1 / t + phi / norm(w) * w) @ jac if norm(w) >= norm_eps else np.zeros(jac.shape[1])


def test_cagrad_matches_scipy():
  for key, jac in matrices(seeds=2):
    ref = cagrad_scipy(jac)
    assert rel_err(ours("cagrad", jac), ref) < 1e-3, key


def nash_scipy(jac, max_norm=1.0):
  """α ⊙ Gα = 1 by BFGS on ½ αᵀGα - Σ log α in z = log α (keeps α > 0), then the clip."""
  optimize = pytest.importorskip("scipy.optimize", reason="scipy comes with the oracle extra")
  gram = jac @ jac.T
  res = optimize.minimize(lambda z: 0.5 * np.exp(z) @ gram @ np.exp(z) - z.sum(),
                          -0.5 * np.log(np.diag(gram)), method="BFGS", options=dict(gtol=1e-12),
                          jac=lambda z: np.exp(z) * (gram @ np.exp(z)) - 1)
  alpha = np.exp(res.x)
  assert np.abs(alpha * (gram @ alpha) - 1).max() < 1e-7
  d = alpha @ jac
  return d * min(1.0, max_norm / np.linalg.norm(d))


def test_nash_mtl_matches_scipy():
  for key, jac in matrices(shapes=[(2, 3), (4, 6)]):  # a solution needs independent rows
    assert rel_err(ours("nash_mtl", jac), nash_scipy(jac)) < 1e-4, key


def test_nash_mtl_without_solution_stays_bounded():
  for _, jac in matrices(shapes=[(16, 4)], seeds=2):
    d = ours("nash_mtl", jac)
    assert np.all(np.isfinite(d)) and np.linalg.norm(d) <= 1.0 + 1e-5


def _needs_cvxpy():
  for mod in ("cvxpy", "clarabel", "ecos"):
    pytest.importorskip(mod, reason=f"torchjd's CAGrad/NashMTL need {mod} (oracle extra: "
                                    f"pip install -e '.[oracle]')")


def test_cagrad_same_as_torchjd():
  _needs_cvxpy()
  for key, jac in matrices():
    ref = tja.CAGrad(c=0.5)(torch.tensor(jac)).numpy()
    assert rel_err(ours("cagrad", jac), ref) < 1e-3, key


def test_nash_mtl_same_as_torchjd_where_it_converges():
  """torchjd's 20 rounds of cvxpy/ECOS (the official scheme) do not always reach α ⊙ Gα = 1
  on conflicting rows (residuals of 2-20 seen): compared where its weights solve it."""
  _needs_cvxpy()
  compared = 0
  for key, jac in matrices(shapes=[(2, 3), (4, 6)]):
    raw = tja.NashMTL(n_tasks=jac.shape[0], max_norm=0.0)(torch.tensor(jac)).numpy()
    alpha = np.linalg.lstsq(jac.T, raw, rcond=None)[0]
    if np.abs(alpha * (jac @ raw) - 1).max() < 1e-4:
      compared += 1
      ref = raw * min(1.0, 1.0 / np.linalg.norm(raw))
      assert rel_err(ours("nash_mtl", jac), ref) < 1e-4, key
  assert compared >= 4
