"""Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).

The Nash bargaining weights solve α ⊙ (Gα) = 1, α > 0, i.e. they minimise
the self-concordant ½αᵀGα - Σ log α_i. With G scaled to unit Frobenius norm
(as the official code and torchjd), damped Newton (step 1/(1+λ), λ the Newton
decrement; global convergence, then quadratic) runs a fixed `newton_iters`.
The direction Jᵀα is then clipped to norm `max_norm` (torchjd's default 1;
note ||Jᵀα|| = sqrt(T) at the solution, so the clip is always active then).

Differs from torchjd.NashMTL, which is stateful (warm-starts from the last
call, re-solves every `update_weights_every` steps) and runs 20 rounds of a
cvxpy/ECOS convex-concave scheme: this is the exact, stateless solution.
Rows must be linearly independent for a solution to exist (T <= P).
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, compute_dtype


def nash_weights(gram: jax.Array, iters: int = 40) -> jax.Array:
  """α with α ⊙ (Gα) = 1 by Newton on G/||G||_F, then rescaled.

  Each step has a fixed-cost line search: the damped step 1/(1+λ) (λ the Newton
  decrement; alone it converges for this self-concordant function) and the steps 1,
  1/2, ..., 1/64, all evaluated at once, the best kept (the full step once λ < 1/4,
  where it converges quadratically). The Newton system
  H = G + diag(1/α²) is solved as D(DGD + I)D with D = diag(α): DGD + I has eigenvalues
  >= 1, so one Cholesky (O(T³/3)) is stable in float32 however singular G is.
  """
  gram = gram.astype(compute_dtype(gram.dtype))
  t = gram.shape[0]
  nf = jnp.sqrt(jnp.sum(gram * gram))
  g = gram / jnp.where(nf > 0, nf, 1.0)
  eye = jnp.eye(t, dtype=g.dtype)

  def objective(x):  # ½xᵀgx - Σ log x per column; +inf outside x > 0
    pos = jnp.all((x > 0) & jnp.isfinite(x), axis=0)
    val = 0.5 * jnp.sum(x * (g @ x), axis=0) - jnp.sum(jnp.log(jnp.where(x > 0, x, 1.0)), axis=0)
    return jnp.where(pos, val, jnp.inf)

  def newton(_, a):
    grad = g @ a - 1.0 / a
    m = a[:, None] * g * a[None, :] + eye
    step = -a * jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(m), a * grad)
    dec = jnp.sqrt(jnp.clip(-grad @ step, 0.0))
    # Fixed-cost line search: the damped step 1/(1+λ) (always feasible and decreasing) and
    # seven longer ones, all evaluated at once; keep the best.
    sizes = jnp.concatenate([2.0 ** -jnp.arange(7, dtype=g.dtype), (1.0 / (1.0 + dec))[None]])
    cand = jnp.concatenate([a[:, None] + step[:, None] * sizes[None, :], a[:, None]], axis=1)
    vals = objective(cand)  # the last candidate is `a` itself: never worse, never NaN
    searched = cand[:, jnp.argmin(jnp.where(jnp.isnan(vals), jnp.inf, vals))]
    # λ < 1/4: the full step stays in the domain and converges quadratically; take it, since
    # float32 objective values can no longer rank the candidates there.
    full = a + step
    full_ok = (dec < 0.25) & jnp.all((full > 0) & jnp.isfinite(full))
    return jnp.where(full_ok, full, searched)

  # Start at the solution for orthogonal rows, α_i = 1/||g_i||: rows of very different norms
  # would otherwise spend most of the damped phase rescaling α.
  diag = jnp.diagonal(g)
  a0 = jnp.where(diag > 0, 1.0 / jnp.sqrt(jnp.where(diag > 0, diag, 1.0)), 1.0)
  a = jax.lax.fori_loop(0, iters, newton, a0)
  return a / jnp.sqrt(jnp.where(nf > 0, nf, 1.0))


@AGGREGATORS.register("nash_mtl")
class NashMTL(GramianWeighted):
  """Options: max_norm (clip of the direction's norm; 0 disables), newton_iters."""

  def __init__(self, max_norm=1.0, newton_iters=40):
    if max_norm < 0:
      raise ValueError(f"max_norm must be non-negative, got {max_norm}")
    self.max_norm, self.newton_iters = max_norm, newton_iters

  def weights(self, gram, rng=None):
    gram = gram.astype(compute_dtype(gram.dtype))
    a = nash_weights(gram, self.newton_iters)
    if self.max_norm > 0:
      norm = jnp.sqrt(jnp.clip(a @ gram @ a, 0.0))
      a = jnp.where(norm > self.max_norm, a * self.max_norm / jnp.where(norm > 0, norm, 1.0), a)
    return a
