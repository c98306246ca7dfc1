"""per_task_grads: the T gradients of one VJP, sequential (lax.map) only on CPU for dense-only
models; conv models (a parameter of rank >= 4) are vmapped, which XLA:CPU runs ~4x faster."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.weighting.strategy import per_task_grads


def _losses(params, x):
  """Three task losses of a kernel of any rank (summed over all but its last axis)."""
  h = jnp.tanh(params["w"].reshape(-1, params["w"].shape[-1]).sum(0) * x + params["b"])
  return jnp.stack([h.sum(), (h ** 2).sum(), jnp.sin(h).sum()])


def _grads(params, x):
  def primal(p):
    per_task = _losses(p, x)  # as LossProblem.vjp: (weighted losses [T], reg), aux
    return (per_task, jnp.zeros(())), per_task
  _, vjp_fn, _ = jax.vjp(primal, params, has_aux=True)
  return per_task_grads(vjp_fn, 3, jnp.float32, jnp.float32)


def _uses_loop(params, x) -> bool:
  return any(e.primitive.name in ("scan", "while")
             for e in jax.make_jaxpr(_grads)(params, x).jaxpr.eqns)


@pytest.mark.parametrize("shape, loops_on_cpu", [((4, 5), True), ((3, 3, 2, 5), False)])
def test_sequential_on_cpu_only_without_conv_kernels(shape, loops_on_cpu):
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=shape), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
  x = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
  on_cpu = jax.default_backend() == "cpu"
  assert _uses_loop(params, x) == (loops_on_cpu and on_cpu)
  got = _grads(params, x)
  want = jax.jacrev(_losses)(params, x)  # [T, ...] per leaf: the independent oracle
  for k in params:
    np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-5, atol=1e-6)
