"""Small dense QPs on the T x T Gramian, solved inside JAX with a fixed iteration count.

`active_set_qp` is a primal active-set method (Lawson-Hanson, extended to an
optional simplex constraint) for

    min_x ½ xᵀ Q x + cᵀ x   s.t.  x >= 0   [and Σ x = 1 if simplex].

Each iteration solves the KKT system on the current free set (a masked
(T+1) x (T+1) solve, so shapes stay static) and then either frees the most
violating coordinate or steps back to the feasible boundary. It reaches the
exact optimum in finitely many steps, typically ≤ 2T (hence the default
`4T + 8`); once there every further iteration is a no-op, and the iterate is
feasible after every step. Q must be positive definite on the free set.
"""

import jax
import jax.numpy as jnp


def default_iters(num_tasks: int) -> int:
  return 4 * num_tasks + 8


def _solve_free(q, c, free, simplex):
  """Optimum of the QP restricted to `free` (other coordinates 0); returns (x, mu)."""
  t = q.shape[0]
  dtype = q.dtype
  a = jnp.where(free[:, None] & free[None, :], q, jnp.eye(t, dtype=dtype))
  rhs = jnp.where(free, -c, 0.0)
  if not simplex:
    return jnp.linalg.solve(a, rhs), jnp.zeros((), dtype)
  f = free.astype(dtype)
  k = jnp.block([[a, f[:, None]], [f[None, :], jnp.zeros((1, 1), dtype)]])
  sol = jnp.linalg.solve(k, jnp.append(rhs, 1.0))
  return sol[:t], sol[t]


def active_set_qp(q: jax.Array, c: jax.Array, *, simplex: bool = False, iters=None) -> jax.Array:
  """argmin ½ xᵀQx + cᵀx over x >= 0 (and on the simplex if `simplex`)."""
  t = q.shape[0]
  dtype = q.dtype
  iters = default_iters(t) if iters is None else iters
  eps = jnp.finfo(dtype).eps
  scale = jnp.max(jnp.abs(jnp.diagonal(q))) + jnp.max(jnp.abs(c)) + eps
  tol_grad = 64 * eps * scale
  tol_x = 64 * eps
  if simplex:  # start at the best vertex
    j0 = jnp.argmin(0.5 * jnp.diagonal(q) + c)
    x0 = jax.nn.one_hot(j0, t, dtype=dtype)
  else:  # start at the origin
    x0 = jnp.zeros((t,), dtype)
  free0 = x0 > 0

  def step(_, state):
    x, free = state
    z, mu = _solve_free(q, c, free, simplex)
    ok = jnp.all(jnp.where(free, z > tol_x, True)) & jnp.all(jnp.isfinite(z))
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
    return (jnp.where(ok, jnp.where(free, z, 0.0), x_back),
            jnp.where(ok, free_ok, free & ~drop))

  x, _ = jax.lax.fori_loop(0, iters, step, (x0, free0))
  return x


def dual_cone_weights(u: jax.Array, gram: jax.Array, *, norm_eps: float, reg_eps: float,
                      iters=None) -> jax.Array:
  """Weights v of the projection of Jᵀu onto the dual cone of J's rows: min vᵀGv s.t. v >= u.

  Same problem and conditioning as torchjd's QuadprogProjector: G is divided by
  its trace and `reg_eps` I is added. Solved for s = v - u >= 0 by `active_set_qp`.
  """
  from mtl_jax.weighting.base import normalize, regularize
  g = regularize(normalize(gram, norm_eps), reg_eps)
  return u + active_set_qp(g, g @ u, iters=iters)
