"""Shared pieces of the aggregators: the registry, the Gramian helpers, two base classes.

An aggregator maps a Jacobian J [T, P] (row t = gradient of task t) to one
update direction [P]. Most of them only need the Gramian G = J Jᵀ [T, T]:
they pick weights w = weights(G) and return wᵀ J, so the expensive part
never touches P (as torchjd's GramianWeightedAggregator).
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from mtl_jax.registry import Registry

AGGREGATORS = Registry("aggregator")


def gramian(jacobian: jax.Array) -> jax.Array:
  """J Jᵀ at full precision, accumulated in float32 at least (bf16 Jacobians included): the
  QPs downstream are sensitive to TF32/bf16 rounding."""
  return jnp.matmul(jacobian, jacobian.T, precision=jax.lax.Precision.HIGHEST,
                    preferred_element_type=compute_dtype(jacobian.dtype))


def compute_dtype(dtype):
  """float32 for bf16/f16 inputs (the solvers need the mantissa), else the input's own dtype."""
  return jnp.promote_types(dtype, jnp.float32)


def normalize(g: jax.Array, eps: float) -> jax.Array:
  """G / trace(G) (J scaled to unit Frobenius norm); all zeros when trace < eps (as torchjd)."""
  trace = jnp.trace(g)
  return jnp.where(trace < eps, jnp.zeros_like(g), g / jnp.where(trace < eps, 1.0, trace))


def regularize(g: jax.Array, eps: float) -> jax.Array:
  """G + eps I, so the QPs see a positive definite matrix."""
  return g + eps * jnp.eye(g.shape[0], dtype=g.dtype)


def pref_weights(pref_vector: Optional[Sequence[float]], num_tasks: int, dtype) -> jax.Array:
  """The preference vector, or the mean weights 1/T when none is given."""
  if pref_vector is None:
    return jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
  pref = jnp.asarray(pref_vector, dtype)
  if pref.shape != (num_tasks,):
    raise ValueError(f"pref_vector has shape {pref.shape}, expected ({num_tasks},)")
  return pref


def require_rng(rng: Optional[jax.Array], name: str) -> jax.Array:
  if rng is None:
    raise ValueError(f"aggregator {name!r} is random: pass a PRNG key as `rng`")
  return rng


class Aggregator:
  """Callable `(jacobian [T, P], rng) -> direction [P]`; pure, so `jax.jit(agg)` works."""

  def __call__(self, jacobian: jax.Array, rng: Optional[jax.Array] = None) -> jax.Array:
    raise NotImplementedError

  def __repr__(self) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
    return f"{type(self).__name__}({opts})"


class GramianWeighted(Aggregator):
  """Aggregator whose weights depend on G = J Jᵀ only; `weights(G, rng)` is public, so a
  train step that gets G another way (e.g. from a smaller representation) can reuse it."""

  def weights(self, gram: jax.Array, rng: Optional[jax.Array] = None) -> jax.Array:
    raise NotImplementedError

  def __call__(self, jacobian: jax.Array, rng: Optional[jax.Array] = None) -> jax.Array:
    w = self.weights(gramian(jacobian), rng)
    return jnp.matmul(w.astype(jacobian.dtype), jacobian, precision=jax.lax.Precision.HIGHEST)
