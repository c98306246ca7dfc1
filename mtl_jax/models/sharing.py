"""How tasks share parameters. One registry entry per scheme; configs pick one
with ``config.model.sharing``. Every model maps inputs to a dict of stacked
group outputs ``{group.key: [T_g, batch, num_outputs]}``.

Each scheme declares its own :class:`ParamLayout` (class attribute
``layout``): which parameters gradient-combining methods treat as shared, and
which body (blocks ``<prefix>/block_i``) the transfer strategies load, freeze
and truncate. Nothing outside the scheme guesses these.
"""

import dataclasses
from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models.columns import ColumnHeads, CrossStitchMLP, stacked_trunk, task_order
from mtl_jax.models.dense_heads import dense_heads, image_size
from mtl_jax.models.heads import KIND_HEADS, TaskHeads, head_context
from mtl_jax.models.trunks import build_trunk, trunk_class
from mtl_jax.registry import Registry
from mtl_jax.routing import ROUTES
from mtl_jax.tasks import TaskGroup

SHARING = Registry("sharing scheme")

# The perturbation collection entries that expose a scheme's shared
# representation to representation-gradient methods (MGDA-UB): the shared
# features [B, ..., D], or one copy per task [T, B, ..., D] fed to task t's
# head only, whose gradient gives every task's row in ONE backward pass.
SHARED_FEATURES = "shared_features"
TASK_FEATURES = "task_features"


@dataclasses.dataclass(frozen=True)
class ParamLayout:
  """What a sharing scheme's parameters mean, declared by the scheme itself.

  shared: regex of the parameters weighting methods treat as shared (the
    default of ``config.weighting.shared``). Per-task columns count: each
    task's Jacobian row is zero outside its own column, and soft-coupled
    columns are included.
  body: regex of the parameters a pretrained upstream provides (everything
    but the task heads): what transfer strategies load and freeze.
  blocks: the prefix under which the body's layers are named ``block_i``
    (layer decay, freeze_bottom, truncate, GradNorm's last shared layer).
  cacheable: the body is one trunk shared by all tasks, so its features can
    be computed once (``cached_probe``).
  """
  shared: str
  body: str
  blocks: str
  cacheable: bool = False


def layout(sharing: Optional[str]) -> ParamLayout:
  """The declared layout of scheme ``sharing`` (default ``hard``)."""
  name = sharing or "hard"
  declared = getattr(SHARING.get(name), "layout", None)
  if not isinstance(declared, ParamLayout):
    raise TypeError(f"sharing scheme {name!r} declares no ParamLayout: give its class a "
                    "`layout = ParamLayout(shared=..., body=..., blocks=...)` attribute")
  return declared


def variables(params, perturbations=None, routes=None) -> Dict[str, Any]:
  """Flax variables for ``apply``, with perturbations (a dict: SHARED_FEATURES or
  TASK_FEATURES -> array; a bare array means SHARED_FEATURES) and head routes
  ({group key: [B] task index}, mtl_jax/routing.py) if given."""
  out = {"params": params}
  if perturbations is not None:
    if not isinstance(perturbations, dict):
      perturbations = {SHARED_FEATURES: perturbations}
    out["perturbations"] = perturbations
  if routes is not None:
    out[ROUTES] = routes
  return out


def zero_features(model: nn.Module, inputs, params=None) -> Optional[jax.Array]:
  """Zeros shaped like the representation ``model`` exposes for ``inputs``, or None.

  A scheme exposes it with ``self.perturb(SHARED_FEATURES, features)``;
  differentiating the losses w.r.t. this zero perturbation gives the
  gradients w.r.t. the shared features (MGDA-UB). Given ``params``, the
  features' dtype is the one those parameters compute in (mixed precision).
  Works on traced inputs; nothing is computed.
  """
  if params is None:
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), inputs)
  else:
    shapes = jax.eval_shape(lambda p, x: model.apply({"params": p}, x,
                                                     mutable=["perturbations"])[1], params, inputs)
  z = shapes.get("perturbations", {}).get(SHARED_FEATURES)
  return None if z is None else jnp.zeros(z.shape, z.dtype)


def zero_perturbations(model: nn.Module, inputs, params, num_tasks: int):
  """The cheapest perturbation ``model`` offers for representation gradients, as a dict.

  Schemes that route per-task copies of their features (``task_features =
  True``) also get {TASK_FEATURES: zeros [T, B, ..., D]}: one backward pass gives
  every task's gradient w.r.t. the shared features. Others get
  {SHARED_FEATURES: zeros [B, ..., D]} (T backward passes through the heads),
  or None when the scheme exposes no shared features.
  """
  z = zero_features(model, inputs, params)
  if z is None:
    return None
  if getattr(type(model), "task_features", False):
    return {SHARED_FEATURES: z, TASK_FEATURES: jnp.zeros((num_tasks,) + z.shape, z.dtype)}
  return {SHARED_FEATURES: z}


