"""grouped_ranking (QNLI as MT-DNN's pairwise ranking): loss, accuracy and grouping vs oracles."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from mtl_jax import kinds
from mtl_jax.data import glue, glue_synthetic
from mtl_jax.kinds import LabelError
from mtl_jax.tasks import TaskSpec, validate_batch

KIND = kinds.get("grouped_ranking")
SPEC = TaskSpec("qnli", "grouped_ranking", 1)


def _oracle_loss(scores, groups, rel, mask):
  """Mean over groups of the cross-entropy of a softmax over (null = 0, the group's rows)."""
  losses = []
  for g in dict.fromkeys(groups[mask].tolist()):
    rows = mask & (groups == g)
    logits = np.concatenate([[0.0], scores[rows].astype(np.float64)])
    p = np.exp(logits - logits.max())
    p /= p.sum()
    r = rel[rows].astype(np.float64)
    target = np.concatenate([[0.0], r / r.sum()]) if r.sum() > 0 else \
        np.array([1.0] + [0.0] * int(rows.sum()))
    losses.append(-(target * np.log(p)).sum())
  return np.mean(losses), len(losses)


def _batch(seed, b=12):
  rng = np.random.default_rng(seed)
  scores = rng.normal(0, 3, b).astype(np.float32)
  groups = rng.integers(0, 5, b).astype(np.float32)
  rel = (rng.random(b) < 0.4) * rng.integers(1, 3, b)  # graded 0/1/2
  mask = rng.random(b) < 0.8
  return scores, groups, rel.astype(np.float32), mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_the_numpy_oracle(seed):
  scores, groups, rel, mask = _batch(seed)
  labels = np.stack([groups, rel], 1)
  # Garbage under mask=False must not change anything.
  labels[~mask] = [7.5, -3.0]
  want, count = _oracle_loss(scores, groups, rel, mask)
  got = KIND.loss(jnp.asarray(scores[:, None]), jnp.asarray(labels), jnp.asarray(mask))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  assert float(KIND.loss_count(jnp.asarray(labels), jnp.asarray(mask))) == count
  np.testing.assert_allclose(KIND.numpy_loss(SPEC, scores[mask, None], labels[mask]).mean(),
                             want, rtol=1e-10)
  g = jax.grad(lambda s: KIND.loss(s, jnp.asarray(labels), jnp.asarray(mask)))(
      jnp.asarray(scores[:, None]))
  assert np.isfinite(np.asarray(g)).all() and not np.asarray(g)[~mask].any()


def test_one_candidate_per_question_is_sigmoid_cross_entropy():
  import torch
  s = np.array([2.0, -1.0, 0.3, -4.0], np.float32)
  y = np.array([1, 0, 0, 1], np.float32)
  labels = np.stack([np.arange(4, dtype=np.float32), y], 1)
  got = KIND.loss(jnp.asarray(s[:, None]), jnp.asarray(labels), jnp.ones(4, bool))
  want = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(s), torch.tensor(y))
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


def test_large_scores_stay_finite():
  s = jnp.array([[300.0], [-300.0], [250.0]])
  labels = jnp.array([[0, 0], [0, 1], [1, 0]], jnp.float32)
  got = KIND.loss(s, labels, jnp.ones(3, bool))
  # group 0: target row 1 (score -300) vs top 300 -> 600; group 1: null vs 250 -> 250.
  np.testing.assert_allclose(float(got), (600.0 + 250.0) / 2, rtol=1e-6)


def test_accuracy_is_glue_per_row_top_candidate_above_the_null():
  # group 0: rows 0-2, top row 1 (score 2 > 0) -> predicted relevant, others not.
  # group 1: rows 3-4, top row 4 scores -0.5 < 0 (below the null) -> none predicted.
  # group 2: row 5 alone, score 1 -> relevant.
  s = np.array([[0.5], [2.0], [1.0], [-1.0], [-0.5], [1.0]])
  labels = np.array([[0, 0], [0, 1], [0, 1], [1, 0], [1, 1], [2, 0]], np.float32)
  pred = KIND.predict(s, labels)
  np.testing.assert_array_equal(pred, [False, True, False, False, False, True])
  m = KIND.metrics(TaskSpec("qnli", "grouped_ranking", 1, metrics=("accuracy",)), s, labels,
                   np.ones(6, bool))
  assert m["accuracy"] == pytest.approx(3 / 6) and m["count"] == 6


