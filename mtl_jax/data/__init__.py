"""Datasets (registered by name) and the input pipeline."""

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits, build_dataset, hide_labels
from mtl_jax.data import synthetic  # noqa: F401  (registers datasets)
from mtl_jax.data import mnist1d_tasks  # noqa: F401
from mtl_jax.data import tfds_source  # noqa: F401
from mtl_jax.data import gradnorm_toy  # noqa: F401
from mtl_jax.data import multimnist  # noqa: F401
from mtl_jax.data import many_tasks  # noqa: F401
from mtl_jax.data import multilabel_synthetic  # noqa: F401
from mtl_jax.data import related_regression  # noqa: F401
from mtl_jax.data import glue  # noqa: F401
from mtl_jax.data import glue_tfds  # noqa: F401
from mtl_jax.data import celeb_a  # noqa: F401
from mtl_jax.data import streaming  # noqa: F401
from mtl_jax.data import dense_shapes, npy_folders  # noqa: F401  (dense tasks)
