"""The encoder through the trainer: GLUE-format data (dict inputs), a Hugging Face
directory as the upstream of a transfer strategy, and per-token / similarity kinds."""

import jax
import ml_collections
import numpy as np
import pytest

from conftest import flat_params
from text_fixtures import write_bert_dir, write_glue_task
from mtl_jax import train
from mtl_jax.pretrained import hf_bert

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return write_bert_dir(str(tmp_path_factory.mktemp("hf")), seed=3)


def _config(hf, data_dir, cache, strategy, task="rte", kind=dict(kind="multiclass", num_outputs=2)):
  c = ml_collections.ConfigDict()
  c.data = dict(name="glue", task=task, data_dir=data_dir, tokenizer=hf, max_length=16,
                holdout=0.25, cache_dir=cache)
  c.tasks = [dict(name=task, **kind)]
  c.model = dict(sharing="hard", trunk=hf_bert.trunk_config(hf, pooling="cls"))
  c.optimizer = dict(name="adam", learning_rate=1e-2)
  c.batch_size = 4
  c.eval_batch_size = 8
  c.num_train_steps = 6
  c.log_every_steps = 3
  c.checkpoint_every_steps = 0
  c.progress_bar = False
  c.transfer = dict(strategy=strategy, upstream=hf)
  return c


@pytest.mark.parametrize("strategy,frozen", [("linear_probe", ("trunk/",)),
                                             ("freeze_bottom:1", ("trunk/block_0/",))])
def test_transfer_from_a_hugging_face_directory(tmp_path, hf_dir, strategy, frozen):
  write_glue_task(str(tmp_path / "glue"), "rte", n=16)
  c = _config(hf_dir, str(tmp_path / "glue"), str(tmp_path / "cache"), strategy)
  res = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert np.isfinite(res["test"]["rte"]["loss"]) and res["test"]["rte"]["count"] > 0
  upstream = flat_params(hf_bert.load_trunk_params(hf_dir))
  final = flat_params(train.final_params(str(tmp_path / "run")))
  for path, value in upstream.items():
    if "pooler" in path:  # unused with pooling="cls": no gradient either way
      continue
    same = np.array_equal(value, final[path])
    # Frozen: bitwise the upstream; trained: moved (the top block always is).
    assert same == path.startswith(frozen), path


def test_similarity_task_on_sts_b_with_bfloat16_compute(tmp_path, hf_dir):
  write_glue_task(str(tmp_path / "glue"), "stsb", n=16)
  c = _config(hf_dir, str(tmp_path / "glue"), str(tmp_path / "cache"), "finetune",
              task="stsb", kind=dict(kind="similarity"))
  c.model.dtype = "bfloat16"
  res = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert set(res["test"]["stsb"]) >= {"pearson", "spearman"}
  assert all(np.asarray(x).dtype == np.float32
             for x in jax.tree.leaves(train.final_params(str(tmp_path / "run"))))


def test_cached_probe_from_a_hugging_face_directory_equals_linear_probe(tmp_path, hf_dir):
  write_glue_task(str(tmp_path / "glue"), "rte", n=16)
  res = {}
  for strategy in ("linear_probe", "cached_probe"):
    c = _config(hf_dir, str(tmp_path / "glue"), str(tmp_path / "cache"), strategy)
    c.model.trunk.dropout = c.model.trunk.attention_dropout = 0.0  # cached = eval-mode features
    res[strategy] = train.train_and_evaluate(c, str(tmp_path / strategy))
  np.testing.assert_allclose(res["cached_probe"]["test"]["rte"]["loss"],
                             res["linear_probe"]["test"]["rte"]["loss"], rtol=1e-4)
