"""Gramian-weighted aggregation without storing the T x P Jacobian (the default path).

For an aggregator whose weights depend only on G = J Jᵀ (``GramianWeighted``),
the update of the shared parameters is wᵀJ = ∇(Σ_t w_t L_t). So:

1. G, by one of two engines (``weighting.gramian_engine``):
   * ``"leaf"`` (default, the fastest): per-task gradients of the shared
     parameters from one forward pass and T one-hot cotangents of its VJP
     (``per_task_grads``), each leaf's [T, p] block contracted to [T, T].
     Nothing of size T x P is concatenated, but the blocks of all leaves
     are alive at once, so the scratch still grows like T x P (about 21x
     EW's at T = 32 on a 10M-parameter trunk; ``benchmarks/weighting_scale.py``).
   * ``"rows"``: row s of G is J g_s, the JVP of the T losses along task s's
     gradient g_s; the rows are mapped ``gramian_chunk`` at a time, so the
     scratch is about that many gradients (1.4x EW's on a 10M-parameter
     trunk at T = 32), for 1.6-1.8x the time of "leaf" on CPU.
   Both are exact, with or without gradient accumulation.
2. w = aggregator.weights(G);
3. one backward pass with cotangent w for the shared parameters, and one
   with cotangent 1 for the task-specific ones.

Heads' convention, identical on every aggregator path: each task-specific
parameter gets the plain (static-weighted) gradient of its own task, i.e.
the gradient of Σ_t L_t, not w_t times it. The two backward passes are
separate calls whose unused halves XLA removes, so the trunk is
differentiated once more and the heads once more, nothing else. The
Gramian is accumulated in float32 at least (float64 stays float64), so a
bfloat16 forward still gets float32 weights.
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import compute_dtype, gramian
from mtl_jax.weighting.strategy import LossProblem, WeightingStrategy, per_task_grads


def accumulate_gramian(per_task_tree, mask) -> jax.Array:
  """Σ over masked leaves of J_leaf J_leafᵀ, leaf by leaf ([T, ...] leaves -> [T, T])."""
  gram = None
  for g, m in zip(jax.tree.leaves(per_task_tree), jax.tree.leaves(mask)):
    if not m:
      continue
    g = g.reshape(g.shape[0], -1)
    block = gramian(g.astype(compute_dtype(g.dtype)))
    gram = block if gram is None else gram + block
  return gram


def gram_stats(gram: jax.Array):
  """Per-task gradient norms [T] and pairwise cosines [T, T] from the Gramian."""
  norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
  cos = gram / jnp.maximum(norms[:, None] * norms[None, :], 1e-12)
  return {"task_grad_norm": norms, "task_grad_cosine": cos}


def select(mask, if_true, if_false):
  return jax.tree.map(lambda m, a, b: a if m else b, mask, if_true, if_false)


ENGINES = ("leaf", "rows")


def gramian_by_rows(problem: LossProblem, params, mask, num_tasks: int, chunk: int = 1):
  """G row by row: g_s = VJP(e_s), then row s = J g_s, the JVP of the T losses along g_s.

  ``lax.map`` over the tasks, ``chunk`` rows vmapped at a time, so the
  scratch is about ``chunk`` gradients (O(chunk x P)), not T of them, for
  a JVP per task on top of the leaf engine's backward work. One
  linearization serves the rows and the final weighted passes; exact under gradient accumulation,
  weight tying and lifted transforms, since it only uses J's products.
  Returns (G, the forward's outputs, vjp_fn), the outputs and vjp_fn as
  ``problem.vjp`` gives them.
  """
  def primal(p):
    wl, (per_task, reg) = problem.weighted(p)
    return (wl, reg), per_task

  (wl, reg), jvp_fn, per_task = jax.linearize(primal, params, has_aux=True)
  vjp_fn = jax.linear_transpose(jvp_fn, params)
  zero_reg = jnp.zeros((), reg.dtype)
  dtype = compute_dtype(wl.dtype)

  def row(e):
    g = vjp_fn((e, zero_reg))[0]
    return jvp_fn(select(mask, g, jax.tree.map(jnp.zeros_like, g)))[0].astype(dtype)

  eye = jnp.eye(num_tasks, dtype=wl.dtype)
  gram = jax.lax.map(row, eye, batch_size=min(chunk, num_tasks) if chunk > 1 else None)
  return 0.5 * (gram + gram.T), (wl, (per_task, reg)), vjp_fn


class GramianStrategy(WeightingStrategy):
  """``engine="leaf"`` (default, fastest): the shared leaves' per-task gradients from T
  cotangents of one VJP (``per_task_grads``), each [T, p] block contracted (the scratch
  grows like T x P). ``engine="rows"``:
  :func:`gramian_by_rows`, O(chunk x P) scratch for a JVP per task on top."""

  def __init__(self, aggregator, num_tasks: int, shared_mask, engine: str = "leaf",
               chunk: int = 1):
    if engine not in ENGINES:
      raise ValueError(f"weighting.gramian_engine must be one of {list(ENGINES)}, got {engine!r}")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
      raise ValueError(f"weighting.gramian_chunk must be an integer >= 1, got {chunk!r}")
    self.aggregator, self.num_tasks, self.shared_mask = aggregator, num_tasks, shared_mask
    self.engine, self.chunk = engine, chunk

  def gramian(self, problem: LossProblem, params):
    """(G [T, T], the forward's (weighted losses, (per-task losses, reg)), its vjp_fn)."""
    if self.engine == "rows":
      return gramian_by_rows(problem, params, self.shared_mask, self.num_tasks, self.chunk)
    out, vjp_fn = problem.vjp(params)
    wl, (_, reg) = out
    gram = accumulate_gramian(per_task_grads(vjp_fn, self.num_tasks, wl.dtype, reg.dtype),
                              self.shared_mask)
    return gram, out, vjp_fn

  def gradients(self, problem: LossProblem, params, wstate, rng):
    gram, (wl, (per_task, reg)), vjp_fn = self.gramian(problem, params)
    weights = jax.lax.stop_gradient(self.aggregator.weights(gram, rng))
    one = jnp.ones((), reg.dtype)
    shared = vjp_fn((weights.astype(wl.dtype), one))[0]
    own = vjp_fn((jnp.ones_like(wl), one))[0]
    metrics = {"task_loss": per_task, "regularizer": reg, "task_weight": weights,
               "loss": jnp.sum(wl) + reg}
    metrics.update(gram_stats(gram))
    return select(self.shared_mask, shared, own), None, metrics
