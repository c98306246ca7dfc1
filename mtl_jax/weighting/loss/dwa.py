"""Dynamic Weight Average (DWA; Liu, Johns & Davison, "End-to-End Multi-Task Learning with
Attention" (MTAN), CVPR 2019).

The paper weights task k in epoch t by the rate its loss fell over the previous
two epochs:

    λ_k(t) = K exp(r_k(t-1) / T) / Σ_i exp(r_i(t-1) / T),   r_k(t-1) = L_k(t-1) / L_k(t-2),

with L_k(t) the training loss of task k averaged over epoch t, temperature T = 2,
and λ_k = 1 for the first two epochs (no ratio yet). Here an "epoch" is a window
of `window_steps` consecutive train steps (set it to the steps per epoch to
match the paper; streamed data has no epochs): `update` averages the losses
over the current window, and the weights used during window n come from the
averages of windows n-1 and n-2, so windows 0 and 1 use weights 1. The state is
the running window sum and count plus the last two window averages.
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.loss.base import LOSS_WEIGHTINGS, LossWeighting


@LOSS_WEIGHTINGS.register("dwa")
class DWA(LossWeighting):
  """Weights T·softmax((L(n-1)/L(n-2)) / temperature) over step windows of `window_steps`."""

  def __init__(self, num_tasks: int, window_steps: int = 100, temperature: float = 2.0):
    super().__init__(num_tasks)
    if int(window_steps) != window_steps or window_steps < 1:
      raise ValueError(f"dwa: window_steps must be a positive integer, got {window_steps!r}")
    if not temperature > 0:
      raise ValueError(f"dwa: temperature must be positive, got {temperature!r}")
    self.window_steps = int(window_steps)
    self.temperature = float(temperature)

  def init(self):
    # Every leaf its own array: the train step donates the state, and an aliased
    # buffer would be donated twice.
    ones = lambda: jnp.ones((self.num_tasks,), jnp.float32)  # noqa: E731
    zero = lambda: jnp.zeros((), jnp.float32)  # noqa: E731
    return {"window_sum": jnp.zeros((self.num_tasks,), jnp.float32), "window_count": zero(),
            "last": ones(), "before_last": ones(), "windows_done": zero()}

  def weights(self, state, rng):
    ratio = state["last"] / jnp.maximum(state["before_last"], jnp.finfo(jnp.float32).tiny)
    w = self.num_tasks * jax.nn.softmax(ratio / self.temperature)
    return jnp.where(state["windows_done"] >= 2, w, jnp.ones_like(w))

  def update(self, state, info):
    total = state["window_sum"] + jnp.asarray(info.losses, jnp.float32)
    count = state["window_count"] + 1
    done = count >= self.window_steps
    mean = total / count
    return {
        "window_sum": jnp.where(done, 0.0, total),
        "window_count": jnp.where(done, 0.0, count),
        "last": jnp.where(done, mean, state["last"]),
        "before_last": jnp.where(done, state["last"], state["before_last"]),
        "windows_done": jnp.where(done, jnp.minimum(state["windows_done"] + 1, 2.0),
                                  state["windows_done"]),
    }
