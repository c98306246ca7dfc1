"""masked_lm through the trainer: the text_corpus dataset, a tiny BERT directory as the
upstream, streamed MLM metrics at the end (one short run; an end-to-end file)."""

import ml_collections
import pytest

from text_fixtures import TINY, write_bert_dir
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
