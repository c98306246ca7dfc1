"""Mixed precision: ``config.model.dtype`` (compute) and ``config.model.param_dtype``.

The policy is applied around the model, not inside every layer, so every
trunk, head and sharing scheme gets it without a dtype field of its own:
parameters are stored (and optimized) in ``param_dtype``; inside the step
they and the floating inputs are cast to ``dtype`` for the forward and
backward passes; outputs are cast back to float32 before any loss, metric or
weighting, so losses, the Gramian/Jacobian and weights stay float32 (float64
under ``jax_enable_x64`` when asked). Gradients reach the stored parameters
through the cast, in ``param_dtype``.
"""

import dataclasses

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16,
          "float64": jnp.float64}
KEYS = ("dtype", "param_dtype")


def dtype_from_name(name: str, key: str):
  if name not in DTYPES:
    raise ValueError(f"config.model.{key}={name!r} is not a dtype; valid: {list(DTYPES)}")
  return DTYPES[name]


@dataclasses.dataclass(frozen=True)
class Policy:
  compute: object = jnp.float32
  param: object = jnp.float32

  @property
  def output(self):
    """Losses and metrics: float32 at least (float64 stays float64)."""
    return jnp.promote_types(self.compute, jnp.float32)

  def cast_params(self, params):
    return cast_floating(params, self.param)

  def for_compute(self, tree):
    return cast_floating(tree, self.compute)

  def for_output(self, tree):
    return cast_floating(tree, self.output)


def policy(model_config) -> Policy:
  """The policy of ``config.model`` (float32 throughout by default)."""
  get = (lambda k: model_config.get(k)) if model_config is not None else (lambda k: None)
  return Policy(compute=dtype_from_name(get("dtype") or "float32", "dtype"),
                param=dtype_from_name(get("param_dtype") or "float32", "param_dtype"))


def cast_floating(tree, dtype):
  """Casts the floating-point leaves of ``tree`` to ``dtype``; integer leaves (token ids) stay."""
  def cast(x):
    return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x
  return jax.tree.map(cast, tree)
