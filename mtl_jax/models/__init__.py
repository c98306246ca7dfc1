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
from mtl_jax.models import mlm_head  # noqa: F401  (registers the masked_lm head)
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
  kwargs = _trunk_task_embedding(kwargs, kwargs.pop("task_embedding", None))
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


def _trunk_task_embedding(kwargs, num_tasks):
  """``model.task_embedding=N`` (ERNIE 2.0's learned task vectors at the input layer) goes to the
  trunk, which owns its input embeddings; a trunk without one is an error, not a no-op."""
  if not num_tasks:
    return kwargs
  if isinstance(num_tasks, bool) or int(num_tasks) != num_tasks or num_tasks < 0:
    raise ValueError(f"model.task_embedding must be the number of task ids (an int >= 0), got "
                     f"{num_tasks!r}")
  trunk = kwargs.get("trunk")
  trunk = {} if trunk is None else trunk.to_dict() if hasattr(trunk, "to_dict") else dict(trunk)
  cls = TRUNKS.get(trunk["name"]) if trunk.get("name") in TRUNKS else None
  if cls is None or "task_embedding" not in cls.__dataclass_fields__:
    raise ValueError(f"model.task_embedding={num_tasks}: trunk {trunk.get('name')!r} has no "
                     f"input-layer task embedding (bert has); for [N, features] inputs use "
                     f"config.mixing.task_embedding alone (a one-hot id appended to the features)")
  if trunk.get("task_embedding", num_tasks) != num_tasks:
    raise ValueError(f"model.task_embedding={num_tasks} but model.trunk.task_embedding="
                     f"{trunk['task_embedding']}: set one")
  return dict(kwargs, trunk=dict(trunk, task_embedding=int(num_tasks)))
