"""How per-task losses become one parameter update: three strategies behind one interface.

``config.weighting`` picks one (``mtl_jax/weighting/factory.py``, the module
above the strategies: interface here, implementations above it, the factory
on top), and the train step uses it without knowing which it holds:

    grads, carry, metrics = strategy.gradients(problem, params, wstate, rng)
    ... apply the optimizer update ...
    wstate = strategy.update_state(problem, wstate, carry, new_params, step, rng)

* :class:`~mtl_jax.weighting.loss_strategy.LossWeightingStrategy` (default,
  ``name=``): differentiate a loss weighting's ``combine(state, L)``.
* :class:`~mtl_jax.weighting.gramian_strategy.GramianStrategy`
  (``aggregator=``, default ``mode="gramian"`` for Gramian-weighted
  aggregators): G = J Jᵀ accumulated leaf by leaf, weights from G, one
  weighted backward pass; the T x P Jacobian is never stored.
* :class:`~mtl_jax.weighting.jacobian_strategy.JacobianStrategy`
  (``aggregator=``, ``mode="jacobian"``; the default for aggregators that
  need J itself, e.g. GradDrop): the stored T x P Jacobian of the shared
  parameters, aggregated into one direction.
* :class:`~mtl_jax.weighting.representation_strategy.RepresentationStrategy`
  (``aggregator=``, ``mode="representation"``): weights from the Gramian of
  the gradients w.r.t. the shared representation (MGDA-UB), then one
  weighted backward pass.

Per-task static weights (``TaskSpec.weight``) multiply the losses before any
of this. Under data parallelism the losses, hence every Jacobian, are means
over the global batch, so N devices give the same update as one.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LossProblem:
  """What a strategy differentiates, built by the train step for one batch.

  terms: ``(params, features_perturbation or None) -> (per-task losses [T],
    regularizer scalar)``.
  static_weights: [T] per-task config weights, applied before the strategy.
  zero_features: ``() -> {perturbation name: zeros}`` for the shared
    representation (``sharing.zero_perturbations``), or None when the model
    exposes none (only the representation path calls it).
  reg_grad: ``params -> grads`` of the regularizer alone (the Jacobian path
    adds it to the aggregated direction without another backward pass).
  """
  terms: Callable
  static_weights: jax.Array
  zero_features: Optional[Callable[[], Optional[jax.Array]]] = None
  reg_grad: Optional[Callable] = None

  def weighted(self, params, z=None):
    per_task, reg = self.terms(params, z)
    return per_task * self.static_weights, (per_task, reg)

  def vjp(self, params):
    """((weighted losses, (per_task, reg)), vjp_fn); vjp_fn takes (loss cotangent [T], reg cotangent)."""
    def primal(p):
      wl, (per_task, reg) = self.weighted(p)
      return (wl, reg), per_task
    (wl, reg), vjp_fn, per_task = jax.vjp(primal, params, has_aux=True)
    return (wl, (per_task, reg)), vjp_fn


def per_task_grads(vjp_fn, num_tasks: int, loss_dtype, reg_dtype):
  """Each task's gradient, stacked on a leading task axis: T one-hot cotangents of one VJP.

  Vmapped, except on CPU for models without convolution kernels (no parameter of rank >= 4),
  where the T backward passes run one after another (``lax.map``): XLA:CPU runs a T-batched
  dense backward about 1.5x slower than T sequential ones (MLP 100 -> 256 -> 256, batch 512:
  21.0 vs 13.6 ms at T = 8, 96 vs 61 ms at T = 32), while a batched conv backward is much
  faster than sequential ones (SegNet 8/16/32 with conv decoders, 32x32, batch 4, T = 3, one
  thread: UPGrad step 17.9 ms vmapped vs 74.0 ms with lax.map; benchmarks/dense_step_time.py).
  Same result, same [T, ...] output. Decided at trace time from the parameters' shapes.
  """
  eye = jnp.eye(num_tasks, dtype=loss_dtype)

  def one(c):
    return vjp_fn((c, jnp.zeros((), reg_dtype)))[0]
  if jax.default_backend() == "cpu" and not _has_conv_kernels(jax.eval_shape(one, eye[0])):
    return jax.lax.map(one, eye)
  return jax.vmap(one)(eye)


def _has_conv_kernels(param_shapes) -> bool:
  return any(len(x.shape) >= 4 for x in jax.tree.leaves(param_shapes))


def flatten_rows(tree_with_task_axis, mask) -> jax.Array:
  """[T, ...] leaves where ``mask`` is True -> one [T, P] matrix (deterministic leaf order)."""
  leaves = [x.reshape(x.shape[0], -1) for x, m in
            zip(jax.tree.leaves(tree_with_task_axis), jax.tree.leaves(mask)) if m]
  return jnp.concatenate(leaves, axis=1)


class WeightingStrategy:
  """The interface the train step calls. Stateless strategies keep the defaults."""

  def init_state(self) -> Any:
    return {}

  def gradients(self, problem: LossProblem, params, wstate, rng) -> Tuple[Any, Any, Dict[str, Any]]:
    """Returns (parameter gradients, carry for ``update_state``, step metrics).

    Metrics hold at least ``loss`` (the differentiated total), ``task_loss``
    [T], ``regularizer`` and ``task_weight`` [T] (effective per-task weights).
    """
    raise NotImplementedError

  def update_state(self, problem: LossProblem, wstate, carry, new_params, step, rng):
    """The weighting state after the model update (whatever the method needs)."""
    return wstate
