"""Parameter paths: the one place that turns a pytree into ``/``-joined paths and back.

Freezing, learning-rate groups, partial loading, regularizers and weighting
all select parameters by a full-match regex on paths such as
``trunk/block_0/Dense_0/kernel``; they all go through these functions so
that a path means the same thing everywhere.
"""

import re
from typing import Any, Dict, List

from flax import traverse_util


def flatten(tree) -> Dict[str, Any]:
  """{"trunk/block_0/Dense_0/kernel": leaf, ...} in the tree's own order."""
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def unflatten(flat: Dict[str, Any]):
  """Inverse of :func:`flatten`."""
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def matching(tree, regex: str) -> List[str]:
  """Paths of ``tree`` that fully match ``regex``, in the tree's order."""
  r = re.compile(regex)
  return [p for p in flatten(tree) if r.fullmatch(p)]


def mask(tree, regex: str):
  """A bool tree shaped like ``tree``: True where the path fully matches ``regex``."""
  r = re.compile(regex)
  return unflatten({p: bool(r.fullmatch(p)) for p in flatten(tree)})


def require_match(tree, regex: str, what: str) -> List[str]:
  """:func:`matching`, but a regex that selects nothing is an error naming it.

  ``what`` says where the regex came from (e.g. ``"weighting.shared"``).
  """
  hits = matching(tree, regex)
  if not hits:
    raise ValueError(f"{what} {regex!r} matches no parameter; paths look like "
                     f"{list(flatten(tree))[:6]}")
  return hits
