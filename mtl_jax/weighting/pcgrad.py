"""PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Algorithm 1).

For each task i, start from g_i and, visiting the other tasks in a random
order, remove the component along g_j whenever the running vector conflicts
with g_j; return the SUM of the T surgered gradients (as the paper and
torchjd.PCGrad). Done on weights via the Gramian; one permutation per task
drawn from `rng`, like torchjd's one randperm per task.
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, compute_dtype, require_rng


def pcgrad_weights(gram: jax.Array, perms: jax.Array) -> jax.Array:
  """Weights of Σ_i g_i^PC given the visiting order perms[i] of task i (int [T, T])."""
  gram = gram.astype(compute_dtype(gram.dtype))
  t = gram.shape[0]
  diag = jnp.diagonal(gram)

  def one_task(i, perm):
    def visit(k, w):
      j = perm[k]
      inner = gram[j] @ w
      fix = (j != i) & (inner < 0) & (diag[j] > 0)
      return w.at[j].add(jnp.where(fix, -inner / jnp.where(diag[j] > 0, diag[j], 1.0), 0.0))
    return jax.lax.fori_loop(0, t, visit, jax.nn.one_hot(i, t, dtype=gram.dtype))

  return jnp.sum(jax.vmap(one_task)(jnp.arange(t), perms), axis=0)


@AGGREGATORS.register("pcgrad")
class PCGrad(GramianWeighted):
  """Random: needs `rng` (the visiting orders)."""

  def weights(self, gram, rng=None):
    t = gram.shape[0]
    u = jax.random.uniform(require_rng(rng, "pcgrad"), (t, t), jnp.float32)  # same orders under x64
    return pcgrad_weights(gram, jnp.argsort(u, axis=1))  # one uniform permutation per task