@SHARING.register("hard")
class HardSharing(nn.Module):
  """Hard parameter sharing: one trunk for all tasks, one head per task."""
  layout = ParamLayout(shared="trunk/.*", body="trunk/.*", blocks="trunk", cacheable=True)
  task_features = True  # accepts the TASK_FEATURES perturbation (representation gradients)
  trunk: Dict[str, Any]
  groups: Sequence[TaskGroup]
  head_hidden: Sequence[int] = ()
  # Train steps run each example through its own task's head only (mtl_jax/routing.py).
  route_heads: bool = False
  # Per-task dense decoders on a feature map (mtl_jax/models/dense_heads.py); None: linear heads.
  decoder: Optional[Dict[str, Any]] = None

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    trunk = build_trunk(self.trunk, name="trunk")
    features = trunk(inputs, train=train)
    # Inputs and tied word embeddings for kinds with their own head (masked_lm); else None.
    context = head_context(self.groups, self.trunk, trunk, inputs)
    decoder = dense_heads(self.groups, self.decoder)
    if decoder is not None and (self.route_heads or self.head_hidden):
      raise ValueError("model.decoder replaces the linear heads: it takes neither "
                       "model.route_heads nor model.head_hidden")
    if self.has_variable(ROUTES, self.groups[0].key):
      routes = {g.key: self.get_variable(ROUTES, g.key) for g in self.groups}
      return TaskHeads(self.groups, tuple(self.head_hidden), name="heads")(features, routes,
                                                                            context)
    # A zero "perturbation" that representation-gradient methods (MGDA-UB)
    # differentiate; a no-op unless the caller passes that collection.
    features = self.perturb(SHARED_FEATURES, features)
    if self.has_variable("perturbations", TASK_FEATURES):
      # Per-task copies: d L / d copy_t = d L_t / d features (head t reads copy t only).
      per_task = features[None] + self.get_variable("perturbations", TASK_FEATURES)
      if decoder is not None:
        return decoder(per_task, image_size(inputs), train)
      return ColumnHeads(self.groups, tuple(self.head_hidden), name="heads")(per_task, context)
    if decoder is not None:
      return decoder(features, image_size(inputs), train)
    return TaskHeads(self.groups, tuple(self.head_hidden), name="heads")(features,
                                                                          context=context)


@SHARING.register("pooled")
class Pooled(HardSharing):
  """All tasks pooled into one: one trunk and ONE head per task group.

  Every task of a group reads the same output, so training is one model on
  the union of the tasks' labelled examples (the "pooled" baseline of the
  School studies). Losses and metrics stay per task (masked), so results
  compare directly with the other schemes. Head paths:
  ``head_<group>/Dense_i/...`` without a task axis.
  """
  layout = ParamLayout(shared="trunk/.*|head_.*", body="trunk/.*", blocks="trunk", cacheable=True)
  task_features = False

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    if self.route_heads:
      raise ValueError("model.route_heads applies to sharing='hard'; 'pooled' has one head per "
                       "task group, which every example needs anyway")
    own = [g.kind for g in self.groups if g.kind in KIND_HEADS]
    if own:
      raise ValueError(f"sharing='pooled' has no place for the {own[0]!r} head (its own, "
                       "tied to the trunk); use sharing='hard'")
    if self.decoder is not None:
      raise ValueError("model.decoder applies to sharing 'hard', 'single_task', 'soft' and "
                       "'mtan', not 'pooled'")
    features = build_trunk(self.trunk, name="trunk")(inputs, train=train)
    out = {}
    for g in self.groups:
      y = _PooledHead(g.num_outputs, tuple(self.head_hidden), name=f"head_{g.key}")(features)
      out[g.key] = jnp.broadcast_to(y[None], (len(g.names),) + y.shape)
    return out


class _PooledHead(nn.Module):
  num_outputs: int
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, x):
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_outputs)(x)


@SHARING.register("single_task")
class SingleTask(nn.Module):
  """T independent trunk+head columns (the single-task baseline) in one program.

  The trunk is vmapped over tasks: ``columns/block_0/Dense_0/kernel`` is
  [T, D_in, D_out], row t belonging to ``columns.task_order(groups)[t]``;
  heads are ``heads/<kind>_<n>/...`` as in hard sharing. No parameter is
  shared, so task t's loss has exactly zero gradient on every other column.
  """
  layout = ParamLayout(shared="columns/.*", body="columns/.*", blocks="columns")
  trunk: Dict[str, Any]
  groups: Sequence[TaskGroup]
  head_hidden: Sequence[int] = ()
  decoder: Optional[Dict[str, Any]] = None  # as HardSharing's

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    n = len(task_order(self.groups))
    features = stacked_trunk(self.trunk, n, name="columns")(inputs, train)  # [T, B, D]
    if self.decoder is not None:
      if self.head_hidden:
        raise ValueError("model.decoder replaces the linear heads: it takes no model.head_hidden")
      return dense_heads(self.groups, self.decoder)(features, image_size(inputs), train)
    return ColumnHeads(self.groups, tuple(self.head_hidden), name="heads")(features)


