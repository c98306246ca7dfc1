"""In-memory splits in the masked multi-task format, and the dataset registry.

A split holds ``inputs`` [N, ...] (or a dict / pytree of such arrays, e.g.
``input_ids``, ``attention_mask``, ``token_type_ids``), ``labels`` {task:
[N, ...]} and ``mask`` {task: bool[N] or bool[N, positions]}: the batch format
of DESIGN.md, before batching.
"""

import dataclasses
from typing import Any, Dict, Optional, Sequence

import jax
import numpy as np

from mtl_jax.registry import Registry

DATASETS = Registry("dataset")


@dataclasses.dataclass
class ArrayDataset:
  """One split, fully in host memory; ``inputs`` is an array or a pytree of arrays."""
  inputs: Any
  labels: Dict[str, np.ndarray]
  mask: Dict[str, np.ndarray]

  def __post_init__(self):
    leaves = jax.tree_util.tree_leaves_with_path(self.inputs)
    if not leaves:
      raise ValueError("inputs hold no array")
    n = len(leaves[0][1])
    for path, leaf in leaves:
      if np.ndim(leaf) == 0 or len(leaf) != n:
        raise ValueError(f"inputs{jax.tree_util.keystr(path)} has shape {np.shape(leaf)} but "
                         f"inputs{jax.tree_util.keystr(leaves[0][0])} has {n} examples: every "
                         f"input needs the examples on axis 0")
    for name in self.labels:
      if name not in self.mask:
        raise ValueError(f"task {name!r} has labels but no mask")
      if len(self.labels[name]) != n or len(self.mask[name]) != n:
        raise ValueError(f"task {name!r}: {len(self.labels[name])} labels and "
                         f"{len(self.mask[name])} mask entries for {n} inputs")

  def __len__(self) -> int:
    return len(jax.tree.leaves(self.inputs)[0])

  @property
  def task_names(self) -> Sequence[str]:
    return tuple(self.labels)

  def take(self, idx: np.ndarray) -> dict:
    """The examples at ``idx`` as a batch dict."""
    return {"inputs": jax.tree.map(lambda x: x[idx], self.inputs),
            "labels": {k: v[idx] for k, v in self.labels.items()},
            "mask": {k: v[idx] for k, v in self.mask.items()}}

  def select_tasks(self, names: Sequence[str]) -> "ArrayDataset":
    """Keeps only ``names`` (in that order); a missing name raises KeyError listing the tasks."""
    missing = [n for n in names if n not in self.labels]
    if missing:
      raise KeyError(f"tasks {missing} are not in the data, which has {list(self.labels)}")
    return ArrayDataset(self.inputs, {n: self.labels[n] for n in names},
                        {n: self.mask[n] for n in names})

  def subset(self, idx: np.ndarray) -> "ArrayDataset":
    """A new split holding the examples at ``idx``."""
    b = self.take(np.asarray(idx))
    return ArrayDataset(b["inputs"], b["labels"], b["mask"])


@dataclasses.dataclass
class DataSplits:
  """What every registered dataset builder returns.

  ``train`` is trained on, ``validation`` drives periodic eval (and any model
  selection), ``test`` is reported at the end and never used for choices.
  """
  train: ArrayDataset
  validation: ArrayDataset
  test: Optional[ArrayDataset] = None


def hide_labels(mask: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
  """Returns a copy of ``mask`` with each True entry set False with probability ``rate``."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"hide rate must be in [0, 1], got {rate}")
  return mask & (rng.random(mask.shape) >= rate)


def build_dataset(data_config) -> DataSplits:
  """Builds the dataset named ``data_config.name`` with the other keys as kwargs."""
  kwargs = dict(data_config)
  name = kwargs.pop("name")
  return DATASETS.get(name)(**kwargs)
