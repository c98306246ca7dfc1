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

from mtl_jax import losses, tasks
from mtl_jax.models.sharing import variables, zero_features
from mtl_jax.precision import Policy
from mtl_jax.weighting.strategy import LossProblem, WeightingStrategy, build_strategy


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  # State of the weighting method (e.g. uncertainty log-variances); {} for most.
  weighting: Any = dataclasses.field(default_factory=dict)


def make_train_step(*, model, tx, specs: Sequence[tasks.TaskSpec],
                    groups: Sequence[tasks.TaskGroup], trainable, regularizer=None,
                    strategy: Optional[WeightingStrategy] = None,
                    policy: Policy = Policy()):
  """Returns the pure step ``(state, batch) -> (state, metrics)``.

  ``regularizer`` (optional) maps params to a scalar added to the loss;
  ``strategy`` turns per-task losses into gradients (default: the weighted sum);
  ``policy`` is the mixed-precision policy (mtl_jax/precision.py).

  Frozen leaves (``trainable`` False) pass through ``stop_gradient``: their
  gradient is a symbolic zero, so XLA never computes their backward pass.
  """
  weights = jnp.asarray([s.weight for s in specs], jnp.float32)

  def freeze(params):
    return jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    dropout_rng, weighting_rng = jax.random.split(rng)
    strat = strategy or build_strategy(None, len(specs), state.params)

    inputs = policy.for_compute(batch["inputs"])

    def terms(params, z):
      params = freeze(params)
      outputs = model.apply(variables(policy.for_compute(params), z), inputs, train=True,
                            rngs={"dropout": dropout_rng})
      outputs = policy.for_output(outputs)
      per_task = losses.task_losses(specs, groups, outputs, batch["labels"], batch["mask"])
      reg = regularizer(params) if regularizer else jnp.zeros((), jnp.float32)
      return per_task, reg

    problem = LossProblem(
        terms=terms, static_weights=weights,
        zero_features=lambda: zero_features(model, inputs, policy.for_compute(state.params)),
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
