"""The pipeline registry (its own module so pipelines import it without a cycle)."""

from mtl_jax.registry import Registry

PIPELINES = Registry("pipeline")