def test_bad_labels_name_the_task_and_example():
  ok = np.array([[0, 1], [0, 0]], np.float32)
  validate_batch([SPEC], {"qnli": ok}, {"qnli": np.ones(2, bool)})
  with pytest.raises(LabelError, match=r"'qnli'.*1 group ids .* first at example 1"):
    validate_batch([SPEC], {"qnli": np.array([[0, 1], [0.5, 0]], np.float32)},
                   {"qnli": np.ones(2, bool)})
  with pytest.raises(LabelError, match=r"1 relevance .* negative .* first at example 0"):
    validate_batch([SPEC], {"qnli": np.array([[0, -1], [0, 0]], np.float32)},
                   {"qnli": np.ones(2, bool)})
  with pytest.raises(LabelError, match=r"labels have shape \(2,\)"):
    validate_batch([SPEC], {"qnli": np.zeros(2, np.float32)}, {"qnli": np.ones(2, bool)})


def test_qnli_rows_are_grouped_by_question(tmp_path):
  root = glue_synthetic.write_glue_dir(str(tmp_path), ("qnli",), sizes={"qnli": 40},
                                       dev_size=16, test_size=2)
  split = glue.read_split("qnli", f"{root}/QNLI", "train")
  # Repeat some questions: rows 0 and 5 ask the same, as do 1, 2 and 7.
  split.text[5] = split.text[0]
  split.text[2] = split.text[7] = split.text[1]
  labels = glue.ranking_labels(split)
  first = {}
  for i, q in enumerate(split.text):
    assert labels[i, 0] == first.setdefault(q, len(first))
  assert labels[0, 0] == labels[5, 0] and labels[1, 0] == labels[2, 0] == labels[7, 0]
  assert len(np.unique(labels[:, 0])) == len(set(split.text))
  np.testing.assert_array_equal(labels[:, 1], split.labels == 0)  # entailment is class 0
  with pytest.raises(ValueError, match="qnli_as='ranking' is for task qnli, not 'rte'"):
    glue.glue("rte", root, tokenizer="unused", qnli_as="ranking")
  with pytest.raises(ValueError, match="qnli_as must be 'classification' or 'ranking'"):
    glue.glue("qnli", root, tokenizer="unused", qnli_as="rank")


def _pipeline_config(glue_dir, encoder, **pipeline):
  from configs import mtdnn_glue
  c = mtdnn_glue.get_config("runlocal")
  c.glue_dir = glue_dir
  c.pipeline.encoder = encoder
  c.pipeline.tasks = ("qnli", "rte")
  c.pipeline.finetune = ("qnli",)
  c.pipeline.max_examples = 24
  c.pipeline.max_length = 16
  c.pipeline.stage3.num_train_steps = 2
  c.pipeline.update(pipeline)
  c.num_train_steps = 4
  c.checkpoint_every_steps = 4
  c.eval_batch_size = 32
  c.progress_bar = False
  return c


@pytest.fixture(scope="module")
def glue_folder(tmp_path_factory):
  from test_mtdnn_pipeline import WORDS
  from text_fixtures import write_bert_dir, write_tokenizer
  root = tmp_path_factory.mktemp("qnli_rank")
  encoder = write_bert_dir(str(root / "bert"), vocab_size=5 + len(WORDS))
  write_tokenizer(encoder, WORDS)
  glue_dir = glue_synthetic.write_glue_dir(str(root / "glue"), ("qnli", "rte"), sizes={},
                                           dev_size=16, test_size=2)
  for split in ("train", "dev"):  # questions asked twice: groups of two candidates
    path = f"{glue_dir}/QNLI/{split}.tsv"
    lines = [r.split("\t") for r in open(path).read().splitlines()]
    for i in range(2, len(lines), 2):
      lines[i][1] = lines[i - 1][1]
    open(path, "w").write("\n".join("\t".join(r) for r in lines) + "\n")
  return glue_dir, encoder


