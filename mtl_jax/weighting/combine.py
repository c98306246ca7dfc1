"""How per-task losses become one parameter update: the gradient side of the train step.

``config.weighting`` picks one of three paths, all in one jitted pass:

* loss weighting (default ``equal``): differentiate ``m.combine(state, L)``,
  where ``m`` is a LOSS_WEIGHTINGS method (uncertainty, DWA, GradNorm, ...).
* ``aggregator`` with ``mode="jacobian"``: the T x P Jacobian of the task
  losses w.r.t. the *shared* parameters (``shared`` regex, default
  ``trunk/.*``) from one forward pass and a vmap over T cotangents of its
  VJP (no Python loop over tasks); the aggregator turns it into one
  direction. Task-specific parameters (heads) get the sum of the per-task
  gradients, i.e. each head its own task's gradient.
* ``aggregator`` with ``mode="representation"`` (MGDA-UB style): the
  Jacobian w.r.t. the shared representation (the trunk output, exposed by
  the model through ``self.perturb("shared_features", ...)``) is only
  [T, batch x D] and needs the backward through the heads only; the
  aggregator's weights on its Gramian then weight one ordinary backward pass.

Per-task static weights (``TaskSpec.weight``) multiply the losses before any
of this. Under data parallelism the losses, hence the Jacobian, are means
over the global batch, so N devices give the same update as one.
"""

import re
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import traverse_util

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, gramian
from mtl_jax.weighting.loss import LOSS_WEIGHTINGS
from mtl_jax.weighting.loss.base import StepInfo

OPTIONS = ("name", "aggregator", "mode", "shared", "options", "log_task_gradients")


def _paths(tree):
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def _mask(params, regex: str):
  r = re.compile(regex)
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({k: bool(r.fullmatch("/".join(k))) for k in flat})


def _flatten_rows(tree_with_task_axis, mask) -> jax.Array:
  """[T, ...] leaves where mask is True -> one [T, P] matrix (deterministic leaf order)."""
  leaves = [x.reshape(x.shape[0], -1) for x, m in
            zip(jax.tree.leaves(tree_with_task_axis), jax.tree.leaves(mask)) if m]
  return jnp.concatenate(leaves, axis=1)


def _unflatten_row(row: jax.Array, like_tree, mask):
  """Inverse of _flatten_rows for one row, zeros where mask is False."""
  out, offset = [], 0
  for x, m in zip(jax.tree.leaves(like_tree), jax.tree.leaves(mask)):
    if m:
      size = x[0].size
      out.append(row[offset:offset + size].reshape(x.shape[1:]))
      offset += size
    else:
      out.append(jnp.zeros(x.shape[1:], x.dtype))
  return jax.tree.unflatten(jax.tree.structure(like_tree), out)


def task_gradient_stats(jac: jax.Array) -> Dict[str, jax.Array]:
  """Per-task gradient norms [T] and pairwise cosines [T, T] of Jacobian rows."""
  g = gramian(jac)
  norms = jnp.sqrt(jnp.maximum(jnp.diag(g), 0.0))
  cos = g / jnp.maximum(norms[:, None] * norms[None, :], 1e-12)
  return {"task_grad_norm": norms, "task_grad_cosine": cos}


def last_shared_kernel(params) -> str:
  """Regex for the kernel of the trunk's last block (GradNorm's default layer)."""
  blocks = sorted({int(k[1][len("block_"):]) for k in traverse_util.flatten_dict(params)
                   if k[0] == "trunk" and len(k) > 1 and k[1].startswith("block_")})
  if not blocks:
    raise ValueError("gradnorm: no trunk/block_i parameters; pass options.layer_regex")
  return f"trunk/block_{blocks[-1]}/.*kernel"


