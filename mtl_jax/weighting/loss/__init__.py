"""Loss weightings for multi-task learning: pure objects with explicit, checkpointable state.

    from mtl_jax.weighting.loss import LOSS_WEIGHTINGS, StepInfo
    m = LOSS_WEIGHTINGS.get("dwa")(num_tasks=T, window_steps=100)
    state = m.init()
    total, weights = m.combine(state, losses, rng)   # differentiate total w.r.t. (params, state)
    state = m.update(state, StepInfo(step, losses, state_grad, layer_grad_norms, new_losses, rng))

One file per method; each registers itself here. See base.py for the contract.
"""

from mtl_jax.weighting.loss.base import (LOSS_WEIGHTINGS, LossWeighting, StepInfo, opt_init,
                                         opt_step)
from mtl_jax.weighting.loss.dwa import DWA
from mtl_jax.weighting.loss.equal import Equal
from mtl_jax.weighting.loss.famo import FAMO
from mtl_jax.weighting.loss.gradnorm import GradNorm
from mtl_jax.weighting.loss.rlw import RLW
from mtl_jax.weighting.loss.static import Static
from mtl_jax.weighting.loss.uncertainty import Uncertainty

__all__ = [
    "LOSS_WEIGHTINGS", "LossWeighting", "StepInfo", "opt_init", "opt_step",
    "DWA", "Equal", "FAMO", "GradNorm", "RLW", "Static", "Uncertainty",
]
