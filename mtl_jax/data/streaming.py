"""Streaming splits: random-access record files decoded per example, never read whole.

A split is a *data source* (``RecordSource``: ``len`` + ``read(indices)`` ->
raw records) plus a ``decode(record) -> example`` transform, wrapped in a
``StreamingDataset`` that has the one method the input pipeline, the checks
and the evaluation use of ``ArrayDataset``: ``take(idx) -> batch dict``. So
``TrainIterator`` (seeded per-epoch permutation, global batch, each process
reads its own slice, state ``{"next_index": k}``) and ``eval_batches`` work
unchanged, and resume stays bitwise: a batch is a pure function of its
index. ``StreamingTrainIterator`` decodes batches ahead in ``grain`` worker
processes (``num_workers > 0``).

An example is ``{"inputs": array | pytree, "labels": {task: array},
"mask": {task: bool array}}`` (one row of the batch format). ``encode_npz`` /
``decode_npz`` are a ready record format; ``decode_png`` decodes PNG-encoded
images (``encode_png``). Register a decoder of your own in ``DECODERS``.

The registered dataset ``array_record`` reads ``train=``, ``validation=``,
``test=`` globs of array_record files; ``in_memory=True`` decodes them once
into an ``ArrayDataset`` (fastest when the data fits).
"""

import bisect
import copy
import glob
import io
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import jax
import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits
from mtl_jax.registry import Registry

DECODERS = Registry("decoder")
# Random access, no read-ahead buffers or reader threads: memory stays what a batch needs
# (the default reader also opens a thread pool, which blocks under a tight RLIMIT_AS).
_READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"


class CorruptRecordError(ValueError):
  """A record that cannot be read or decoded; the message names the file and the record."""


class RecordSource:
  """Random access to raw records: ``len(source)`` and ``read(indices) -> [bytes]``."""

  def __len__(self) -> int:
    raise NotImplementedError

  def read(self, indices: Sequence[int]) -> List[Any]:
    raise NotImplementedError

  def where(self, index: int) -> str:
    """Names record ``index`` for error messages (file and record within it)."""
    return f"record {index}"


class ArrayRecordSource(RecordSource):
  """Records of one or more array_record files, indexed in file order.

  Readers open lazily (per process: a grain worker reopens them after
  unpickling), so building the source reads only each file's record count.
  """

  def __init__(self, paths: Sequence[str]):
    from array_record.python import array_record_module  # the `streaming` extra
    self._module = array_record_module
    self.paths = list(paths)
    if not self.paths:
      raise ValueError("ArrayRecordSource needs at least one file")
    counts = []
    for p in self.paths:
      try:
        r = array_record_module.ArrayRecordReader(p, _READER_OPTIONS)
        counts.append(r.num_records())
        r.close()
      except Exception as e:  # noqa: BLE001 -- re-raised with the file name
        raise CorruptRecordError(f"cannot open array_record file {p}: {e}") from e
    self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    self._readers = {}

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k not in ("_readers", "_module")}

  def __setstate__(self, state):
    from array_record.python import array_record_module
    self.__dict__.update(state, _readers={}, _module=array_record_module)

  def __len__(self) -> int:
    return int(self._starts[-1])

  def _locate(self, index: int):
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range [0, {len(self)})")
    f = bisect.bisect_right(self._starts, index) - 1
    return f, int(index - self._starts[f])

  def where(self, index: int) -> str:
    f, i = self._locate(int(index))
    return f"record {i} of file {self.paths[f]} (global index {index})"

  def _reader(self, f: int):
    if f not in self._readers:
      self._readers[f] = self._module.ArrayRecordReader(
          self.paths[f], _READER_OPTIONS)
    return self._readers[f]

  def read(self, indices: Sequence[int]) -> List[bytes]:
    indices = np.asarray(indices, np.int64)
    out: List[Any] = [None] * len(indices)
    files = np.searchsorted(self._starts, indices, side="right") - 1
    if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"record indices must be in [0, {len(self)}), got "
                       f"[{indices.min()}, {indices.max()}]")
    for f in np.unique(files):
      pos = np.flatnonzero(files == f)
      local = (indices[pos] - self._starts[f]).tolist()
      try:
        records = self._reader(f).read(local)
      except Exception:  # noqa: BLE001 -- find the culprit record, one by one
        records = []
        for i in local:
          try:
            records.append(self._reader(f).read([i])[0])
          except Exception as e:  # noqa: BLE001
            raise CorruptRecordError(f"corrupt array_record file {self.paths[f]}: cannot read "
                                     f"record {i}: {e}") from e
      for p, r in zip(pos, records):
        out[p] = r
    return out