@SHARING.register("soft")
class SoftSharing(SingleTask):
  """Soft parameter sharing: the single_task layout, coupled by a regularizer.

  Parameters are identical to single_task (``columns/...`` with a leading
  task axis); the coupling is a config regularizer on them, e.g.
  ``dict(name="l2_to_mean", weight=lam, select="columns/.*")`` or
  ``trace_norm``. lam=0 reproduces single_task (to float rounding: the
  zero-weighted term changes XLA's fusion; see docs/sharing.md); large lam
  approaches hard sharing.
  """


class _MixtureOfExperts(nn.Module):
  """K expert trunks mixed per task by softmax gates on the flattened input.

  Experts are vmapped: ``experts/block_0/Dense_0/kernel`` is [K, D_in, D_out].
  The gate is ``gate`` [G, F, K] with no bias (softmax(W x), as in Ma
  et al. 2018): G = T for MMoE (row t for task t of ``task_order``), G = 1 for
  OMoE. Gates are sown as ``intermediates/gates`` [G, B, K]. ``head_hidden``
  gives each task its tower.
  """
  # MMoE's gates are per task (like heads): a transfer loads and freezes the experts only.
  layout = ParamLayout(shared="experts/.*|gate", body="experts/.*", blocks="experts")
  trunk: Dict[str, Any]
  groups: Sequence[TaskGroup]
  num_experts: int = 8
  head_hidden: Sequence[int] = ()
  per_task_gates = True  # class constant, not a config option

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    n = len(task_order(self.groups))
    experts = stacked_trunk(self.trunk, self.num_experts, name="experts")(inputs, train)
    x = inputs.reshape(inputs.shape[0], -1)
    num_gates = n if self.per_task_gates else 1
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    kernel = self.param("gate", init, (num_gates, x.shape[-1], self.num_experts))
    gates = jax.nn.softmax(jnp.einsum("bf,gfk->gbk", x, kernel), axis=-1)
    self.sow("intermediates", "gates", gates)
    features = jnp.einsum("gbk,kbd->gbd", gates, experts)
    features = jnp.broadcast_to(features, (n,) + features.shape[1:])
    return ColumnHeads(self.groups, tuple(self.head_hidden), name="heads")(features)


@SHARING.register("mmoe")
class MMoE(_MixtureOfExperts):
  """Multi-gate mixture of experts: one gate per task (Ma et al., KDD 2018)."""
  per_task_gates = True


@SHARING.register("omoe")
class OMoE(_MixtureOfExperts):
  """One-gate mixture of experts: all tasks share one gate (MMoE's ablation)."""
  layout = ParamLayout(shared="experts/.*|gate", body="experts/.*|gate", blocks="experts")
  per_task_gates = False


@SHARING.register("cross_stitch")
class CrossStitch(nn.Module):
  """T MLP columns mixed after every block by learned T x T stitches (Misra et al., 2016).

  ``trunk`` must be an ``mlp`` config. Paths: ``columns/block_<i>/Dense_0/...``
  (as single_task) and ``columns/stitch_<i>`` [T, T], initialised with
  ``stitch_diagonal`` on the diagonal and the rest of each row spread evenly;
  ``stitch_diagonal=1`` starts from exactly independent columns. To
  regularize only the columns, select ``columns/block_.*``.
  """
  layout = ParamLayout(shared="columns/.*", body="columns/.*", blocks="columns")
  trunk: Dict[str, Any]
  groups: Sequence[TaskGroup]
  head_hidden: Sequence[int] = ()
  stitch_diagonal: float = 0.9

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    if self.trunk["name"] != "mlp":
      raise ValueError(f"cross_stitch stitches MLP blocks; got trunk {self.trunk['name']!r}, "
                       "use trunk=dict(name='mlp', ...)")
    _, kwargs = trunk_class(self.trunk)
    n = len(task_order(self.groups))
    features = CrossStitchMLP(n, **kwargs, stitch_diagonal=self.stitch_diagonal,
                              name="columns")(inputs, train)
    return ColumnHeads(self.groups, tuple(self.head_hidden), name="heads")(features)


def count_params(model: nn.Module, inputs: jax.Array) -> int:
  """Number of parameters of ``model`` on inputs shaped like ``inputs`` (no compute).

  Use it to match capacities, e.g. pick the width of a shared-bottom model
  (``sharing="hard"`` with a one-layer MLP trunk) equal to an MMoE's count.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs))["params"]
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)))
