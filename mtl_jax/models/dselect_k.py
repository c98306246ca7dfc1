"""DSelect-k (Hazimeh et al., NeurIPS 2021): a differentiable, k-sparse gate per task.

Each task's gate holds ``num_selectors`` (k) single-expert selectors. Selector
j has m = log2(n) logits z_j; the smooth-step S (exactly 0 or 1 outside
[-gamma/2, gamma/2]) turns them into m "bits", and expert i gets the
probability of its binary code: r_j[i] = prod_b (S(z_jb) if bit b of i is 1
else 1 - S(z_jb)), which sums to 1 over the n = 2^m experts. The gate is
sum_j softmax(w)_j r_j: at most k experts are non-zero once the selectors
reach 0/1. ``gate="static"``: z and w are parameters per task (task-only
routing); ``gate="example"``: they are affine functions of the flattened
input (per-example routing). The initialisation is the reference one:
z ~ U(-gamma/100, gamma/100), w ~ U(-0.05, 0.05).

``selector_entropy`` is the paper's regularizer on the static selectors
(``config.regularizers``); see docs/sharing.md.
"""

from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import paths
from mtl_jax.models.columns import ColumnHeads, stacked_trunk, task_order
from mtl_jax.models.sharing import SHARED_FEATURES, SHARING, TASK_FEATURES, ParamLayout
from mtl_jax.regularizers import REGULARIZERS, select_leaves
from mtl_jax.tasks import TaskGroup

GATES = ("static", "example")
ENTROPY_EPS = 1e-6  # inside the log, as the reference implementation


def smooth_step(x: jax.Array, gamma: float) -> jax.Array:
  """0 below -gamma/2, 1 above gamma/2, the cubic -2x^3/gamma^3 + 3x/(2 gamma) + 1/2 between."""
  cubic = -2.0 / gamma ** 3 * x ** 3 + 1.5 / gamma * x + 0.5
  return jnp.where(x <= -gamma / 2, 0.0, jnp.where(x >= gamma / 2, 1.0, cubic)).astype(x.dtype)


def binary_codes(num_experts: int) -> np.ndarray:
  """bool [n, log2 n]: row i is i in binary, most significant bit first."""
  m = int(np.log2(num_experts))
  return np.array([[(i >> (m - 1 - b)) & 1 for b in range(m)] for i in range(num_experts)], bool)


def selector_outputs(bits: jax.Array) -> jax.Array:
  """[..., k, m] smooth-step bits -> [..., k, 2^m]: each selector's probability of every code."""
  codes = jnp.asarray(binary_codes(2 ** bits.shape[-1]))
  b = bits[..., None, :]
  return jnp.prod(jnp.where(codes, b, 1.0 - b), axis=-1)


def expert_weights(z: jax.Array, w: jax.Array, gamma: float):
  """(gate weights [..., n], selectors [..., k, n]) from logits z [..., k, m] and w [..., k]."""
  selectors = selector_outputs(smooth_step(z, gamma))
  alpha = jax.nn.softmax(w, axis=-1)
  return jnp.einsum("...k,...kn->...n", alpha, selectors), selectors


def _uniform(limit: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -limit, limit)
  return init


class DSelectGate(nn.Module):
  """T DSelect-k gates: weights [T, B, n] (static: [T, 1, n]) and selectors [T, B|1, k, n].

  Static parameters: ``z_logits`` [T, k, m], ``w_logits`` [T, k]. Per example:
  ``z_kernel`` [T, F, k*m], ``z_bias`` [T, k*m], ``w_kernel`` [T, F, k],
  ``w_bias`` [T, k] on the flattened input.
  """
  num_tasks: int
  num_experts: int
  num_selectors: int
  gamma: float
  per_example: bool

  @nn.compact
  def __call__(self, inputs: jax.Array):
    t, k, m = self.num_tasks, self.num_selectors, int(np.log2(self.num_experts))
    z_init, w_init = _uniform(self.gamma / 100), _uniform(0.05)
    if not self.per_example:
      z = self.param("z_logits", z_init, (t, k, m))[:, None]
      w = self.param("w_logits", w_init, (t, k))[:, None]
    else:
      x = inputs.reshape(inputs.shape[0], -1)
      f = x.shape[-1]
      z = (jnp.einsum("bf,tfj->tbj", x, self.param("z_kernel", z_init, (t, f, k * m)))
           + self.param("z_bias", z_init, (t, k * m))[:, None])
      z = z.reshape(t, x.shape[0], k, m)
      w = (jnp.einsum("bf,tfj->tbj", x, self.param("w_kernel", w_init, (t, f, k)))
           + self.param("w_bias", w_init, (t, k))[:, None])
    return expert_weights(z, w, self.gamma)


