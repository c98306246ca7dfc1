"""Streaming splits (mtl_jax/data/streaming.py): same batches, checks, metrics and resume as
the in-memory path, grain workers included; corrupt files named; bounded memory."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, child_env, tiny_config
from mtl_jax import train
from mtl_jax.data import build_dataset
from mtl_jax.data.base import ArrayDataset
from mtl_jax.data.checks import DataCheckError, check_splits
from mtl_jax.data.pipeline import TrainIterator, eval_batches
from mtl_jax.data import streaming


def _examples(ds: ArrayDataset):
  for i in range(len(ds)):
    b = ds.take(np.array([i]))
    yield jax.tree.map(lambda x: x[0], b)


def _write(ds: ArrayDataset, path, encode=streaming.encode_npz) -> str:
  streaming.write_array_record(str(path), _examples(ds), encode)
  return str(path)


def _small(n=50, seed=0):
  rng = np.random.default_rng(seed)
  return ArrayDataset(rng.normal(size=(n, 7)).astype(np.float32),
                      {"a": rng.integers(0, 3, n).astype(np.int32),
                       "b": rng.normal(size=(n, 2)).astype(np.float32)},
                      {"a": rng.random(n) < 0.7, "b": rng.random(n) < 0.5})


def _stream(paths, **kw):
  return streaming.StreamingDataset(streaming.ArrayRecordSource(paths), streaming.decode_npz, **kw)


def _assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_take_and_batches_equal_in_memory_across_files(tmp_path):
  mem = _small()
  # Two files: global indices cross the file boundary.
  p1 = _write(mem.subset(np.arange(20)), tmp_path / "a.array_record")
  p2 = _write(mem.subset(np.arange(20, 50)), tmp_path / "b.array_record")
  st = _stream([p1, p2])
  assert len(st) == 50 and tuple(st.task_names) == ("a", "b")
  idx = np.array([49, 0, 19, 20, 33, 33])
  _assert_tree_equal(st.take(idx), mem.take(idx))
  a, b = TrainIterator(mem, 16, seed=3), TrainIterator(st, 16, seed=3)
  for _ in range(8):  # 128 examples: crosses two epoch boundaries
    _assert_tree_equal(next(a), next(b))
  for x, y in zip(eval_batches(mem, 16), eval_batches(st, 16)):
    _assert_tree_equal(x, y)
  _assert_tree_equal(st.select_tasks(["b"]).take(idx)["labels"], {"b": mem.labels["b"][idx]})
  with pytest.raises(KeyError, match=r"tasks \['c'\] are not in the data"):
    st.select_tasks(["c"])


@pytest.mark.parametrize("workers", [0, 2])
def test_grain_worker_iterator_is_train_iterator_and_resumes(tmp_path, workers):
  mem = _small(40)
  st = _stream([_write(mem, tmp_path / "d.array_record")])
  ref = TrainIterator(mem, 8, seed=1, process_index=1, process_count=2)
  it = streaming.StreamingTrainIterator(st, 8, seed=1, process_index=1, process_count=2,
                                        num_workers=workers)
  want = [next(ref) for _ in range(12)]
  got = [next(it) for _ in range(5)]
  state = it.get_state()
  assert state == {"next_index": 5}
  fresh = streaming.StreamingTrainIterator(st, 8, seed=1, process_index=1, process_count=2,
                                           num_workers=workers)
  fresh.set_state(json.loads(json.dumps(state)))  # as a checkpoint stores it
  got += [next(fresh) for _ in range(7)]
  for w, g in zip(want, got):
    assert len(g["inputs"]) == 4  # this process's half of the global batch
    _assert_tree_equal(w, g)


def test_png_records_decode_to_the_image():
  rng = np.random.default_rng(0)
  for shape in [(9, 7), (6, 5, 3)]:
    img = rng.integers(0, 256, shape).astype(np.uint8)
    ex = {"inputs": img, "labels": {"y": np.int32(2)}, "mask": {"y": np.bool_(True)}}
    out = streaming.decode_png(streaming.encode_png(ex))
    want = img.astype(np.float32) / 255.0
    np.testing.assert_array_equal(out["inputs"], want[..., None] if img.ndim == 2 else want)
    assert out["labels"]["y"] == 2 and out["mask"]["y"]


def test_check_splits_streams_and_names_the_global_example(tmp_path):
  mem = _small(50)
  mem.inputs[37, 4] = np.nan
  st = _stream([_write(mem, tmp_path / "n.array_record")])
  good = _stream([_write(_small(10, 1), tmp_path / "g.array_record")])
  with pytest.raises(DataCheckError, match=r"split 'train': key 'inputs' of example 37 is nan "
                                           r"at position \(4,\)"):
    check_splits({"train": st, "validation": good}, chunk_size=16)
  check_splits({"train": good, "validation": good}, chunk_size=3)
  wide = ArrayDataset(np.zeros((5, 8), np.float32), {"a": np.zeros(5, np.int32),
                      "b": np.zeros((5, 2), np.float32)}, {"a": np.ones(5, bool),
                                                           "b": np.ones(5, bool)})
  with pytest.raises(DataCheckError, match=r"split 'validation': key 'inputs' has per-example "
                                           r"shape \(8,\), but train has \(7,\)"):
    check_splits({"train": good, "validation": _stream([_write(wide, tmp_path / "w.ar")])})


def test_corrupt_file_names_file_and_record(tmp_path):
  mem = _small(200)
  path = _write(mem, tmp_path / "c.array_record")
  raw = bytearray(open(path, "rb").read())
  assert len(raw) > 2 ** 16 + 64
  at = 2 ** 16  # a riegeli block header (one every 64 KiB) and the chunk it points into
  raw[at - 32:at + 64] = bytes(b ^ 0xFF for b in raw[at - 32:at + 64])
  open(path, "wb").write(bytes(raw))
  st = _stream([path])
  with pytest.raises(streaming.CorruptRecordError,
                     match=rf"corrupt array_record file {path}: cannot read record \d+"):
    for start in range(0, len(st), 32):
      st.take(np.arange(start, min(start + 32, len(st))))
  # Readable bytes that are not a record of the format: named by file and record.
  bad = str(tmp_path / "bad.array_record")
  from array_record.python import array_record_module
  w = array_record_module.ArrayRecordWriter(bad, "group_size:1")
  w.write(streaming.encode_npz(jax.tree.map(lambda x: x[0], mem.take(np.array([0])))))
  w.write(b"not an npz")
  w.close()
  with pytest.raises(streaming.CorruptRecordError,
                     match=rf"cannot decode record 1 of file {bad} \(global index 1\)"):
    _stream([bad]).take(np.array([0, 1]))
  with pytest.raises(FileNotFoundError, match="no array_record file matches"):
    build_dataset({"name": "array_record", "train": str(tmp_path / "nope*"),
                   "validation": bad})


def _mnist1d_files(tmp_path) -> dict:
  data = build_dataset({"name": "mnist1d", "hide_rate": 0.3})
  return {s: _write(getattr(data, s), tmp_path / f"{s}.array_record")
          for s in ("train", "validation", "test")}


def test_training_on_streamed_files_resumes_and_equals_in_memory_bitwise(tmp_path):
  """In memory for 12 steps == streamed (grain worker, prefetch) for 6, resumed for 6."""
  files = _mnist1d_files(tmp_path)
  mem = tiny_config()
  mem.optimizer.schedule = "constant"
  mem.num_train_steps = 12
  mem.checkpoint_every_steps = 6
  res_mem = train.train_and_evaluate(mem, str(tmp_path / "mem"))
  st = tiny_config()
  st.optimizer.schedule = "constant"
  st.checkpoint_every_steps = 6
  st.prefetch_batches = 2
  st.data = dict(name="array_record", num_workers=1, **files)
  st.num_train_steps = 6
  train.train_and_evaluate(st, str(tmp_path / "st"))
  st.num_train_steps = 12
  res_st = train.train_and_evaluate(st, str(tmp_path / "st"))
  _assert_tree_equal(train.final_params(str(tmp_path / "mem")),
                     train.final_params(str(tmp_path / "st")))
  assert res_mem == res_st  # metrics over every labelled example, exactly as in memory


_CAPPED = r"""
import json, resource, sys
import numpy as np
path, n, dim, cap_extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, sys.argv[5])
import jax
from conftest import tiny_config
from mtl_jax import train
# Fixed costs before the cap, like importing jax: compiling (XLA needs ~0.7 GB of address
# space, so the same run on a small file of the same shapes fills a compilation cache the
# capped run reads) and array_record's reader thread pool (it blocks, rather than fails,
# when it cannot start its threads under RLIMIT_AS).
jax.config.update("jax_compilation_cache_dir", path + "/jax_cache")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
def config(train_file, workdir):
  c = tiny_config()
  c.num_train_steps = 6
  c.checkpoint_every_steps = 6
  c.eval_batch_size = 256
  c.tasks = [dict(name="y", kind="binary")]
  c.data = dict(name="array_record", train=path + "/" + train_file,
                validation=path + "/val.array_record")
  return c
