"""Small dense QPs on the T x T Gramian, solved inside JAX with a fixed iteration count.

`nonneg_qp` is what the aggregators use: min_x ½xᵀQx + cᵀx s.t. x >= 0 for m
right-hand sides at once (the columns of c), so UPGrad's T projections, DualProj's
one and CAGrad's grid of 16 are each one batched run whose every iteration is one
T x T x m matmul: fixed cost, no data-dependent control flow, no loop over tasks.
Restarted FISTA on the Jacobi-scaled problem finds the active set, then a few
Lawson-Hanson steps (conjugate gradients on the free set) polish it to float
precision; docs/weighting.md has the iteration counts and the accuracy reached.

`active_set_qp` is the exact primal active-set method (Lawson-Hanson, extended to
an optional simplex constraint) the aggregators used before: each of its 3T + 8
iterations does a T-step Gauss-Jordan solve, so it is O(T⁴) and sequential; it is
kept as a small-T reference (tests) and for callers that want the exact vertex
path. Q must be positive definite on the free set (the callers add a ridge).
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import normalize, regularize


DEFAULT_ITERS = 200  # FISTA steps of nonneg_qp (see docs/weighting.md)


def default_iters(num_tasks: int) -> int:
  """`active_set_qp`'s iterations: at most 0.9 T were needed on random problems with
  T = 4..32 (conflicting and rank-deficient included)."""
  return 3 * num_tasks + 8


def spd_solve(a: jax.Array, b: jax.Array) -> jax.Array:
  """a⁻¹ b for symmetric positive definite a, by Gauss-Jordan without pivoting.

  Stable for SPD matrices (as Cholesky) and, being one small fori_loop, it compiles
  several times faster than jnp.linalg.solve on CPU, which matters inside loops.
  """
  n = a.shape[0]
  m = jnp.concatenate([a, b.reshape(n, -1)], axis=1)

  def eliminate(k, m):
    row = m[k] / m[k, k]
    col = m[:, k].at[k].set(0.0)
    return (m - col[:, None] * row[None, :]).at[k].set(row)

  return jax.lax.fori_loop(0, n, eliminate, m)[:, n:].reshape(b.shape)


def _solve_free(q, c, free, simplex):
  """Optimum of the QP restricted to `free` (other coordinates 0); returns (x, mu)."""
  t = q.shape[0]
  dtype = q.dtype
  a = jnp.where(free[:, None] & free[None, :], q, jnp.eye(t, dtype=dtype))
  rhs = jnp.where(free, -c, 0.0)
  if not simplex:
    return spd_solve(a, rhs), jnp.zeros((), dtype)
  # KKT [[a, f], [fᵀ, 0]] [x; mu] = [rhs; 1] through the Schur complement of a.
  f = free.astype(dtype)
  sol = spd_solve(a, jnp.stack([rhs, f], axis=1))
  mu = (f @ sol[:, 0] - 1.0) / (f @ sol[:, 1])
  return sol[:, 0] - mu * sol[:, 1], mu


def active_set_qp(q: jax.Array, c: jax.Array, *, simplex: bool = False, iters=None,
                  tol_grad_mult=1.0, tol_x_mult=0.0) -> jax.Array:
  """argmin ½ xᵀQx + cᵀx over x >= 0 (and on the simplex if `simplex`)."""
  t = q.shape[0]
  dtype = q.dtype
  iters = default_iters(t) if iters is None else iters
  eps = jnp.finfo(dtype).eps
  scale = jnp.max(jnp.abs(jnp.diagonal(q))) + jnp.max(jnp.abs(c)) + eps
  tol_grad = tol_grad_mult * eps * scale
  tol_x = tol_x_mult * eps
  if simplex:  # start at the best vertex
    j0 = jnp.argmin(0.5 * jnp.diagonal(q) + c)
    x0 = jax.nn.one_hot(j0, t, dtype=dtype)
  else:  # start at the origin
    x0 = jnp.zeros((t,), dtype)
  free0 = x0 > 0

  def step(_, state):
    x, free = state
    z, mu = _solve_free(q, c, free, simplex)
    ok = jnp.all(jnp.where(free, z > tol_x, True))
    # Case 1: the free-set optimum is feasible: move there, free the worst coordinate.
    grad = q @ z + c + mu  # for simplex, mu makes grad zero on the free set
    viol = jnp.where(free, jnp.inf, grad)
    j = jnp.argmin(viol)
    add = viol[j] < -tol_grad
    free_ok = free | (add & (jnp.arange(t) == j))
    # Case 2: step from x towards z until the first coordinate hits 0, then fix it.
    blocking = free & (z <= tol_x)
    ratio = jnp.where(blocking, x / jnp.where(blocking, x - z, 1.0), jnp.inf)
    alpha = jnp.clip(jnp.min(ratio), 0.0, 1.0)
    x_back = x + alpha * (z - x)
    drop = free & ((x_back <= tol_x) | (blocking & (ratio <= alpha)))
    x_back = jnp.where(drop, 0.0, x_back)
    if simplex:
      x_back = x_back / jnp.sum(x_back)
    x_new = jnp.where(ok, jnp.where(free, z, 0.0), x_back)
    free_new = jnp.where(ok, free_ok, free & ~drop)
    finite = jnp.all(jnp.isfinite(z))  # a singular free set: keep the last feasible iterate
    return jnp.where(finite, x_new, x), jnp.where(finite, free_new, free)

  x, _ = jax.lax.fori_loop(0, iters, step, (x0, free0))
  return x


def dual_cone_weights(u: jax.Array, gram: jax.Array, *, norm_eps: float, reg_eps: float,
                      iters=None, polish_iters: int = 16) -> jax.Array:
  """Weights v of the projection of Jᵀu onto the dual cone of J's rows: min vᵀGv s.t. v >= u.

  Same problem and conditioning as torchjd's QuadprogProjector: G is divided by
  its trace and `reg_eps` I is added. Solved for s = v - u >= 0 by `nonneg_qp`;
  u [T] or [T, m] (m problems at once, one per column, as UPGrad's T projections).
  """
  g = regularize(normalize(gram, norm_eps), reg_eps)
  return u + nonneg_qp(g, g @ u, iters=DEFAULT_ITERS if iters is None else iters,
                       polish_iters=polish_iters)


# ---- batched first-order solvers: what the aggregators use ------------------------------------
#
# One matrix Q, many right-hand sides (UPGrad: T problems, CAGrad: a grid of μ): the m problems
# are the m columns of one [T, m] iterate, so every iteration is one T x T x m matmul and the
# cost is fixed and independent of the data (no Python loop over tasks, no data-dependent
# control flow). FISTA (Beck & Teboulle 2009) with O'Donoghue & Candès's gradient restart
# identifies the active set; Lawson-Hanson steps with conjugate gradients on the free set then
# polish the iterate to float precision (see `nonneg_qp`).


def max_eigenvalue(q: jax.Array, iters: int = 24) -> jax.Array:
  """Upper estimate of λ_max of PSD q: block power iteration (4 fixed pseudo-random starts,
  so no start is orthogonal to the top eigenvector), 5% margin, capped by the row-sum bound."""
  t = q.shape[0]
  v0 = jax.random.normal(jax.random.key(0), (t, 4), q.dtype)

  def power(_, v):
    w = q @ v
    return w / jnp.maximum(jnp.linalg.norm(w, axis=0, keepdims=True), jnp.finfo(q.dtype).tiny)

  v = jax.lax.fori_loop(0, iters, power, v0)
  est = jnp.max(jnp.sum(v * (q @ v), axis=0) / jnp.maximum(jnp.sum(v * v, axis=0), 1e-30))
  bound = jnp.max(jnp.sum(jnp.abs(q), axis=1))
  return jnp.maximum(jnp.minimum(1.05 * est, bound), jnp.finfo(q.dtype).tiny)


def _fista(q, c, x0, project, iters):
  """`iters` steps of restarted FISTA on ½xᵀqx + cᵀx over `project`'s set, per column."""
  step = 1.0 / max_eigenvalue(q)

  def body(_, state):
    x, y, theta = state
    grad = q @ y + c
    x_new = project(y - step * grad)
    restart = jnp.sum(grad * (x_new - x), axis=0) > 0
    theta_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * theta * theta))
    beta = jnp.where(restart, 0.0, (theta - 1.0) / theta_new)
    y_new = x_new + beta * (x_new - x)
    return x_new, y_new, jnp.where(restart, 1.0, theta_new)

  theta0 = jnp.ones((c.shape[1],), q.dtype)
  x, _, _ = jax.lax.fori_loop(0, iters, body, (x0, x0, theta0))
  return x