def check_options(num_experts, num_selectors, gamma, gate) -> None:
  """Each bad option fails naming itself (config keys are model.<option>)."""
  if not isinstance(num_experts, int) or num_experts < 2 or num_experts & (num_experts - 1):
    raise ValueError(f"sharing 'dselect_k': num_experts={num_experts!r} must be a power of 2 "
                     ">= 2 (each selector picks an expert by its log2(n)-bit binary code; the "
                     "reference's extra regularizer for unreachable codes is not implemented)")
  if not isinstance(num_selectors, int) or num_selectors < 1:
    raise ValueError(f"sharing 'dselect_k': num_selectors={num_selectors!r} must be an "
                     "integer >= 1 (k, the most experts a gate mixes)")
  if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not gamma > 0:
    raise ValueError(f"sharing 'dselect_k': gamma={gamma!r} must be a number > 0")
  if gate not in GATES:
    raise ValueError(f"sharing 'dselect_k': gate={gate!r}; valid: {list(GATES)}")


@SHARING.register("dselect_k")
class DSelectK(nn.Module):
  """``num_experts`` trunks shared by all tasks, each task mixing them by its DSelect-k gate.

  Paths: ``experts/block_i/...`` [n, ...] (as MMoE), ``gate/...`` (DSelectGate,
  row t for task t of ``task_order``), ``heads/...``. Gate weights are sown
  as ``intermediates/gates`` [T, B, n] and the selectors as
  ``intermediates/selectors``. ParamLayout: only the experts are shared; a
  gate reaches its own task's loss only, so like a head it gets that task's
  plain gradient and stays out of the Gramian (MMoE's layout counts its gate).
  The experts' outputs [B, n, D] are the representation for
  mode='representation'.
  """
  layout = ParamLayout(shared="experts/.*", body="experts/.*", blocks="experts")
  task_features = True
  trunk: Dict[str, Any]
  groups: Sequence[TaskGroup]
  num_experts: int = 8
  num_selectors: int = 2
  gamma: float = 1.0
  gate: str = "static"
  head_hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    check_options(self.num_experts, self.num_selectors, self.gamma, self.gate)
    n = len(task_order(self.groups))
    experts = stacked_trunk(self.trunk, self.num_experts, name="experts")(inputs, train)
    if experts.ndim != 3:
      raise ValueError(f"dselect_k experts must return features [B, D]; trunk "
                       f"{self.trunk['name']!r} returns {experts.shape[1:]}")
    weights, selectors = DSelectGate(n, self.num_experts, self.num_selectors, self.gamma,
                                     self.gate == "example", name="gate")(inputs)
    weights = jnp.broadcast_to(weights, (n, inputs.shape[0], self.num_experts))
    self.sow("intermediates", "gates", weights)
    self.sow("intermediates", "selectors", selectors)
    shared = self.perturb(SHARED_FEATURES, jnp.moveaxis(experts, 0, 1))  # [B, n, D]
    if self.has_variable("perturbations", TASK_FEATURES):
      # Copy t is read by task t's gate only: one backward pass gives every task's row.
      shared = shared[None] + self.get_variable("perturbations", TASK_FEATURES)
      features = jnp.einsum("tbk,tbkd->tbd", weights, shared)
    else:
      features = jnp.einsum("tbk,bkd->tbd", weights, shared)
    return ColumnHeads(self.groups, tuple(self.head_hidden), name="heads")(features)


@REGULARIZERS.register("selector_entropy")
def selector_entropy(params, gamma: Optional[float] = None,
                     select: str = "gate/z_logits") -> jax.Array:
  """-sum r log(r + 1e-6) over every static DSelect-k selector r (all tasks): pushes each
  selector to one expert, so each gate to at most k (Hazimeh et al., 2021).

  ``gamma`` must be the model's (``config.model.gamma``; ``check_entropy_regularizer``
  checks it). Per-example gates are not covered: their selectors depend on the
  batch, and ``config.regularizers`` see the parameters only.
  """
  if gamma is None:
    raise ValueError("regularizer 'selector_entropy' needs gamma= (the model's "
                     "config.model.gamma, default 1.0)")
  if not paths.matching(params, select) and paths.matching(params, "gate/z_kernel"):
    raise ValueError("regularizer 'selector_entropy' applies to sharing 'dselect_k' with "
                     "gate='static'; gate='example' selectors depend on the input, which "
                     "config.regularizers do not see")
  total = jnp.zeros((), jnp.float32)
  for z in select_leaves(params, select):
    r = selector_outputs(smooth_step(z, gamma))
    total = total - jnp.sum(r * jnp.log(r + ENTROPY_EPS))
  return total


def check_entropy_regularizer(model_config, regularizers) -> None:
  """A ``selector_entropy`` entry needs sharing 'dselect_k', gate 'static' and the model's gamma."""
  for i, reg in enumerate(regularizers or ()):
    reg = dict(reg)
    if reg.get("name") != "selector_entropy":
      continue
    model = dict(model_config)
    key = f"config.regularizers[{i}]"
    if model.get("sharing") != "dselect_k" or model.get("gate", "static") != "static":
      raise ValueError(f"{key}: 'selector_entropy' regularizes static DSelect-k selectors; "
                       f"config.model has sharing={model.get('sharing', 'hard')!r}, "
                       f"gate={model.get('gate', 'static')!r} (needs 'dselect_k', 'static')")
    gamma = model.get("gamma", DSelectK.gamma)
    if reg.get("gamma") != gamma:
      raise ValueError(f"{key}.gamma = {reg.get('gamma')!r} must equal config.model.gamma = "
                       f"{gamma!r} (the smooth-step the selectors use)")
