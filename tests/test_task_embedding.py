"""ERNIE 2.0's task embedding in the bert trunk: golden value, the data side's task_id,
checkpoints and transfer (kept or dropped), Hugging Face loading beside it, bad input."""

import jax
import ml_collections
import numpy as np
import pytest

from conftest import flat_params
from text_fixtures import write_bert_dir, write_glue_task
from mtl_jax import partial_load, tasks, train
from mtl_jax.models import build_model
from mtl_jax.models.trunks import build_trunk
from mtl_jax.pretrained import hf_bert

pytest.importorskip("tokenizers")

CFG = dict(name="bert", vocab_size=40, hidden_size=16, num_layers=2, num_heads=4,
           intermediate_size=32, max_position=16, dropout=0.0, pooling="none")


def _inputs(b=2, length=7, seed=0):
  rng = np.random.default_rng(seed)
  return dict(input_ids=rng.integers(5, 40, (b, length)).astype(np.int32),
              attention_mask=(np.arange(length)[None] < rng.integers(2, length + 1, (b, 1))
                              ).astype(np.int32),
              token_type_ids=(np.arange(length)[None] >= 3).astype(np.int32).repeat(b, 0))


def test_output_is_the_plain_encoder_with_the_task_vector_added_to_the_embeddings():
  """Golden: plain encoder whose token_type table row t is shifted by task vector k equals the
  task-embedding encoder at task k, for every example (each with its own task id)."""
  x = _inputs()
  with_task = build_trunk(dict(CFG, task_embedding=3))
  task_id = np.array([2, 0], np.int32)
  params = with_task.init(jax.random.PRNGKey(0), dict(x, task_id=task_id))["params"]
  table = np.asarray(params["embeddings"]["task"]["embedding"])
  assert table.shape == (3, 16) and np.abs(table).max() > 0
  got = np.asarray(with_task.apply({"params": params}, dict(x, task_id=task_id)))
  plain = build_trunk(CFG)
  base = {k: v for k, v in params.items()}
  base["embeddings"] = {k: v for k, v in params["embeddings"].items() if k != "task"}
  for b, k in enumerate(task_id):
    # Adding the task vector to both token-type rows adds it at every position (the sum
    # word + position + type + task goes into one LayerNorm).
    shifted = dict(base, embeddings=dict(base["embeddings"], token_type={
        "embedding": np.asarray(base["embeddings"]["token_type"]["embedding"]) + table[k]}))
    one = {n: v[b:b + 1] for n, v in x.items()}
    want = np.asarray(plain.apply({"params": shifted}, one))
    np.testing.assert_allclose(got[b:b + 1], want, atol=1e-5)
  # The task id changes the output; an example with the same id is unchanged.
  other = np.asarray(with_task.apply({"params": params}, dict(x, task_id=np.zeros(2, np.int32))))
  assert np.abs(other[0] - got[0]).max() > 1e-3
  np.testing.assert_array_equal(other[1], got[1])


def test_trunk_and_model_errors():
  x = _inputs()
  trunk = build_trunk(dict(CFG, task_embedding=2))
  with pytest.raises(KeyError, match=r"task_embedding=2 needs inputs\['task_id'\]"):
    trunk.init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="task_id must be"):
    trunk.init(jax.random.PRNGKey(0), dict(x, task_id=np.zeros((2, 7), np.int32)))
  with pytest.raises(ValueError, match="inputs carry 'task_id' but the trunk has no task"):
    build_trunk(CFG).init(jax.random.PRNGKey(0), dict(x, task_id=np.zeros(2, np.int32)))
  groups = tasks.group_tasks(tasks.specs_from_config([dict(name="a", kind="binary")]))
  with pytest.raises(ValueError, match="trunk 'mlp' has no input-layer task embedding"):
    build_model(dict(sharing="hard", trunk=dict(name="mlp"), task_embedding=2), groups)
  with pytest.raises(ValueError, match="must be the number of task ids"):
    build_model(dict(sharing="hard", trunk=CFG, task_embedding=1.5), groups)
  model = build_model(dict(sharing="hard", trunk=CFG, task_embedding=4), groups)
  assert model.trunk["task_embedding"] == 4


# ---------------------------------------------------------------------------- through the trainer

@pytest.fixture(scope="module")
def setup_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("te")
  hf = write_bert_dir(str(root / "hf"), seed=5)
  for i, t in enumerate(("sst2", "cola", "rte")):
    write_glue_task(str(root / "glue"), t, n=16, seed=i)
  return hf, str(root / "glue"), str(root / "cache"), root


