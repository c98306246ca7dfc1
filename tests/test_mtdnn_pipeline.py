"""The MT-DNN pipeline end to end on a generated GLUE folder with a tiny BERT (slow file).

configs/mtdnn_glue.py:runlocal through main.py: stage 2 on three tasks of
three MT-DNN types (single sentence, pair, similarity), stage 3 for two of
them from the stage-2 encoder and the task's own stage-2 head (checked bitwise against the stage-2 checkpoint), rerun
skips finished stages, a killed stage resumes to the same result, and bad
GLUE input fails naming the culprit.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, child_env
from mtl_jax import partial_load
from mtl_jax.data import glue_synthetic
from text_fixtures import write_bert_dir, write_tokenizer

TASKS = ("cola", "mrpc", "stsb")  # single sentence, pair (F1), similarity
WORDS = sorted(set(glue_synthetic.DETS + glue_synthetic.NOUNS + glue_synthetic.VERBS
                   + glue_synthetic.ADJS + tuple(glue_synthetic.SYN.values())
                   + ("and", "with", "but", "is", "what", "does", "not", "?", "see", "like",
                      "find", "help", "follow", "watch", "visit", "paint")))


def _main(workdir, glue_dir, encoder, *extra):
  args = [sys.executable, "-m", "mtl_jax.main", "--config=configs/mtdnn_glue.py:runlocal",
          f"--workdir={workdir}", f"--config.glue_dir={glue_dir}",
          f"--config.pipeline.encoder={encoder}", f"--config.pipeline.tasks={TASKS!r}",
          "--config.pipeline.max_examples=24", "--config.pipeline.max_length=16",
          "--config.num_train_steps=6", "--config.checkpoint_every_steps=3",
          "--config.pipeline.stage3.num_train_steps=4", "--config.progress_bar=False",
          "--config.eval_batch_size=32", "--config.pipeline.finetune=('mrpc', 'stsb')", *extra]
  return subprocess.run(args, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                        timeout=600)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("mtdnn")
  encoder = write_bert_dir(str(root / "bert"), vocab_size=5 + len(WORDS))
  write_tokenizer(encoder, WORDS)
  glue_dir = glue_synthetic.write_glue_dir(str(root / "glue"), TASKS, sizes={}, dev_size=16,
                                           test_size=4)
  workdir = str(root / "run")
  first = _main(workdir, glue_dir, encoder)
  assert first.returncode == 0, first.stderr[-3000:]
  return root, encoder, glue_dir, workdir, first


def test_three_stages_write_dev_scores_for_every_task(setup):
  _, _, _, workdir, first = setup
  res = json.load(open(os.path.join(workdir, "results.json")))
  assert list(res["scores"]) == ["stage2", "stage3"]
  wanted = {"cola": {"mcc", "accuracy"}, "mrpc": {"f1", "accuracy"},
            "stsb": {"pearson", "spearman"}}
  for stage in ("stage2", "stage3"):
    for t, metrics in wanted.items():
      if stage == "stage3" and t == "cola":  # not in pipeline.finetune
        assert t not in res["scores"][stage]
        continue
      assert metrics <= set(res["scores"][stage][t]), (stage, t)
      assert all(np.isfinite(res["scores"][stage][t][m]) for m in metrics if m != "mcc")
  for name in ["stage2_mtl", "stage3_mrpc", "stage3_stsb"]:
    assert os.path.isfile(os.path.join(workdir, name, "results.json")), name
  assert "| stsb | pearson |" in first.stdout and "MT-DNN dev scores" in first.stdout
  # The stage-3 table cell is that stage's own dev score.
  s3 = json.load(open(os.path.join(workdir, "stage3_mrpc", "results.json")))
  assert res["scores"]["stage3"]["mrpc"]["f1"] == s3["validation"]["mrpc"]["f1"]


def test_stage3_starts_from_the_encoder_and_its_own_stage2_head(setup):
  _, _, _, workdir, _ = setup
  from mtl_jax.checkpoint import load_params_numpy
  s2 = partial_load.load_checkpoint_params(os.path.join(workdir, "stage2_mtl"))
  cfg = json.load(open(os.path.join(workdir, "stage3_stsb", "config.json")))
  assert cfg["init_from"]["heads"] == {"stsb": "stsb"}
  # Stage 3's first checkpoint is after 3 updates; its init is what init_from built:
  # rebuild it the same way and compare with the stage-2 checkpoint bitwise.
  import ml_collections
  from mtl_jax import run
  c = ml_collections.ConfigDict(cfg)
  sample = {k: np.zeros((1, 16), np.int32) for k in ("input_ids", "attention_mask",
                                                       "token_type_ids")}
  params = run.build_program(c, sample).state.params
  from conftest import flat_params
  got = flat_params(params)
  for p, v in s2.items():
    if p.startswith("trunk/"):
      np.testing.assert_array_equal(got[p], v)
  # stsb is the only similarity task of stage 2 (row 0): its head is loaded whole.
  for w in ("kernel", "bias"):
    np.testing.assert_array_equal(got[f"heads/similarity_1/{w}"], s2[f"heads/similarity_1/{w}"])
  # cola and mrpc share heads/multiclass_2 in stage 2: mrpc's stage 3 takes row 1.
  c = ml_collections.ConfigDict(json.load(open(os.path.join(workdir, "stage3_mrpc",
                                                            "config.json"))))
  got = flat_params(run.build_program(c, sample).state.params)
  np.testing.assert_array_equal(got["heads/multiclass_2/kernel"][0],
                                s2["heads/multiclass_2/kernel"][1])
  assert load_params_numpy(os.path.join(workdir, "stage3_mrpc")) is not None


def test_rerun_skips_finished_and_resumes_a_killed_stage(setup):
  root, encoder, glue_dir, workdir, _ = setup
  before = json.load(open(os.path.join(workdir, "results.json")))["scores"]
  # "Kill" stage3_stsb after its first checkpoint: no results, no final checkpoint.
  stage = os.path.join(workdir, "stage3_stsb")
  os.remove(os.path.join(stage, "results.json"))
  shutil.rmtree(os.path.join(stage, "checkpoints", "4"))
  again = _main(workdir, glue_dir, encoder)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("finished earlier, skipped") == 2
  assert "[mtdnn] stage3_stsb: resuming" in again.stdout
  assert "resumed from step 3" in again.stderr
  after = json.load(open(os.path.join(workdir, "results.json")))["scores"]
  assert after == before  # the resumed stage ends bitwise where the uninterrupted one did


def _config(glue_dir, encoder, tasks):
  from configs import mtdnn_glue
  c = mtdnn_glue.get_config("runlocal")
  c.glue_dir = glue_dir
  c.pipeline.encoder = encoder
  c.pipeline.tasks = tasks
  c.progress_bar = False
  return c


def test_bad_glue_input_names_the_culprit(setup, tmp_path):
  from mtl_jax import pipelines
  from mtl_jax.config_keys import ConfigError
  _, encoder, glue_dir, _, _ = setup
  with pytest.raises(FileNotFoundError, match="lacks files of the listed tasks: .*"
                     + os.path.join(glue_dir, "RTE", "train.tsv")):
    pipelines.run(_config(glue_dir, encoder, ("cola", "rte")), str(tmp_path / "w1"))
  with pytest.raises(ConfigError, match=r"config.pipeline.tasks names unknown GLUE task 'foo'; "
                     r"known tasks: \['cola', 'mnli', 'mrpc', 'qnli', 'qqp', 'rte', 'sst2', "
                     r"'stsb', 'wnli'\]"):
    pipelines.run(_config(glue_dir, encoder, ("cola", "foo")), str(tmp_path / "w2"))
  with pytest.raises(ConfigError, match="config.glue_dir is not set"):
    pipelines.run(_config("", encoder, ("cola",)), str(tmp_path / "w2"))
  bad = str(tmp_path / "glue_bad")
  shutil.copytree(glue_dir, bad)
  path = os.path.join(bad, "MRPC", "train.tsv")
  lines = open(path).read().splitlines()
  lines[3] += "\textra"
  open(path, "w").write("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=f"{path}:4: 6 fields, but the header has 5"):
    pipelines.run(_config(bad, encoder, ("mrpc",)), str(tmp_path / "w3"))
