"""MT-DNN on GLUE in three stages: pretrained MiniLM -> multi-task -> per-task fine-tuning.

  python -m mtl_jax.main --config=configs/mtdnn_glue.py --workdir=/tmp/mtdnn \
      --config.glue_dir=/data/glue_data [--config.pipeline.tasks='("rte","mrpc","stsb")']
  python -m mtl_jax.main --config=configs/mtdnn_glue.py:runlocal --workdir=/tmp/mtdnn_local \
      --config.glue_dir=/data/glue_data        # a few steps on 64 examples per task

``glue_dir`` is the folder the GLUE download script writes (``CoLA/``,
``SST-2/``, ``MRPC/``, ``QQP/``, ``STS-B/``, ``MNLI/``, ``QNLI/``, ``RTE/``,
each with train/dev/test.tsv; MNLI dev_matched.tsv). Stage 2 trains all
listed tasks at once (one task per batch, proportional sampling; set
``--config.mixing.main=rte --config.mixing.ratio=0.5`` for MT-DNN's main task
against auxiliary ones) in ``workdir/stage2_mtl``; stage 3 fine-tunes each
task from the stage-2 encoder and its own stage-2 head in
``workdir/stage3_<task>``; ``--config.pipeline.single_task=True`` adds the
single-task baseline (``workdir/single_<task>``). QNLI trains as MT-DNN's
pairwise ranking (``pipeline.qnli_as="ranking"``: rows grouped by question,
a softmax over each question's candidates and a null; dev accuracy per row
as GLUE scores it) or, with ``"classification"``, as pair classification.
Rerunning the command skips finished stages and resumes a killed one. The table of dev scores is
printed and written to ``workdir/results.json`` (docs/pipelines.md).

Published dev numbers to compare with (docs/references.md, "MT-DNN"; from
BERT-base-size encoders, 110M parameters, 12 layers; ours is MiniLM-L6, 22M,
a sentence-embedding checkpoint, so expect lower):

| task (metric) | BERT-base, single task (transformers run_glue, median of 5) | MT-DNN base, fine-tuned (mt-dnn README) |
|---|---|---|
| CoLA (MCC) | 57.9 | |
| SST-2 (accuracy) | 92.8 | |
| MRPC (F1) | 89.4 | |
| QQP (F1) | 91.4 | |
| STS-B (Spearman; MT-DNN Pearson/Spearman) | 89.1 | 90.5 / 90.4 |
| MNLI (accuracy) | 84.3 | |
| QNLI (accuracy) | 91.6 | |
| RTE (accuracy) | 71.5 | 83.8 |

MT-DNN (BERT-large) GLUE test: 82.7 average vs BERT-large 80.5 (abstracts).
The paper's per-task dev tables were not in the stored sources: not quoted.

Recipe: AdamW, learning rate 5e-5, batch 32, ~5 epochs of stage 2 with
linear decay and 10% warm-up (MT-DNN's Adamax recipe, from memory,
unchecked), MiniLM's [CLS] feature with linear heads, max length 128;
stage 3 uses 2e-5 for 3,000 steps per task. Measured on the generated GLUE
folder (``:runlocal``, 64 examples per task): see experiments/mtdnn/results.md
for the study and docs/pipelines.md for a runlocal table.
"""

import ml_collections

from mtl_jax.config_validation import check_config_arg

GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")  # WNLI left out,
# as MT-DNN does


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  check_config_arg(arg, ("runlocal",), "configs/mtdnn_glue.py")
  config = ml_collections.ConfigDict()
  config.glue_dir = ""
  config.pipeline = dict(
      name="mtdnn", tasks=GLUE_TASKS, encoder="", pooling="cls", max_length=128, holdout=0.0,
      max_examples=None, finetune=None, single_task=False, qnli_as="ranking",
      stage3=dict(num_train_steps=3000, optimizer=dict(learning_rate=2e-5, warmup_steps=300)))
  config.seed = 0
  config.model = dict(sharing="hard")  # trunk: the encoder's (pipeline.encoder)
  config.mixing = dict(sampling="proportional", batches="per_dataset")
  config.optimizer = dict(name="adamw", learning_rate=5e-5, schedule="linear",
                          warmup_steps=14800, weight_decay=0.01, grad_clip_norm=1.0)
  config.batch_size = 32
  config.eval_batch_size = 256
  config.num_train_steps = 148000  # ~5 epochs of the 949k GLUE training examples
  config.log_every_steps = 200
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 2
  config.progress_bar = True
  if arg == "runlocal":
    config.pipeline.max_examples = 64
    config.pipeline.max_length = 32
    config.pipeline.stage3 = dict(num_train_steps=20,
                                  optimizer=dict(learning_rate=5e-5, warmup_steps=2))
    config.optimizer.warmup_steps = 4
    config.batch_size = 8
    config.eval_batch_size = 64
    config.num_train_steps = 60
    config.log_every_steps = 10
    config.checkpoint_every_steps = 20
  return config
