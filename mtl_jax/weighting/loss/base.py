"""Loss weightings: the interface, `StepInfo`, and a tiny explicit-state optimizer.

A loss weighting turns the per-task losses [T] into the scalar the model
differentiates. Unlike the aggregators in `mtl_jax.weighting` it never sees the
Jacobian, so it costs one backward pass; the price is that adaptive methods
carry state across steps. That state is an explicit pytree (it lives in the
checkpointed train state), and every leaf is floating point so that the caller
can take `jax.grad` of `total` w.r.t. `(params, state)` without float0 leaves:

    m = LOSS_WEIGHTINGS.get(name)(num_tasks=T, **options)
    state = m.init()
    total, weights = m.combine(state, losses, rng)   # inside the loss function
    state = m.update(state, StepInfo(...))           # once per step, after the model update

`combine` stops gradients through every state entry the method does not learn
by gradient of `total`, so `StepInfo.state_grad` is zero there.
"""

from typing import Any, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp

from mtl_jax.registry import Registry

LOSS_WEIGHTINGS = Registry("loss weighting")
State = Dict[str, Any]


class StepInfo(NamedTuple):
  """What `update` sees of one train step; fields a method does not need may be None."""
  step: jax.Array                             # int32 scalar
  losses: jax.Array                           # [T] at the old params, stop-gradient
  state_grad: Any = None                      # d total / d state, same pytree as state
  layer_grad_norms: Optional[jax.Array] = None  # [T] ||d L_t / d W||, if needs_layer_grad_norms
  new_losses: Optional[jax.Array] = None      # [T] at the updated params, if needs_new_losses
  rng: Optional[jax.Array] = None


class LossWeighting:
  """Base: weights from `weights(state, rng)`, held constant; `total = Σ_t w_t L_t`."""

  needs_layer_grad_norms = False
  needs_new_losses = False
  layer_regex: Optional[str] = None

  def __init__(self, num_tasks: int):
    if int(num_tasks) != num_tasks or num_tasks < 1:
      raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
    self.num_tasks = int(num_tasks)

  def init(self) -> State:
    return {}

  def weights(self, state: State, rng: Optional[jax.Array]) -> jax.Array:
    raise NotImplementedError

  def combine(self, state: State, losses: jax.Array,
              rng: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    losses = self.check_losses(losses)
    w = jax.lax.stop_gradient(self.weights(state, rng)).astype(losses.dtype)
    return jnp.sum(w * losses), w

  def update(self, state: State, info: StepInfo) -> State:
    return state

  def check_losses(self, losses) -> jax.Array:
    """Shapes are static under jit, so a wrong task count fails at trace time."""
    losses = jnp.asarray(losses)
    if losses.shape != (self.num_tasks,):
      raise ValueError(f"{type(self).__name__}: losses have shape {losses.shape}, "
                       f"expected ({self.num_tasks},)")
    return losses

  def require(self, value, field: str):
    if value is None:
      raise ValueError(f"{type(self).__name__}.update needs StepInfo.{field}")
    return value

  def __repr__(self) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
    return f"{type(self).__name__}({opts})"


class LearnedLossWeighting(LossWeighting):
  """A weighting whose per-task vector ``state[learned]`` is trained by its own small optimizer
  (options ``lr`` and ``optimizer``, "adam" or "sgd"); the vector starts at ``initial``."""

  learned = ""
  initial = 0.0

  def __init__(self, num_tasks: int, lr: float, optimizer: str):
    super().__init__(num_tasks)
    self.lr = float(lr)
    self.optimizer = check_optimizer(optimizer)

  def init(self) -> State:
    x = jnp.full((self.num_tasks,), self.initial, jnp.float32)
    return {self.learned: x, "opt": opt_init(self.optimizer, x)}


OPTIMIZERS = ("sgd", "adam")


def check_optimizer(name: str) -> str:
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; valid names: {list(OPTIMIZERS)}")
  return name


def opt_init(name: str, x: jax.Array) -> State:
  """Optimizer slots for x; counts are float so the whole state stays differentiable."""
  if name == "sgd":
    return {}
  return {"mu": jnp.zeros_like(x), "nu": jnp.zeros_like(x), "count": jnp.zeros((), x.dtype)}


def opt_step(name: str, lr: float, slots: State, x: jax.Array, g: jax.Array,
             b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> tuple[jax.Array, State]:
  """One SGD or Adam step (bias-corrected, eps outside the sqrt, as torch/optax) on x."""
  if name == "sgd":
    return x - lr * g, slots
  count = slots["count"] + 1
  mu = b1 * slots["mu"] + (1 - b1) * g
  nu = b2 * slots["nu"] + (1 - b2) * g * g
  step = (mu / (1 - b1 ** count)) / (jnp.sqrt(nu / (1 - b2 ** count)) + eps)
  return x - lr * step, {"mu": mu, "nu": nu, "count": count}