def _config(hf, glue, cache, glue_tasks, num_task_ids, steps=4):
  c = ml_collections.ConfigDict()
  c.datasets = [dict(name="glue", task=t, data_dir=glue, tokenizer=hf, max_length=16,
                     cache_dir=cache, tasks=[t], alias=t) for t in glue_tasks]
  c.tasks = [dict(name=t, kind="multiclass", num_outputs=2) for t in glue_tasks]
  c.mixing = dict(sampling="uniform")
  c.model = dict(sharing="hard", trunk=hf_bert.trunk_config(hf, pooling="cls"),
                 task_embedding=num_task_ids)
  c.model.trunk.dropout = c.model.trunk.attention_dropout = 0.0
  c.optimizer = dict(name="adam", learning_rate=1e-2)
  c.batch_size = 4
  c.eval_batch_size = 8
  c.num_train_steps = steps
  c.log_every_steps = steps
  c.checkpoint_every_steps = 0
  c.progress_bar = False
  return c


@pytest.fixture(scope="module")
def upstream(setup_dirs):
  hf, glue, cache, root = setup_dirs
  c = _config(hf, glue, cache, ("sst2", "cola"), 2)
  c.init_from = dict(workdir=hf, load="trunk/.*", skip="trunk/embeddings/task/.*")
  train.train_and_evaluate(c, str(root / "up"))
  return str(root / "up")


def test_task_table_is_trained_checkpointed_and_hf_weights_load_beside_it(setup_dirs, upstream):
  hf = setup_dirs[0]
  final = flat_params(train.final_params(upstream))
  table = final["trunk/embeddings/task/embedding"]
  assert table.shape == (2, 16)
  start = _config(*setup_dirs[:3], ("sst2", "cola"), 2)
  # HF loading into the task-embedding model: every HF tensor has its place, the task table
  # is the only new trunk parameter.
  loaded = partial_load.load_checkpoint_params(hf)
  assert "trunk/embeddings/task/embedding" not in loaded
  assert set(loaded) == {p for p in final if p.startswith("trunk/")} - {
      "trunk/embeddings/task/embedding"}
  # Without skipping the table, the error names it and says what to do.
  start.init_from = dict(workdir=hf, load="trunk/.*")
  with pytest.raises(partial_load.CheckpointMismatchError,
                     match=r"trunk/embeddings/task/embedding: model \(2, 16\), checkpoint "
                           r"<absent>"):
    train.train_and_evaluate(start, str(setup_dirs[3] / "bad"))


@pytest.mark.parametrize("keep", [True, False])
def test_transfer_keeps_or_drops_the_task_table(setup_dirs, upstream, keep):
  hf, glue, cache, root = setup_dirs
  up = flat_params(train.final_params(upstream))
  # Downstream: a new task (rte); kept = same table size, task_id 1 (cola's vector); dropped =
  # no task embedding, the table is reported unused.
  c = _config(hf, glue, cache, ("rte",), 2 if keep else 0, steps=1)
  c.optimizer.learning_rate = 1e-12  # one near-zero step: the loaded values stay visible
  if keep:
    c.datasets[0]["task_id"] = 1
  c.init_from = dict(workdir=upstream, load="trunk/.*")
  work = str(root / f"down_{keep}")
  train.train_and_evaluate(c, work)
  down = flat_params(train.final_params(work))
  if keep:
    np.testing.assert_allclose(down["trunk/embeddings/task/embedding"],
                               up["trunk/embeddings/task/embedding"], atol=1e-9)
  else:
    assert not any("embeddings/task" in p for p in down)
  np.testing.assert_allclose(down["trunk/block_0/attention/query/kernel"],
                             up["trunk/block_0/attention/query/kernel"], atol=1e-9)


def test_data_side_errors(setup_dirs):
  hf, glue, cache, root = setup_dirs
  c = _config(hf, glue, cache, ("sst2", "cola"), 2)
  c.datasets[1]["task_id"] = 2
  with pytest.raises(ValueError, match=r"'cola' has task_id 2, outside \[0, "
                                       r"model.task_embedding=2\)"):
    train.train_and_evaluate(c, str(root / "e1"))
  c = _config(hf, glue, cache, ("sst2",), 0)
  c.datasets[0]["task_id"] = 0
  with pytest.raises(ValueError, match="set `task_id` but config.model.task_embedding is unset"):
    train.train_and_evaluate(c, str(root / "e2"))
  c = _config(hf, glue, cache, ("sst2",), 1)
  c.mixing.task_embedding = True
  with pytest.raises(ValueError, match="two ways of one thing"):
    train.train_and_evaluate(c, str(root / "e3"))
  c = _config(hf, glue, cache, ("sst2",), -1)
  with pytest.raises(ValueError, match=r"config.model.task_embedding = -1: must be the number "
                                       r"of task ids"):
    train.train_and_evaluate(c, str(root / "e4"))
