"""Generated Hugging Face-layout BERT directories and WordPiece tokenizers (no download)."""

import json
import os

import numpy as np

WORDS = ("the a an is was good bad movie film great terrible not very and of to it this that "
         "cat dog sat on mat man woman said what who where why how question answer yes no "
         "sentence pair first second ##s ##ed ##ing , . ! ?").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = dict(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=16, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=32, max_position_embeddings=24,
            type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
            model_type="bert", position_embedding_type="absolute", pad_token_id=0)


def write_tokenizer(path: str, words=WORDS) -> str:
  """A BERT-style (lowercasing WordPiece, [CLS] A [SEP] B [SEP]) tokenizer.json."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
  vocab = {w: i for i, w in enumerate(SPECIAL + list(words))}
  tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
  tok.enable_padding(pad_id=0, pad_token="[PAD]")
  os.makedirs(path, exist_ok=True)
  tok.save(os.path.join(path, "tokenizer.json"))
  return path


def write_bert_dir(path: str, seed: int = 0, tensors=None, **overrides) -> str:
  """config.json + model.safetensors (random tiny BERT, HF names) + tokenizer.json."""
  import jax
  from safetensors.numpy import save_file
  from mtl_jax.models.trunks import build_trunk
  from mtl_jax.pretrained import hf_bert
  cfg = dict(TINY, **overrides)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(cfg, f)
  if tensors is None:
    trunk = build_trunk(hf_bert.trunk_config(cfg))
    x = {"input_ids": np.zeros((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.int32)}
    params = trunk.init(jax.random.PRNGKey(seed), x)["params"]
    # Non-trivial LayerNorm and bias values, so a swapped or dropped tensor shows.
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(seed + 1),
                                                                a.shape), params)
    tensors = hf_bert.to_hf_tensors(params)
    tensors["embeddings.position_ids"] = np.arange(cfg["max_position_embeddings"])[None]
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
            os.path.join(path, "model.safetensors"))
  write_tokenizer(path)
  return path


# --- GLUE-format fixtures ------------------------------------------------------------
# Headers exactly as in the GLUE download (glue_data/<TASK>/*.tsv).
MNLI_COLS = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
             "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
             "sentence2"]
STSB_COLS = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
             "sentence1", "sentence2"]
LABELS = {"sst2": ["0", "1"], "cola": ["0", "1"], "mrpc": ["0", "1"], "qnli": ["entailment",
          "not_entailment"], "rte": ["entailment", "not_entailment"],
          "mnli": ["entailment", "neutral", "contradiction"]}


def _sentences(rng, n):
  words = [w for w in WORDS if w.isalpha()]
  return [" ".join(rng.choice(words, rng.integers(1, 9))) for _ in range(n)]


def _write(path, header, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8", newline="") as f:
    if header is not None:
      f.write("\t".join(header) + "\n")
    for r in rows:
      f.write("\t".join(str(x) for x in r) + "\n")


def write_glue_task(root: str, task: str, n: int = 12, seed: int = 0) -> dict:
  """Writes <root>/<GLUE dir>/ files in the task's real layout; returns what it wrote.

  {split: (sentences, pairs or None, labels as written or None)}.
  """
  rng = np.random.default_rng(seed)
  dirname = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "stsb": "STS-B", "qnli": "QNLI",
             "rte": "RTE", "mnli": "MNLI"}[task]
  d = os.path.join(root, dirname)
  splits = {"sst2": ["train", "dev", "test"], "cola": ["train", "dev", "test"],
            "mrpc": ["train", "dev", "test"], "stsb": ["train", "dev", "test"],
            "qnli": ["train", "dev", "test"], "rte": ["train", "dev", "test"],
            "mnli": ["train", "dev_matched", "dev_mismatched", "test_matched",
                     "test_mismatched"]}[task]
  out = {}
  for split in splits:
    test = split.startswith("test")
    a, b = _sentences(rng, n), _sentences(rng, n)
    if task == "stsb":
      y = [f"{v:.3f}" for v in rng.uniform(0, 5, n)]
    else:
      y = list(rng.choice(LABELS[task], n))
    path = os.path.join(d, split + ".tsv")
    if task == "sst2":
      _write(path, ["index", "sentence"] if test else ["sentence", "label"],
             [(i, s) for i, s in enumerate(a)] if test else zip(a, y))
      b = None
    elif task == "cola":  # train/dev have no header
      _write(path, ["index", "sentence"] if test else None,
             [(i, s) for i, s in enumerate(a)] if test else
             [("gj04", lab, "" if lab == "1" else "*", s) for s, lab in zip(a, y)])
      b = None
    elif task == "mrpc":
      head = ["index" if test else "Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
      _write(path, head, [(i if test else y[i], 1000 + i, 2000 + i, a[i], b[i])
                          for i in range(n)])
    elif task == "stsb":
      _write(path, STSB_COLS + ([] if test else ["score"]),
             [(i, "main-captions", "MSRvid", "2012test", i, "none", "none", a[i], b[i])
              + (() if test else (y[i],)) for i in range(n)])
    elif task in ("qnli", "rte"):
      head = ["index", "question", "sentence"] if task == "qnli" else [
          "index", "sentence1", "sentence2"]
      _write(path, head + ([] if test else ["label"]),
             [(i, a[i], b[i]) + (() if test else (y[i],)) for i in range(n)])
    elif task == "mnli":
      extra = [] if test else (["label1", "gold_label"] if split == "train" else
                               ["label1", "label2", "label3", "label4", "label5", "gold_label"])
      rows = []
      for i in range(n):
        r = [i, 31193 + i, f"{31193 + i}n", "government", "( x )", "( y )", "(ROOT x)",
             "(ROOT y)", a[i], b[i]]
        if not test:
          r += [y[i]] * (len(extra) - 1) + [y[i]]
        rows.append(r)
      _write(path, MNLI_COLS + extra, rows)
    out[split] = (a, b, None if test else y)
  return out