class StreamingDataset:
  """A split read on demand: ``take(idx)`` reads and decodes only those records."""

  def __init__(self, source: RecordSource, decode: Callable[[Any], dict],
               tasks: Optional[Sequence[str]] = None, num_workers: int = 0):
    self.source = source
    self.decode = decode
    self.num_workers = int(num_workers)
    self._tasks = None if tasks is None else tuple(tasks)

  def __len__(self) -> int:
    return len(self.source)

  @property
  def task_names(self) -> Sequence[str]:
    if self._tasks is None:
      self._tasks = tuple(self.take(np.arange(1))["labels"])
    return self._tasks

  def take(self, idx) -> dict:
    """The examples at ``idx`` as a batch dict (records decoded, then stacked)."""
    idx = np.asarray(idx, np.int64)
    examples = []
    for i, record in zip(idx, self.source.read(idx)):
      try:
        ex = self.decode(record)
      except Exception as e:  # noqa: BLE001 -- re-raised naming the record
        raise CorruptRecordError(f"cannot decode {self.source.where(int(i))}: "
                                 f"{type(e).__name__}: {e}") from e
      if self._tasks is not None:
        ex = {"inputs": ex["inputs"], "labels": {t: ex["labels"][t] for t in self._tasks},
              "mask": {t: ex["mask"][t] for t in self._tasks}}
      examples.append(ex)
    if not examples:
      raise ValueError("take() of no examples")
    return jax.tree.map(lambda *xs: np.stack(xs), *examples)

  def select_tasks(self, names: Sequence[str]) -> "StreamingDataset":
    have = self.task_names
    missing = [n for n in names if n not in have]
    if missing:
      raise KeyError(f"tasks {missing} are not in the data, which has {list(have)}")
    return StreamingDataset(self.source, self.decode, names, self.num_workers)

  def subset(self, idx) -> ArrayDataset:
    b = self.take(idx)
    return ArrayDataset(b["inputs"], b["labels"], b["mask"])


def is_streaming(dataset) -> bool:
  return isinstance(dataset, StreamingDataset)


def chunks(dataset, size: int = 256) -> Iterator[tuple]:
  """(offset, batch dict) over the whole split; an ArrayDataset is one chunk (no copy)."""
  if isinstance(dataset, ArrayDataset):
    yield 0, {"inputs": dataset.inputs, "labels": dataset.labels, "mask": dataset.mask}
    return
  for start in range(0, len(dataset), size):
    yield start, dataset.take(np.arange(start, min(start + size, len(dataset))))


def materialize(dataset, chunk_size: int = 256) -> ArrayDataset:
  """The whole split in memory (``in_memory=True``)."""
  parts = [b for _, b in chunks(dataset, chunk_size)]
  b = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
  return ArrayDataset(b["inputs"], b["labels"], b["mask"])


# ---------------------------------------------------------------- record formats

def encode_npz(example: dict) -> bytes:
  """One example as an .npz record: ``inputs`` (one array), ``labels/<t>``, ``mask/<t>``."""
  arrays = {"inputs": np.asarray(example["inputs"])}
  arrays.update({f"labels/{t}": np.asarray(v) for t, v in example["labels"].items()})
  arrays.update({f"mask/{t}": np.asarray(v) for t, v in example["mask"].items()})
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def _split_npz(arrays) -> dict:
  ex = {"inputs": None, "labels": {}, "mask": {}}
  for k in arrays.files:
    if k == "inputs":
      ex["inputs"] = arrays[k]
    else:
      kind, task = k.split("/", 1)
      ex[kind][task] = arrays[k]
  if ex["inputs"] is None:
    raise ValueError(f"record has no 'inputs' (keys {arrays.files})")
  return ex


@DECODERS.register("npz")
def decode_npz(record: bytes) -> dict:
  return _split_npz(np.load(io.BytesIO(record)))


