"""CGC and PLE (Tang et al., RecSys 2020): task-specific experts beside shared ones.

Customized Gate Control (CGC): each task t has ``num_task_experts`` experts of
its own, all tasks share ``num_shared_experts``; task t's gate is
``softmax(W_t x)`` (no bias, as MMoE) over t's own experts followed by the
shared ones, so no task reads another task's experts. Progressive Layered
Extraction (PLE) stacks ``num_levels`` such levels: in every level but the
last, a shared gate over *all* experts of the level feeds the next level's
shared experts, and task t's gate feeds the next level's experts of task t;
the last level is a CGC (task gates only). Every expert is a copy of
``trunk``; levels after the first see the previous level's features.

Paths: the last level is ``cgc/``, the ones below ``extraction_<l>/``, each
with ``task_experts/block_i/...`` [T, E, ...] (leading task axis, row t of
``task_order``), ``shared_experts/block_i/...`` [S, ...], ``task_gates``
[T, F, E + S] and (below the top) ``shared_gate`` [F, T*E + S]. ``cgc`` is
the one-level case, so a CGC checkpoint is the top of a PLE's tree.
"""

from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.columns import ColumnHeads, stacked_trunk, task_order
from mtl_jax.models.sharing import SHARED_FEATURES, SHARING, TASK_FEATURES, ParamLayout
from mtl_jax.models.trunks import trunk_class
from mtl_jax.tasks import TaskGroup

_STACK = dict(variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
              out_axes=0)


def task_experts(trunk_config, num_tasks: int, per_task: int, shared_input: bool,
                 name: str) -> nn.Module:
  """``num_tasks`` x ``per_task`` trunks: [B, ...] (``shared_input``) or [T, B, D] -> [T, E, B, D].

  Parameters get leading axes [T, E]. ``train`` must be passed positionally
  (lifted vmap ignores keyword arguments).
  """
  cls, kwargs = trunk_class(trunk_config)
  inner = nn.vmap(cls, in_axes=(None, None), axis_size=per_task, **_STACK)
  outer = nn.vmap(inner, in_axes=(None if shared_input else 0, None), axis_size=num_tasks,
                  **_STACK)
  return outer(**kwargs, name=name)


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def mix_tasks(gates: jax.Array, own: jax.Array, shared: jax.Array) -> jax.Array:
  """Task t's features: gate row t over its own experts, then the shared ones.

  gates [T, B, E + S], own [T, E, B, D], shared [B, S, D] (or per-task copies
  [T, B, S, D]) -> [T, B, D].
  """
  e = own.shape[1]
  mixed = jnp.einsum("tbe,tebd->tbd", gates[..., :e], own)
  spec = "tbs,bsd->tbd" if shared.ndim == 3 else "tbs,tbsd->tbd"
  return mixed + jnp.einsum(spec, gates[..., e:], shared)


def mix_shared(gate: jax.Array, own: jax.Array, shared: jax.Array) -> jax.Array:
  """The shared gate [B, T*E + S] over every expert (task-major, then shared) -> [B, D]."""
  t, e, b, d = own.shape
  experts = jnp.concatenate([own.reshape(t * e, b, d), shared], axis=0)
  return jnp.einsum("bk,kbd->bd", gate, experts)


class ExtractionLevel(nn.Module):
  """One level's experts and gate weights; the scheme mixes them (``mix_tasks``/``mix_shared``).

  ``task_inputs`` None means every expert and gate reads ``shared_input``
  (the first level's raw input); else task t's experts and gate read
  ``task_inputs[t]`` [B, D] and the shared ones ``shared_input``. Gates are
  sown as ``intermediates/<level>/task_gates`` [T, B, E + S] (and
  ``shared_gate`` [B, T*E + S]).
  """
  trunk: Dict[str, Any]
  num_tasks: int
  num_task_experts: int
  num_shared_experts: int
  shared_gate: bool

  @nn.compact
  def __call__(self, task_inputs: Optional[jax.Array], shared_input: jax.Array, train: bool):
    t, e, s = self.num_tasks, self.num_task_experts, self.num_shared_experts
    first = task_inputs is None
    own = task_experts(self.trunk, t, e, first, "task_experts")(
        shared_input if first else task_inputs, train)  # [T, E, B, D]
    shared = stacked_trunk(self.trunk, s, name="shared_experts")(shared_input, train)  # [S, B, D]
    if shared.ndim != 3:
      raise ValueError(f"cgc/ple experts must return features [B, D]; trunk {self.trunk['name']!r} "
                       f"returns {shared.shape[1:]}")
    x = _flat(shared_input)
    fan_in = x.shape[-1] if first else task_inputs.shape[-1]
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    kernel = self.param("task_gates", init, (t, fan_in, e + s))
    logits = (jnp.einsum("bf,tfk->tbk", x, kernel) if first
              else jnp.einsum("tbf,tfk->tbk", task_inputs, kernel))
    gates = jax.nn.softmax(logits, axis=-1)
    self.sow("intermediates", "task_gates", gates)
    shared_gates = None
    if self.shared_gate:
      w = self.param("shared_gate", nn.initializers.lecun_normal(), (x.shape[-1], t * e + s))
      shared_gates = jax.nn.softmax(x @ w, axis=-1)
      self.sow("intermediates", "shared_gate", shared_gates)
    return own, shared, gates, shared_gates