def _masked_cg(q, rhs, x0, mask, iters):
  """CG on q restricted to `mask` (per column): solves q_FF x_F = rhs_F, x = 0 off F."""
  m = mask.astype(q.dtype)
  op = lambda p: m * (q @ (m * p))
  tiny = jnp.finfo(q.dtype).tiny
  x = m * x0
  r = m * rhs - op(x)
  rr = jnp.sum(r * r, axis=0)

  def body(_, state):
    x, r, p, rr = state
    ap = op(p)
    pap = jnp.sum(p * ap, axis=0)
    alpha = jnp.where(pap > tiny, rr / jnp.where(pap > tiny, pap, 1.0), 0.0)
    x, r = x + alpha * p, r - alpha * ap
    rr_new = jnp.sum(r * r, axis=0)
    beta = jnp.where(rr > tiny, rr_new / jnp.where(rr > tiny, rr, 1.0), 0.0)
    return x, r, r + beta * p, rr_new

  x, _, _, _ = jax.lax.fori_loop(0, iters, body, (x, r, r, rr))
  return x


def _nonneg_residual(q, c, x, d):
  """Projected-gradient residual of the Jacobi-scaled problem, per column (0 iff optimal)."""
  xs, grad_s = x * d[:, None], (q @ x + c) / d[:, None]
  return jnp.linalg.norm(xs - jnp.maximum(xs - grad_s, 0.0), axis=0)