train.train_and_evaluate(config("val.array_record", path + "/warm"), path + "/warm")
def vm(key="VmSize"):
  for line in open("/proc/self/status"):
    if line.startswith(key):
      return int(line.split()[1]) * 1024
base = vm()
cap = base + cap_extra
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
res = train.train_and_evaluate(config("train.array_record", path + "/run"), path + "/run")
out = {"base": base, "cap": cap, "peak": vm("VmPeak"), "count": res["validation"]["y"]["count"]}
try:  # the whole train split, as the in-memory path would hold it: must not fit
  x = np.empty((n, dim), np.float32); x[:] = 1.0
  out["whole_fits"] = True
except MemoryError:
  out["whole_fits"] = False
print("RESULT" + json.dumps(out))
"""


def test_dataset_larger_than_memory_cap_trains_and_evaluates(tmp_path):
  n, dim = 24_576, 4_096          # 384 MiB of float32 inputs in the train file
  rng = np.random.default_rng(0)
  from array_record.python import array_record_module
  w = array_record_module.ArrayRecordWriter(str(tmp_path / "train.array_record"), "group_size:1")
  for i in range(n):
    x = rng.random(dim, dtype=np.float32)  # incompressible: the file holds every byte
    w.write(streaming.encode_npz({"inputs": x, "labels": {"y": np.float32(i % 2)},
                                  "mask": {"y": np.bool_(True)}}))
  w.close()
  streaming.write_array_record(str(tmp_path / "val.array_record"), (
      {"inputs": np.full(dim, i, np.float32), "labels": {"y": np.float32(i % 2)},
       "mask": {"y": np.bool_(i != 3)}} for i in range(300)))
  size = os.path.getsize(tmp_path / "train.array_record")
  assert size > 350 * 2 ** 20
  cap_extra = 96 * 2 ** 20  # the file is 3.5x+ what the process may add to its address space
  env = child_env(PYTHONPATH=ROOT, MALLOC_ARENA_MAX="2")
  out = subprocess.run([sys.executable, "-c", _CAPPED, str(tmp_path), str(n), str(dim),
                        str(cap_extra), os.path.join(ROOT, "tests")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-4000:]
  res = json.loads(out.stdout.split("RESULT")[-1])
  assert size > 3.5 * cap_extra
  assert res["count"] == 299  # every labelled validation example, one masked out
  assert not res["whole_fits"], res
