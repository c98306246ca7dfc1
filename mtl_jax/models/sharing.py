"""How tasks share parameters. One registry entry per scheme; configs pick one
with ``config.model.sharing``. Every model maps inputs to a dict of stacked
group outputs ``{group.key: [T_g, batch, num_outputs]}``."""

from typing import Any, Dict, Sequence

import flax.linen as nn
import jax

from mtl_jax.models.heads import TaskHeads
from mtl_jax.models.trunks import build_trunk
from mtl_jax.registry import Registry
from mtl_jax.tasks import TaskGroup

SHARING = Registry("sharing scheme")


@SHARING.register("hard")
class HardSharing(nn.Module):
  """Hard parameter sharing: one trunk for all tasks, one head per task."""
  trunk: Dict[str, Any]
  groups: Sequence[TaskGroup]
  head_hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    features = build_trunk(self.trunk, name="trunk")(inputs, train=train)
    return TaskHeads(self.groups, tuple(self.head_hidden), name="heads")(features)
