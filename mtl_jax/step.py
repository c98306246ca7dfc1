"""The pure train and eval steps and the state they thread.

``make_train_step(...)`` returns ``(state, batch) -> (state, metrics)``; it is
jitted (and vmapped over replicas) by ``mtl_jax.run.setup``. The gradient
side is a weighting strategy (mtl_jax/weighting/strategy.py) the step calls
without knowing which one it holds.
"""

import dataclasses
from typing import Any, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import optax

from mtl_jax import losses, routing, tasks
from mtl_jax.models.columns import task_order
from mtl_jax.models.sharing import TASK_FEATURES, variables, zero_perturbations
from mtl_jax.precision import Policy
from mtl_jax.weighting.factory import build_strategy
from mtl_jax.weighting.strategy import LossProblem, WeightingStrategy


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  # State of the weighting method (e.g. uncertainty log-variances); {} for most.
  weighting: Any = dataclasses.field(default_factory=dict)


def split_microbatches(tree, k: int):
  """[B, ...] leaves -> [k, B/k, ...]; microbatch j holds rows j, j+k, j+2k, ...

  Strided rows keep every microbatch spread evenly over the devices that
  hold contiguous slices of the batch, so the split moves no data.
  """
  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"grad_accum_steps={k} does not divide the batch axis of size "
                       f"{x.shape[0]}")
    return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, tree)


def make_train_step(*, model, tx, specs: Sequence[tasks.TaskSpec],
                    groups: Sequence[tasks.TaskGroup], trainable, regularizer=None,
                    strategy: Optional[WeightingStrategy] = None,
                    policy: Policy = Policy(), grad_accum_steps: int = 1):
  """Returns the pure step ``(state, batch) -> (state, metrics)``.

  ``regularizer`` (optional) maps params to a scalar added to the loss;
  ``strategy`` turns per-task losses into gradients (default: the weighted sum);
  ``policy`` is the mixed-precision policy (mtl_jax/precision.py).

  ``grad_accum_steps=K`` runs the forward and backward passes over K
  microbatches in a rematerialized ``lax.scan`` (one microbatch's activations
  live at a time). Each microbatch's masked mean is weighted by its share of
  the batch's labelled units, so the per-task losses, hence every strategy's
  update, equal those of the whole batch at once (dropout aside: each
  microbatch draws its own mask). Per-task gradients (Jacobian and Gramian
  paths, GradNorm) are accumulated as sums of the microbatches' per-task
  gradients, then aggregated: exact, with the Jacobian path's T x P memory;
  the representation path's Gramian is exact as well (its rows are the
  concatenation of the microbatches' rows).

  Frozen leaves (``trainable`` False) pass through ``stop_gradient``: their
  gradient is a symbolic zero, so XLA never computes their backward pass.
  """
  weights = jnp.asarray([s.weight for s in specs], jnp.float32)
  routed = bool(getattr(model, "route_heads", False))  # mtl_jax/routing.py
  # TASK_FEATURES copies come in spec order (the losses' order, so row t of the
  # representation Jacobian is task t's); models route copy r to task_order(groups)[r].
  names = [s.name for s in specs]
  copy_rows = [names.index(n) for n in task_order(groups)]
  reorder = copy_rows != list(range(len(names)))

  def freeze(params):
    return jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    dropout_rng, weighting_rng = jax.random.split(rng)
    strat = strategy or build_strategy(None, len(specs), state.params)

    inputs = policy.for_compute(batch["inputs"])

    def forward(params, z, inputs, labels, mask, rng):
      routes = routing.route_indices(groups, mask) if routed else None
      if reorder and z is not None and TASK_FEATURES in z:
        z = {**z, TASK_FEATURES: z[TASK_FEATURES][jnp.asarray(copy_rows)]}
      outputs = model.apply(variables(policy.for_compute(params), z, routes), inputs, train=True,
                            rngs={"dropout": rng})
      if routed:
        return routing.routed_task_losses(specs, groups, policy.for_output(outputs), labels,
                                          mask, routes)
      return losses.task_losses(specs, groups, policy.for_output(outputs), labels, mask)

    if grad_accum_steps == 1:
      def per_task_losses(params, z):
        return forward(params, z, inputs, batch["labels"], batch["mask"], dropout_rng)
    else:
      micro = split_microbatches((inputs, batch["labels"], batch["mask"]), grad_accum_steps)
      total = jnp.maximum(losses.task_loss_counts(specs, groups, batch["labels"], batch["mask"]),
                          1.0)

      def per_task_losses(params, z):
        zs = None
        if z is not None:  # per-task copies carry the batch on axis 1
          zs = {k: (split_microbatches(jnp.moveaxis(v, 1, 0), grad_accum_steps).swapaxes(1, 2)
                    if k == TASK_FEATURES else split_microbatches(v, grad_accum_steps))
                for k, v in z.items()}

        def body(acc, xs):
          (x, labels, mask), zk, k = xs
          per = forward(params, zk, x, labels, mask, jax.random.fold_in(dropout_rng, k))
          share = losses.task_loss_counts(specs, groups, labels, mask) / total
          return acc + per * share.astype(per.dtype), None

        init = jnp.zeros((len(specs),), policy.output)
        return jax.lax.scan(jax.checkpoint(body), init,
                            (micro, zs, jnp.arange(grad_accum_steps)))[0]

    def terms(params, z):
      params = freeze(params)
      per_task = per_task_losses(params, z)
      reg = regularizer(params) if regularizer else jnp.zeros((), jnp.float32)
      return per_task, reg

    problem = LossProblem(
        terms=terms, static_weights=weights,
        zero_features=lambda: zero_perturbations(model, inputs, policy.for_compute(state.params),
                                                 len(specs)),
        reg_grad=jax.grad(lambda p: regularizer(freeze(p))) if regularizer else None)
    grads, carry, step_metrics = strat.gradients(problem, state.params, state.weighting,
                                                 weighting_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    wstate = strat.update_state(problem, state.weighting, carry, params, state.step,
                                weighting_rng)
    step_metrics.update(
        labelled=jnp.stack([batch["mask"][s.name].sum() for s in specs]),
        grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         weighting=wstate), step_metrics

  return train_step


def make_eval_step(model, policy: Policy = Policy()):
  def eval_step(params, inputs):
    outputs = model.apply({"params": policy.for_compute(params)}, policy.for_compute(inputs),
                          train=False)
    return policy.for_output(outputs)
  return eval_step
