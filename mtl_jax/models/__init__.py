"""Model construction from ``config.model``."""

from typing import Sequence

import flax.linen as nn

from mtl_jax.models.heads import outputs_by_task  # noqa: F401
from mtl_jax.models.sharing import SHARING
from mtl_jax.models.trunks import TRUNKS  # noqa: F401
from mtl_jax.models import lenet  # noqa: F401  (registers the lenet trunk)
from mtl_jax.models import bert  # noqa: F401  (registers the bert trunk)
from mtl_jax.models import resnet  # noqa: F401  (registers the resnet trunk)
from mtl_jax.models import vit  # noqa: F401  (registers the vit trunk)
from mtl_jax.models import extraction  # noqa: F401  (registers the cgc and ple schemes)
from mtl_jax.models import dselect_k  # noqa: F401  (registers dselect_k, selector_entropy)
# dense prediction (issue 19): encoder-decoder trunks, MTAN
from mtl_jax.models import segnet  # noqa: F401  (registers the segnet trunk)
from mtl_jax.models import dilated_resnet  # noqa: F401  (registers the dilated_resnet trunk)
from mtl_jax.models import mtan  # noqa: F401  (registers the mtan scheme)
from mtl_jax.tasks import TaskGroup


def build_model(model_config, groups: Sequence[TaskGroup]) -> nn.Module:
  """``model_config`` = {"sharing": registry name, **scheme options}."""
  kwargs = dict(model_config)
  for key in ("dtype", "param_dtype"):  # the precision policy (mtl_jax/precision.py), not the module's
    kwargs.pop(key, None)
  kwargs = _trunk_inherits_dtype(kwargs, model_config.get("dtype"))
  cls = SHARING.get(kwargs.pop("sharing", "hard"))
  valid = [f for f in cls.__dataclass_fields__ if f not in ("parent", "name", "groups")]
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"sharing {model_config.get('sharing', 'hard')!r}: unknown model options "
                     f"{unknown}; valid: {valid}")
  for k, v in kwargs.items():  # ConfigDicts and lists -> plain hashable values for flax
    if hasattr(v, "to_dict"):
      kwargs[k] = v.to_dict()
    elif isinstance(v, list):
      kwargs[k] = tuple(v)
  return cls(groups=tuple(groups), **kwargs)


def _trunk_inherits_dtype(kwargs, compute_dtype):
  """A trunk that computes in a ``dtype`` field of its own (``bert``: its inputs are token ids,
  which the precision policy does not cast) takes ``model.dtype`` unless it sets one itself;
  otherwise ``model.dtype="bfloat16"`` would leave its matmuls in float32 on bf16-rounded
  weights, silently."""
  trunk = kwargs.get("trunk")
  if not compute_dtype or trunk is None:
    return kwargs
  trunk = trunk.to_dict() if hasattr(trunk, "to_dict") else dict(trunk)
  cls = TRUNKS.get(trunk["name"]) if "name" in trunk and trunk["name"] in TRUNKS else None
  if cls is None or "dtype" not in cls.__dataclass_fields__ or "dtype" in trunk:
    return kwargs
  return dict(kwargs, trunk=dict(trunk, dtype=compute_dtype))
