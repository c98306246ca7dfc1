"""Task kinds as plug-ins: the registry, and look-ups by kind name.

Adding a kind: write ``mtl_jax/kinds/<name>.py`` with a ``TaskKind``
subclass decorated ``@register("<name>")`` and import it below (one line);
docs/tasks.md has the interface and conventions.
"""

from typing import Optional, Tuple

from mtl_jax.kinds.base import KINDS, LabelError, TaskKind, register  # noqa: F401

# One line per kind: importing the module registers it.
from mtl_jax.kinds import binary, multiclass, multilabel, regression  # noqa: E402,F401
from mtl_jax.kinds import similarity  # noqa: E402,F401
from mtl_jax.kinds import ranking  # noqa: E402,F401
from mtl_jax.kinds import grouped_ranking  # noqa: E402,F401  (QNLI as ranking, MT-DNN)
from mtl_jax.kinds import token_classification  # noqa: E402,F401
from mtl_jax.kinds import depth, normals, segmentation  # noqa: E402,F401  (per-pixel kinds)
from mtl_jax.kinds import masked_lm  # noqa: E402,F401


def get(name: str) -> TaskKind:
  """The kind named ``name``; KeyError listing the valid kinds otherwise."""
  return KINDS.get(name)


def names() -> Tuple[str, ...]:
  return tuple(KINDS)


def higher_is_better(metric: str, kind: Optional[str] = None) -> bool:
  """Direction of ``metric``: from ``kind`` when given, else from every kind that has it.

  Raises KeyError when no kind has the metric, or when kinds disagree on it.
  """
  if kind is not None:
    return get(kind).higher_is_better(metric)
  kinds = [get(n) for n in KINDS]
  votes = {k.higher_is_better(metric) for k in kinds if k.is_valid_metric(metric)}
  if len(votes) == 1:
    return votes.pop()
  if votes:
    raise KeyError(f"kinds disagree on the direction of metric {metric!r}: pass the task's kind")
  known = sorted({m for k in kinds for m in k.valid_metrics})
  raise KeyError(f"unknown direction for metric {metric!r}; known: {known}")
