"""mtl_jax: transfer learning and multi-task learning in JAX/Flax."""

__version__ = "0.1.0"