def nonneg_qp(q: jax.Array, c: jax.Array, *, iters: int = DEFAULT_ITERS, polish_iters: int = 16,
              rounds: int = 6) -> jax.Array:
  """argmin ½xᵀqx + cᵀx over x >= 0 for every column of c [T, m] (or c [T]); q PD.

  `iters` restarted-FISTA steps on the Jacobi-scaled problem (unit diagonal: tasks of
  very different gradient norms cost no extra iterations; the box is scale-invariant),
  then `rounds` Lawson-Hanson active-set steps from FISTA's free set (each: CG with
  `polish_iters` steps on the free set, then move there and free the most violating
  coordinate, or step back to the first bound it crosses); per column the iterate with
  the smallest KKT residual is returned, so the polish never makes FISTA's answer worse.
  CG runs on the unscaled q: for a rank-r Gramian plus a ridge (T > P) its spectrum is r
  values and one cluster, on which CG converges in about r steps whatever the condition
  number.
  """
  vec = c.ndim == 1
  c = c[:, None] if vec else c
  d = jnp.sqrt(jnp.maximum(jnp.diagonal(q), jnp.finfo(q.dtype).tiny))
  qs = q / d[:, None] / d[None, :]
  xs = _fista(qs, c / d[:, None], jnp.zeros_like(c), lambda v: jnp.maximum(v, 0.0), iters)
  x = xs / d[:, None]
  tiny = jnp.finfo(q.dtype).tiny
  free = x > 0
  best, best_res = x, _nonneg_residual(q, c, x, d)
  for _ in range(rounds):  # Lawson-Hanson steps from FISTA's active set
    z = _masked_cg(q, -c, x, free, polish_iters)
    blocking = free & (z <= 0)
    ok = ~jnp.any(blocking, axis=0)
    # z feasible: move there and free the coordinate whose gradient is most negative.
    grad = q @ z + c
    viol = jnp.where(free, jnp.inf, grad / d[:, None])
    j = jnp.argmin(viol, axis=0)
    add = (jnp.arange(x.shape[0])[:, None] == j[None, :]) & (jnp.min(viol, axis=0) < 0)
    # else: step towards z until the first coordinate hits 0, and fix those at 0.
    ratio = jnp.where(blocking, x / jnp.where(blocking, x - z, 1.0), jnp.inf)
    alpha = jnp.clip(jnp.min(ratio, axis=0), 0.0, 1.0)
    x_back = jnp.where(free, x + alpha * (z - x), 0.0)
    drop = free & ((x_back <= tiny) | (blocking & (ratio <= alpha)))
    x = jnp.where(ok, jnp.where(free, z, 0.0), jnp.where(drop, 0.0, x_back))
    free = jnp.where(ok, free | add, free & ~drop)
    res = _nonneg_residual(q, c, x, d)
    better = res < best_res
    best, best_res = jnp.where(better, x, best), jnp.where(better, res, best_res)
  return best[:, 0] if vec else best