def _check_count(scheme: str, option: str, value) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"sharing {scheme!r}: {option}={value!r} must be an integer >= 1")


class _Extraction(nn.Module):
  """``num_levels`` extraction levels, the last a CGC, then per-task towers and heads.

  ParamLayout: ``shared`` is every parameter that more than one task's loss
  reaches: the shared experts, and everything below the top level (a lower
  level's task experts feed its shared gate, hence every task). The top
  level's task experts and task gates reach only their own task's loss, so,
  like the heads, they get their task's plain gradient on every aggregator
  path and stay out of the Gramian. (The task gates of the level just below
  the top also reach only their task's loss; they count as shared, with zero
  rows for the other tasks, since a path regex cannot name that level.)
  ``body`` is the same set: the per-task parts are tied to the upstream's
  tasks (as MMoE's gates). ``blocks``: the top level's shared experts, whose
  last block is the last layer every task shares (GradNorm's default).
  """
  layout = ParamLayout(shared=r"extraction_\d+/.*|cgc/shared_experts/.*",
                       body=r"extraction_\d+/.*|cgc/shared_experts/.*",
                       blocks="cgc/shared_experts")
  task_features = True  # accepts the TASK_FEATURES perturbation (one level only)
  trunk: Dict[str, Any]
  groups: Sequence[TaskGroup]
  num_shared_experts: int = 1
  num_task_experts: int = 1
  head_hidden: Sequence[int] = ()
  scheme = "cgc"  # class constants, not config options
  levels = 1

  def _representation(self, shared: jax.Array) -> jax.Array:
    """The top shared experts' outputs [B, S, D] as the shared representation (MGDA-UB).

    Valid with one level only: every shared parameter then lies below them.
    With more, the lower levels also reach each loss through the task gates.
    """
    asked = ((self.is_mutable_collection("perturbations") and not self.is_initializing())
             or self.has_variable("perturbations", SHARED_FEATURES)
             or self.has_variable("perturbations", TASK_FEATURES))
    if self.levels > 1:
      if asked:
        raise ValueError(
            f"sharing {self.scheme!r} with {self.levels} levels has no shared representation "
            "for weighting mode='representation' (the lower levels reach every task's loss "
            "through the task gates as well as the shared experts); use mode='gramian' or "
            "'jacobian', or sharing 'cgc'")
      return shared
    shared = self.perturb(SHARED_FEATURES, shared)
    if self.has_variable("perturbations", TASK_FEATURES):
      # Copy t is read by task t's gate only: one backward pass gives every task's row.
      shared = shared[None] + self.get_variable("perturbations", TASK_FEATURES)
    return shared

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    for option in ("num_shared_experts", "num_task_experts"):
      _check_count(self.scheme, option, getattr(self, option))
    _check_count(self.scheme, "num_levels", self.levels)
    n = len(task_order(self.groups))
    task_in, shared_in = None, inputs
    for level in range(self.levels):
      top = level == self.levels - 1
      own, shared, gates, shared_gates = ExtractionLevel(
          self.trunk, n, self.num_task_experts, self.num_shared_experts, shared_gate=not top,
          name="cgc" if top else f"extraction_{level}")(task_in, shared_in, train)
      shared_bsd = jnp.moveaxis(shared, 0, 1)
      if top:
        shared_bsd = self._representation(shared_bsd)
      else:
        shared_in = mix_shared(shared_gates, own, shared)
      task_in = mix_tasks(gates, own, shared_bsd)
    return ColumnHeads(self.groups, tuple(self.head_hidden), name="heads")(task_in)


@SHARING.register("cgc")
class CGC(_Extraction):
  """Customized Gate Control: one level of task-specific and shared experts (Tang et al., 2020)."""


@SHARING.register("ple")
class PLE(_Extraction):
  """Progressive Layered Extraction: ``num_levels`` CGC levels with shared gates between."""
  num_levels: int = 2
  scheme = "ple"

  @property
  def levels(self) -> int:
    return self.num_levels
