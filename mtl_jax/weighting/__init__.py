"""Gradient aggregators for multi-task learning: pure functions of the Jacobian [T, P].

    from mtl_jax.weighting import AGGREGATORS
    agg = AGGREGATORS.get("upgrad")()        # options as keyword arguments
    direction = agg(jacobian, rng)           # [P]; rng used by random methods only

One file per method (docs/weighting.md); each registers itself here.
"""

from mtl_jax.weighting.base import (AGGREGATORS, Aggregator, GramianWeighted, gramian, normalize,
                                    regularize)
from mtl_jax.weighting.aligned_mtl import AlignedMTL
from mtl_jax.weighting.cagrad import CAGrad
from mtl_jax.weighting.config import ConFIG
from mtl_jax.weighting.dualproj import DualProj
from mtl_jax.weighting.graddrop import GradDrop, graddrop_from_uniform
from mtl_jax.weighting.imtl_g import IMTLG
from mtl_jax.weighting.mean import Constant, Mean, Sum
from mtl_jax.weighting.mgda import MGDA
from mtl_jax.weighting.nash_mtl import NashMTL, nash_weights
from mtl_jax.weighting.pcgrad import PCGrad, pcgrad_weights
from mtl_jax.weighting.qp import active_set_qp, dual_cone_weights
from mtl_jax.weighting.random_weighting import RandomWeighting
from mtl_jax.weighting.upgrad import UPGrad

__all__ = [
    "AGGREGATORS", "Aggregator", "GramianWeighted", "gramian", "normalize", "regularize",
    "AlignedMTL", "CAGrad", "ConFIG", "Constant", "DualProj", "GradDrop", "IMTLG", "MGDA",
    "Mean", "NashMTL", "PCGrad", "RandomWeighting", "Sum", "UPGrad",
    "active_set_qp", "dual_cone_weights", "graddrop_from_uniform", "nash_weights",
    "pcgrad_weights",
]