def test_pipeline_stages_rank_qnli_by_default(glue_folder, tmp_path):
  from mtl_jax import pipelines
  from mtl_jax.pipelines import mtdnn
  glue_dir, encoder = glue_folder
  stages = mtdnn.stage_configs(_pipeline_config(glue_dir, encoder), str(tmp_path))
  s2 = stages["stage2_mtl"]
  assert [(t["name"], t["kind"], t["num_outputs"]) for t in s2.tasks] == [
      ("qnli", "grouped_ranking", 1), ("rte", "multiclass", 2)]
  assert s2.datasets[0]["qnli_as"] == "ranking" and "qnli_as" not in s2.datasets[1]
  assert stages["stage3_qnli"].tasks[0]["kind"] == "grouped_ranking"
  assert stages["stage3_qnli"].data.qnli_as == "ranking"
  cls = mtdnn.stage_configs(_pipeline_config(glue_dir, encoder, qnli_as="classification"),
                            str(tmp_path))
  assert cls["stage2_mtl"].tasks[0]["kind"] == "multiclass"
  assert "qnli_as" not in cls["stage2_mtl"].datasets[0]
  from mtl_jax.config_keys import ConfigError
  with pytest.raises(ConfigError, match=r"pipeline.qnli_as must be one of \['ranking', "
                     r"'classification'\], got 'rank'"):
    mtdnn.stage_configs(_pipeline_config(glue_dir, encoder, qnli_as="rank"), str(tmp_path))
  # Both stages train and report QNLI's GLUE accuracy; the rows share [B, L] batches with RTE.
  res = pipelines.run(_pipeline_config(glue_dir, encoder), str(tmp_path / "run"))
  for stage in ("stage2", "stage3"):
    acc = res["scores"][stage]["qnli"]["accuracy"]
    assert 0 <= acc <= 1 and res["scores"][stage]["qnli"]["count"] == 16
  assert np.isfinite(res["scores"]["stage2"]["rte"]["accuracy"])


def _contiguous(order, groups):
  """Every unit's rows are consecutive in ``order`` and in file order."""
  seen = {}
  for pos, row in enumerate(order):
    seen.setdefault(groups[row], []).append((pos, row))
  return all([p for p, _ in v] == list(range(v[0][0], v[0][0] + len(v))) and
             [r for _, r in v] == sorted(r for _, r in v) for v in seen.values())


def test_group_permutation_keeps_groups_together_and_nothing_else_changes():
  from mtl_jax.data import grouping
  rng = lambda: np.random.default_rng([3, 1])  # noqa: E731
  np.testing.assert_array_equal(grouping.permutation(rng(), 50, None), rng().permutation(50))
  groups = np.random.default_rng(0).integers(0, 9, 40)
  order = grouping.permutation(rng(), 40, groups)
  assert sorted(order) == list(range(40)) and _contiguous(order, groups)
  assert not _contiguous(np.random.default_rng(0).permutation(40), groups)  # the check can fail
  # train_groups: a row outside any group (mask False) is a unit of its own.
  mask = np.ones(6, bool)
  mask[[1, 4]] = False
  labels = np.array([[5, 1], [0, 0], [5, 0], [2, 1], [0, 0], [2, 0]], np.float32)
  split = glue.ArrayDataset(np.zeros((6, 2)), {"qnli": labels, "rte": np.zeros(6, np.int32)},
                            {"qnli": mask, "rte": ~mask})
  specs = [SPEC, TaskSpec("rte", "multiclass", 2)]
  units = grouping.train_groups(split, specs)
  assert units[0] == units[2] and units[3] == units[5] and len(set(units)) == 4
  assert grouping.train_groups(split, specs[1:]) is None


def test_training_iterators_draw_a_groups_rows_together():
  from mtl_jax.data import grouping, mixing
  from mtl_jax.data.pipeline import TrainIterator
  n = 60
  groups = np.repeat(np.arange(20), 3)  # 20 questions x 3 candidates
  labels = np.stack([groups, np.tile([1, 0, 0], 20)], 1).astype(np.float32)
  ds = glue.ArrayDataset(np.arange(n)[:, None], {"qnli": labels}, {"qnli": np.ones(n, bool)})
  units = grouping.train_groups(ds, [SPEC])
  it = TrainIterator(ds, 6, seed=1, groups=units)
  for _ in range(25):  # batches of 6 = two whole questions, across epochs
    rows = next(it)["inputs"][:, 0]
    assert sorted(np.bincount(groups[rows], minlength=20)[groups[rows]]) == [3] * 6
  src = mixing.Source("qnli", "glue", ("qnli",), None, {"train": ds})
  phase = mixing.Phase(0, 10, [(0, np.array([True]))], np.array([1.0]))
  mix = mixing.MixtureIterator([src], [phase], 6, seed=2, mixed=False, groups=[units])
  for _ in range(12):
    rows = next(mix)["inputs"][:, 0]
    assert sorted(np.bincount(groups[rows], minlength=20)[groups[rows]]) == [3] * 6