def encode_png(example: dict) -> bytes:
  """An example whose ``inputs`` is a uint8 image [H, W] or [H, W, C], stored as PNG."""
  from PIL import Image
  img = io.BytesIO()
  Image.fromarray(np.asarray(example["inputs"], np.uint8)).save(img, format="PNG")
  return encode_npz({**example, "inputs": np.frombuffer(img.getvalue(), np.uint8)})


@DECODERS.register("png")
def decode_png(record: bytes) -> dict:
  """PNG image to float32 in [0, 1], [H, W, C] (a grey image gets C=1)."""
  from PIL import Image
  ex = _split_npz(np.load(io.BytesIO(record)))
  img = np.asarray(Image.open(io.BytesIO(ex["inputs"].tobytes())), np.float32) / 255.0
  ex["inputs"] = img[..., None] if img.ndim == 2 else img
  return ex


def write_array_record(path: str, examples, encode: Callable[[dict], bytes] = encode_npz) -> int:
  """Writes ``examples`` (an iterable of example dicts) to ``path``; returns the count."""
  from array_record.python import array_record_module
  w = array_record_module.ArrayRecordWriter(path, "group_size:1")
  n = 0
  for ex in examples:
    w.write(encode(ex))
    n += 1
  w.close()
  return n


def _paths(pattern) -> List[str]:
  pats = [pattern] if isinstance(pattern, str) else list(pattern)
  out = []
  for p in pats:
    hits = sorted(glob.glob(p))
    if not hits:
      raise FileNotFoundError(f"no array_record file matches {p!r}")
    out.extend(hits)
  return out


@DATASETS.register("array_record")
def array_record_dataset(train, validation, test=None, decoder: str = "npz",
                         num_workers: int = 0, in_memory: bool = False) -> DataSplits:
  """Splits from array_record files (globs); ``decoder`` names an entry of ``DECODERS``.

  ``num_workers``: grain processes decoding train batches ahead (0: decode in
  the feed's prefetch thread). ``in_memory=True`` decodes every split once
  into an ``ArrayDataset``.
  """
  decode = DECODERS.get(decoder)
  def split(pattern):
    if pattern is None:
      return None
    ds = StreamingDataset(ArrayRecordSource(_paths(pattern)), decode, num_workers=num_workers)
    return materialize(ds) if in_memory else ds
  return DataSplits(split(train), split(validation), split(test))


# ---------------------------------------------------------------- train iterator

class _BatchReader:
  """Picklable: global batch ``k`` -> this process's decoded slice (what a worker runs)."""

  def __init__(self, order):
    self.order = order  # a TrainIterator: global_indices(k) and the process's slice

  def __call__(self, k: int) -> dict:
    order = self.order
    return order._dataset.take(order.global_indices(int(k))[order._slice])  # noqa: SLF001


class StreamingTrainIterator:
  """``TrainIterator``'s batches and state, decoded ahead by ``num_workers`` grain processes.

  The batch sequence is ``TrainIterator``'s exactly (same permutation and
  slice), so switching worker counts or resuming changes nothing; the state
  is the batches handed out, ``{"next_index": k}``; ``set_state`` restarts
  the grain pipeline at batch ``k``.
  """

  def __init__(self, dataset: StreamingDataset, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1, num_workers: int = 0,
               buffer: int = 2):
    from mtl_jax.data.pipeline import TrainIterator
    self._index = TrainIterator(dataset, global_batch_size, seed, process_index, process_count)
    self._workers = int(num_workers)
    self._buffer = int(buffer)
    self._it = None

  def _start(self):
    import grain
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags (defaults outside main)
      flags.FLAGS.mark_as_parsed()
    k = self._index.get_state()["next_index"]
    order = copy.copy(self._index)  # what the workers unpickle; the state stays here
    ds = grain.MapDataset.range(k, 2 ** 62).map(_BatchReader(order)).to_iter_dataset()
    if self._workers:
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._workers,
                                                       per_worker_buffer_size=self._buffer))
    self._it = iter(ds)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._workers == 0:
      return next(self._index)
    if self._it is None:
      self._start()
    batch = next(self._it)
    self._index.set_state({"next_index": self._index.get_state()["next_index"] + 1})
    return batch

  def global_indices(self, k: int) -> np.ndarray:
    return self._index.global_indices(k)

  def get_state(self) -> dict:
    return self._index.get_state()

  def set_state(self, state: dict) -> None:
    self._index.set_state(state)
    self._it = None