class GradientCombiner:
  """Built from ``config.weighting``; ``grads(...)`` is called inside the jitted step."""

  def __init__(self, weighting_config, num_tasks: int, params, default_shared: str = "trunk/.*"):
    cfg = dict(weighting_config or {})
    unknown = sorted(set(cfg) - set(OPTIONS))
    if unknown:
      raise ValueError(f"weighting: unknown options {unknown}; valid: {list(OPTIONS)}")
    self.num_tasks = num_tasks
    options = dict(cfg.get("options") or {})
    self.aggregator = None
    self.mode = cfg.get("mode", "jacobian")
    if self.mode not in ("jacobian", "representation"):
      raise ValueError(f"weighting.mode must be 'jacobian' or 'representation', got {self.mode!r}")
    if cfg.get("aggregator"):
      if cfg.get("name", "equal") != "equal":
        raise ValueError("weighting: use either a loss weighting (name) or an aggregator, not both")
      self.aggregator = AGGREGATORS.get(cfg["aggregator"])(**options)
      if self.mode == "representation" and not isinstance(self.aggregator, GramianWeighted):
        raise ValueError(f"aggregator {cfg['aggregator']!r} is not Gramian-weighted, so it cannot "
                         "run on the representation Jacobian; use mode='jacobian'")
      self.loss_method = LOSS_WEIGHTINGS.get("equal")(num_tasks=num_tasks)
    else:
      cls = LOSS_WEIGHTINGS.get(cfg.get("name", "equal"))
      if cls.needs_layer_grad_norms and "layer_regex" not in options:
        options["layer_regex"] = last_shared_kernel(params)
      self.loss_method = cls(num_tasks=num_tasks, **options)
    self.shared_mask = _mask(params, cfg.get("shared", default_shared))
    self.log_task_gradients = bool(cfg.get("log_task_gradients", self.aggregator is not None))
    if (self.aggregator is not None or self.log_task_gradients) and not any(
        jax.tree.leaves(self.shared_mask)):
      raise ValueError(f"weighting.shared {cfg.get('shared', default_shared)!r} matches no parameter")
    self.layer_mask = None
    if self.loss_method.needs_layer_grad_norms:
      self.layer_mask = _mask(params, self.loss_method.layer_regex)
      if not any(jax.tree.leaves(self.layer_mask)):
        raise ValueError(f"{cfg.get('name')}: layer_regex {self.loss_method.layer_regex!r} "
                         f"matches no parameter; paths: {sorted(_paths(params))[:6]}")

  def init_state(self):
    return self.loss_method.init()

  def grads(self, loss_terms: Callable, params, rng, static_weights: jax.Array, wstate=None,
            z0: Optional[jax.Array] = None, reg_grad: Optional[Callable] = None):
    """Returns (param grads, info for ``update_state`` or None, metrics).

    ``reg_grad(params)`` (optional) is the regularizer's gradient, added to
    the aggregated direction on the Jacobian path; computing it apart from
    the model avoids a whole extra backward pass.

    ``loss_terms(params, perturbation)`` -> (per-task losses [T], regularizer);
    ``z0`` is the zero perturbation of the shared representation
    (representation mode only).
    """
    def weighted(p, z=None):
      per_task, reg = loss_terms(p, z)
      return per_task * static_weights, (per_task, reg)

    (wl, (per_task, reg)), vjp_fn = _vjp_with_aux(weighted, params)
    metrics: Dict[str, Any] = {"task_loss": per_task, "regularizer": reg}
    eye = jnp.eye(self.num_tasks, dtype=wl.dtype)
    per_task_grads = None
    if self.aggregator is not None and self.mode == "jacobian" or (
        self.aggregator is None and (self.log_task_gradients or self.layer_mask is not None)):
      per_task_grads = jax.vmap(lambda c: vjp_fn((c, jnp.zeros((), reg.dtype)))[0])(eye)

    if self.aggregator is not None:
      weights = None
      if self.mode == "jacobian":
        jac = _flatten_rows(per_task_grads, self.shared_mask)
        direction = self.aggregator(jac, rng)
        shared = _unflatten_row(direction, per_task_grads, self.shared_mask)
        summed = jax.tree.map(lambda g: g.sum(0), per_task_grads)
        grads = jax.tree.map(lambda m, s, t: s if m else t, self.shared_mask, shared, summed)
        if reg_grad is not None:
          grads = jax.tree.map(jnp.add, grads, reg_grad(params))
        metrics.update(task_gradient_stats(jac))
      else:
        z_jac = _representation_jacobian(weighted, params, z0, self.num_tasks)
        weights = jax.lax.stop_gradient(self.aggregator.weights(gramian(z_jac), rng))
        grads = vjp_fn((weights.astype(wl.dtype), jnp.ones((), reg.dtype)))[0]
        metrics.update(task_gradient_stats(z_jac))
        metrics["task_weight"] = weights
      total = jnp.sum(wl if weights is None else weights * wl) + reg
      metrics["loss"] = total
      return grads, None, metrics

    # Loss weighting: d total / d losses, then one VJP for the params.
    (total, weights), (g_losses, g_state) = _value_and_grad_combine(self.loss_method, wstate, wl, rng)
    grads = vjp_fn((g_losses.astype(wl.dtype), jnp.ones((), reg.dtype)))[0]
    metrics.update({"loss": total + reg, "task_weight": weights})
    layer_norms = None
    if per_task_grads is not None:
      if self.log_task_gradients:
        metrics.update(task_gradient_stats(_flatten_rows(per_task_grads, self.shared_mask)))
      if self.layer_mask is not None:
        # Unweighted per-task losses: divide out the static weights (GradNorm's definition).
        layer = _flatten_rows(per_task_grads, self.layer_mask)
        layer_norms = jnp.linalg.norm(layer, axis=1) / jnp.where(static_weights > 0, static_weights, 1.0)
    info = dict(g_state=g_state, layer_grad_norms=layer_norms, losses=jax.lax.stop_gradient(wl))
    return grads, info, metrics

  def update_state(self, wstate, info, step, rng, new_losses=None):
    return self.loss_method.update(wstate, StepInfo(
        step=step, losses=info["losses"], state_grad=info["g_state"],
        layer_grad_norms=info["layer_grad_norms"], new_losses=new_losses, rng=rng))



def _representation_jacobian(weighted, params, z0, num_tasks: int) -> jax.Array:
  """[T, batch x D]: per-task gradients w.r.t. the shared representation.

  Params are closed over, so the T backward passes stop at the representation
  and never enter the trunk.
  """
  if z0 is None:
    raise ValueError("mode='representation' needs the model to expose its shared features "
                     "(self.perturb('shared_features', ...)); this sharing scheme does not")
  _, z_vjp = jax.vjp(lambda z: weighted(params, z)[0], z0)
  zj = jax.vmap(lambda c: z_vjp(c.astype(z0.dtype))[0])(jnp.eye(num_tasks, dtype=z0.dtype))
  return zj.reshape(num_tasks, -1)


def _vjp_with_aux(fn, params):
  """jax.vjp of ``fn`` whose output is (weighted losses, (per_task, reg)); reg is differentiated too."""
  def primal(p):
    wl, (per_task, reg) = fn(p, None)
    return (wl, reg), per_task
  (wl, reg), vjp_fn, per_task = jax.vjp(primal, params, has_aux=True)
  return (wl, (per_task, reg)), vjp_fn


def _value_and_grad_combine(method, wstate, losses, rng):
  def f(l, s):
    total, weights = method.combine(s, l, rng)
    return total, weights
  (total, weights), (g_l, g_s) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(losses, wstate)
  return (total, weights), (g_l, g_s)
