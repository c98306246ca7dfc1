"""``regression``: ``num_outputs`` real targets, mean squared error."""

import jax.numpy as jnp
import numpy as np

from mtl_jax.kinds.base import TaskKind, raise_bad_labels, register


@register("regression")
class Regression(TaskKind):
  default_metrics = ("loss", "mse", "mae", "explained_variance")
  valid_metrics = ("loss", "mse", "mae", "explained_variance", "r2")
  lower_is_better = frozenset({"loss", "mse", "mae"})

  def label_shape(self, num_outputs):
    return () if num_outputs == 1 else (num_outputs,)

  def check_labels(self, spec, labels, mask):
    raise_bad_labels(spec, labels, mask, ~np.isfinite(labels[mask]), "non-finite regression targets")

  def per_example_loss(self, outputs, labels, mask=None):
    target = labels.astype(outputs.dtype).reshape(outputs.shape)
    return jnp.square(outputs - target).mean(-1)

  def numpy_loss(self, spec, outputs, labels, mask=None):
    o = outputs.astype(np.float64)
    return ((o - labels.astype(np.float64).reshape(o.shape)) ** 2).mean(-1)

  def metric(self, spec, metric, outputs, labels, mask):
    """Regression metrics are averaged uniformly over outputs."""
    if metric == "loss":
      return super().metric(spec, metric, outputs, labels, mask)
    y = labels.astype(np.float64).reshape(outputs.shape)
    err = outputs - y
    var_y = y.var(0)
    if metric == "mse":
      return (err ** 2).mean()
    if metric == "mae":
      return np.abs(err).mean()
    if metric == "explained_variance":  # 1 - Var(residual) / Var(y)
      return np.mean(1.0 - err.var(0) / np.where(var_y > 0, var_y, np.nan))
    if metric == "r2":  # 1 - MSE / Var(y), the School papers' "explained variance"
      return np.mean(1.0 - (err ** 2).mean(0) / np.where(var_y > 0, var_y, np.nan))
    return super().metric(spec, metric, outputs, labels, mask)
