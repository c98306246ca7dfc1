"""``similarity``: a real score per example (e.g. STS-B on a sentence pair),
trained with MSE like regression and scored by Pearson and Spearman correlation."""

import numpy as np

from mtl_jax.kinds import _numpy as npm
from mtl_jax.kinds.base import register
from mtl_jax.kinds.regression import Regression


@register("similarity")
class Similarity(Regression):
  default_metrics = ("loss", "pearson", "spearman")
  valid_metrics = ("loss", "pearson", "spearman", "mse", "mae")
  lower_is_better = frozenset({"loss", "mse", "mae"})

  def metric(self, spec, metric, outputs, labels, mask):
    """Correlations per output column (NaN if one side is constant), then their mean."""
    if metric in ("pearson", "spearman"):
      o = outputs.astype(np.float64)
      y = labels.astype(np.float64).reshape(o.shape)
      if metric == "spearman":  # Pearson of the average-tie ranks
        o = np.stack([npm.rankdata(c) for c in o.T], 1)
        y = np.stack([npm.rankdata(c) for c in y.T], 1)
      return np.mean([npm.pearson(o[:, j], y[:, j]) for j in range(o.shape[1])])
    return super().metric(spec, metric, outputs, labels, mask)
