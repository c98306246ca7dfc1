"""Several datasets in one run: per-dataset splits, a seeded mixture sampler, stages.

``config.datasets = [dict(name=<registered dataset>, tasks=[...], weight=..., alias=...,
**builder kwargs), ...]`` lists the datasets; each keeps its own train /
validation / test splits. Every split is brought to the masked format of all
configured tasks (a task the dataset does not label gets a zero placeholder of
the right shape and dtype and mask False), so a batch from any dataset, or a
mix of them, goes through every sharing scheme and weighting method
unchanged. ``tasks`` may be a dict ``{config task: dataset task}`` to rename.

The sampler (``MixtureIterator``) picks, for global batch ``k``, either one
stream (``batches="per_dataset"``, MT-DNN) or a multinomial count per stream
(``batches="mixed"``) with ``default_rng([seed, k, 1])``, then takes the next
examples of each dataset's own endless per-epoch permutation
(``default_rng([seed, dataset, epoch])``). Its state, the batch index and the
examples consumed per dataset, goes into the checkpoint: resume is bitwise.

Stages (``config.stages``, ERNIE 2.0 style continual multi-task learning)
change the streams and their probabilities at stage boundaries: a stage
trains its new tasks with a share ``1 - replay`` of the batches (or
examples) and the tasks of earlier stages with ``replay``; a task outside
both has its mask cleared in the batch, so it gets no gradient.

ERNIE 2.0's continual multi-task schedule (a stage's ``allocation``) instead
divides the stage's iterations among every task present so far (earlier
tasks keep a share): exact counts per task, each iteration one task's batch,
in a seeded order (``default_rng([seed, stage, 2])``). ``ernie_stages`` writes
the paper's schedule (equal stages, equal shares, total iterations fixed).
"""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from mtl_jax import tasks as tasks_lib
from mtl_jax.data import grouping
from mtl_jax.data.base import ArrayDataset, build_dataset
from mtl_jax.data.pipeline import _local_slice

RESERVED = ("name", "tasks", "weight", "alias", "task_id")
SAMPLINGS = ("proportional", "temperature", "uniform", "weights")
BATCHES = ("per_dataset", "mixed")
MIXING_DEFAULTS = dict(sampling="proportional", temperature=2.0, batches="per_dataset",
                       task_embedding=False, main=None, ratio=None)
STAGE_KEYS = ("steps", "tasks", "datasets", "replay", "allocation")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Source:
  """One configured dataset: its alias, the configured tasks it labels, its splits.

  ``splits`` hold every configured task (unlabelled ones masked out), in
  ``config.tasks`` order.
  """
  alias: str
  name: str
  tasks: Tuple[str, ...]
  weight: Optional[float]
  splits: Dict[str, ArrayDataset]
  task_id: Optional[int] = None


def uses_mixture(config) -> bool:
  """True when the run goes through the mixture path (several datasets or stages)."""
  return bool(config.get("datasets")) or bool(config.get("stages"))


def check_unused(config) -> None:
  """``config.mixing`` without several datasets or stages would select nothing."""
  if config.get("mixing") and not uses_mixture(config):
    raise ValueError("config.mixing is set but there is one dataset (config.data) and no "
                     "config.stages: nothing to mix; list config.datasets or remove mixing")


def mixing_options(config) -> Dict[str, Any]:
  opts = dict(MIXING_DEFAULTS)
  given = dict(config.get("mixing") or {})
  unknown = sorted(set(given) - set(MIXING_DEFAULTS))
  if unknown:
    raise ValueError(f"config.mixing: unknown keys {unknown}; valid: {sorted(MIXING_DEFAULTS)}")
  opts.update(given)
  if opts["sampling"] not in SAMPLINGS:
    raise ValueError(f"config.mixing.sampling={opts['sampling']!r}; valid: {list(SAMPLINGS)}")
  if opts["batches"] not in BATCHES:
    raise ValueError(f"config.mixing.batches={opts['batches']!r}; valid: {list(BATCHES)}")
  if opts["sampling"] == "temperature" and not float(opts["temperature"]) > 0:
    raise ValueError(f"config.mixing.temperature must be > 0, got {opts['temperature']}")
  if (opts["main"] is None) != (opts["ratio"] is None):
    raise ValueError("config.mixing.main and config.mixing.ratio go together (MT-DNN's main "
                     f"task against auxiliary ones); got main={opts['main']!r}, "
                     f"ratio={opts['ratio']!r}")
  if opts["ratio"] is not None and not float(opts["ratio"]) > 0:
    raise ValueError(f"config.mixing.ratio must be > 0 (auxiliary batches per main batch), got "
                     f"{opts['ratio']}")
  return opts


def main_ratio_weights(sources: Sequence[Source], opts) -> np.ndarray:
  """MT-DNN's ``extra_task_ratio``: per epoch of the main dataset, ``ratio`` x as many batches
  of the auxiliary datasets (at most all of them), drawn among those by ``opts["sampling"]``.

  As probabilities: main 1 / (1 + r), auxiliaries r / (1 + r) split by their own weights,
  with r = min(ratio, auxiliary examples / main examples).
  """
  aliases = [s.alias for s in sources]
  if opts["main"] not in aliases:
    raise ValueError(f"config.mixing.main={opts['main']!r} is not a dataset alias; datasets: "
                     f"{aliases}")
  if len(sources) < 2:
    raise ValueError("config.mixing.main/ratio needs auxiliary datasets besides the main one")
  m = aliases.index(opts["main"])
  aux = [s for i, s in enumerate(sources) if i != m]
  sizes = np.array([len(s.splits["train"]) for s in sources], np.float64)
  r = min(float(opts["ratio"]), (sizes.sum() - sizes[m]) / sizes[m])
  p_aux = mixture_weights(aux, opts, "the auxiliary datasets") * r / (1.0 + r)
  return np.insert(p_aux, m, 1.0 / (1.0 + r))


def _entries(config, task_names: Sequence[str]) -> List[dict]:
  if config.get("datasets"):
    if config.get("data"):
      raise ValueError("config has both `data` and `datasets`: use `datasets` only (one entry "
                       "per dataset) or `data` only (one dataset labelling every task)")
    return [dict(d) for d in config.datasets]
  if not config.get("data"):
    raise ValueError("config needs `data` (one dataset) or `datasets` (a list of them)")
  return [dict(config.data, tasks=list(task_names))]


def _task_map(entry, alias, task_names) -> Dict[str, str]:
  """{configured task: the dataset's task name}."""
  if "tasks" not in entry or not entry["tasks"]:
    raise ValueError(f"dataset {alias!r}: give `tasks`, the configured tasks it labels")
  t = entry["tasks"]
  mapping = {str(k): str(v) for k, v in dict(t).items()} if hasattr(t, "items") else \
      {str(n): str(n) for n in t}
  unknown = [n for n in mapping if n not in task_names]
  if unknown:
    raise ValueError(f"dataset {alias!r} lists tasks {unknown} that are not in config.tasks "
                     f"{list(task_names)}")
  return mapping


def structure(ds: ArrayDataset) -> str:
  """Per-example structure of the inputs, e.g. ``{'input_ids': (128,) int32}``."""
  if isinstance(ds.inputs, dict):
    return "{" + ", ".join(f"{k!r}: {structure(ArrayDataset(v, {}, {}))}"
                           for k, v in ds.inputs.items()) + "}"
  leaves = jax.tree_util.tree_leaves_with_path(ds.inputs)
  if len(leaves) == 1 and not leaves[0][0]:
    x = leaves[0][1]
    return f"{tuple(np.shape(x)[1:])} {np.asarray(x).dtype}"
  return ", ".join(f"{jax.tree_util.keystr(p)}: {tuple(np.shape(x)[1:])} {np.asarray(x).dtype}"
                   for p, x in leaves)


def _check_structures(sources: Sequence[Source]) -> None:
  first = sources[0]
  want = structure(first.splits["train"])
  for s in sources[1:]:
    got = structure(s.splits["train"])
    if got != want:
      raise ValueError(f"datasets {first.alias!r} and {s.alias!r} in one mixture have inputs of "
                       f"different structure: {first.alias!r} has {want}, {s.alias!r} has {got} "
                       f"(per example); a batch can only hold one structure")


def _fill(ds: ArrayDataset, specs, like: Dict[str, Tuple[tuple, Any, tuple]]) -> ArrayDataset:
  """All configured tasks in ``specs`` order; the ones ``ds`` lacks get placeholders."""
  n = len(ds)
  labels, mask = {}, {}
  for s in specs:
    if s.name in ds.labels:
      labels[s.name], mask[s.name] = ds.labels[s.name], ds.mask[s.name]
    else:
      shape, dtype, mshape = like[s.name]
      labels[s.name] = np.zeros((n,) + shape, dtype)
      mask[s.name] = np.zeros((n,) + mshape, bool)
  return ArrayDataset(ds.inputs, labels, mask)


def _with_dataset_id(ds: ArrayDataset, index: int, count: int, alias: str) -> ArrayDataset:
  """Appends a one-hot dataset id to the features (``mixing.task_embedding``)."""
  x = ds.inputs
  if not isinstance(x, np.ndarray) or x.ndim != 2:
    raise ValueError(f"mixing.task_embedding appends a one-hot dataset id to [N, features] array "
                     f"inputs, but dataset {alias!r} has inputs {structure(ds)}; for token "
                     f"inputs use config.model.task_embedding (a learned vector per task id "
                     f"in the trunk)")
  onehot = np.zeros((len(x), count), x.dtype)
  onehot[:, index] = 1
  return ArrayDataset(np.concatenate([x, onehot], axis=1), ds.labels, ds.mask)


def _with_task_id(ds: ArrayDataset, task_id: int, alias: str) -> ArrayDataset:
  """Adds ``inputs["task_id"]`` [N] (``model.task_embedding``: the trunk's learned task vector)."""
  if not isinstance(ds.inputs, dict):
    raise ValueError(f"model.task_embedding feeds inputs['task_id'] to a trunk that embeds "
                     f"tokens, but dataset {alias!r} has inputs {structure(ds)}; for [N, features] "
                     f"arrays use config.mixing.task_embedding (a one-hot id in the features)")
  if "task_id" in ds.inputs:
    raise ValueError(f"dataset {alias!r} already has an input called 'task_id'")
  inputs = dict(ds.inputs, task_id=np.full(len(ds), task_id, np.int32))
  return ArrayDataset(inputs, ds.labels, ds.mask)


def _task_ids(config, entries) -> Optional[List[int]]:
  """Each dataset's task id under ``model.task_embedding`` (its ``task_id``, default its index)."""
  num = int((config.get("model") or {}).get("task_embedding") or 0)
  given = [e.get("task_id") for e in entries]
  if not num:
    named = [str(e.get("alias") or e.get("name")) for e, t in zip(entries, given) if t is not None]
    if named:
      raise ValueError(f"datasets {named} set `task_id` but config.model.task_embedding is "
                       f"unset: nothing would use it")
    return None
  if config.get("mixing") and dict(config.mixing).get("task_embedding"):
    raise ValueError("config.model.task_embedding (a learned vector per task id in the trunk) "
                     "and config.mixing.task_embedding (a one-hot id appended to array "
                     "features) are two ways of one thing: use one")
  ids = [i if t is None else t for i, t in enumerate(given)]
  for e, t in zip(entries, ids):
    if isinstance(t, bool) or int(t) != t or not 0 <= t < num:
      raise ValueError(f"dataset {str(e.get('alias') or e.get('name'))!r} has task_id {t!r}, "
                       f"outside [0, model.task_embedding={num})")
  return [int(t) for t in ids]


def load_sources(config, specs) -> List[Source]:
  """Builds every configured dataset, checks its labels against its tasks' kinds and
  returns them in the masked format of all configured tasks."""
  names = [s.name for s in specs]
  by_name = {s.name: s for s in specs}
  entries = _entries(config, names)
  opts = mixing_options(config) if uses_mixture(config) else MIXING_DEFAULTS
  task_ids = _task_ids(config, entries)
  raw, seen = [], set()
  for i, entry in enumerate(entries):
    if "name" not in entry:
      raise ValueError(f"config.datasets[{i}] has no `name` (a registered dataset)")
    alias = str(entry.get("alias") or entry["name"])
    if alias in seen:
      raise ValueError(f"two datasets are called {alias!r}: give each an `alias`")
    seen.add(alias)
    mapping = _task_map(entry, alias, names)
    weight = entry.get("weight")
    if weight is not None and opts["sampling"] != "weights":
      raise ValueError(f"dataset {alias!r} has weight={weight} but config.mixing.sampling="
                       f"{opts['sampling']!r} ignores weights; set sampling='weights'")
    data = build_dataset({k: v for k, v in entry.items() if k not in RESERVED[1:]})
    splits = {}
    for split in SPLITS:
      ds = getattr(data, split)
      if ds is None:
        continue
      missing = [d for d in mapping.values() if d not in ds.labels]
      if missing:
        raise ValueError(f"dataset {alias!r} ({entry['name']}) has no tasks {missing} in its "
                         f"{split} split; it has {sorted(ds.labels)}")
      sub = ArrayDataset(ds.inputs, {c: ds.labels[d] for c, d in mapping.items()},
                         {c: ds.mask[d] for c, d in mapping.items()})
      try:
        tasks_lib.validate_batch([by_name[c] for c in mapping], sub.labels, sub.mask,
                                 inputs=sub.inputs)
      except tasks_lib.LabelError as e:
        raise tasks_lib.LabelError(f"dataset {alias!r} ({entry['name']}), {split} split: "
                                   f"{e}") from None
      splits[split] = sub
    if "train" not in splits or len(splits["train"]) == 0:
      raise ValueError(f"dataset {alias!r} has no training examples")
    raw.append(Source(alias, entry["name"], tuple(c for c in names if c in mapping),
                      None if weight is None else float(weight), splits,
                      None if task_ids is None else task_ids[i]))
  unlabelled = [n for n in names if not any(n in s.tasks for s in raw)]
  if unlabelled:
    raise ValueError(f"config tasks {unlabelled} are labelled by no dataset; datasets label: "
                     + ", ".join(f"{s.alias!r}: {list(s.tasks)}" for s in raw))
  like = {}
  for s in raw:
    tr = s.splits["train"]
    for t in s.tasks:
      like.setdefault(t, (tr.labels[t].shape[1:], tr.labels[t].dtype, tr.mask[t].shape[1:]))
  for s in raw:
    s.splits = {k: _fill(v, specs, like) for k, v in s.splits.items()}
    if opts["task_embedding"]:
      idx = raw.index(s)
      s.splits = {k: _with_dataset_id(v, idx, len(raw), s.alias) for k, v in s.splits.items()}
    if s.task_id is not None:
      s.splits = {k: _with_task_id(v, s.task_id, s.alias) for k, v in s.splits.items()}
  _check_structures(raw)
  return raw


# ---------------------------------------------------------------------------- probabilities


def mixture_weights(sources: Sequence[Source], opts, what: str = "the mixture") -> np.ndarray:
  """Sampling probabilities of ``sources`` (sum 1) under ``opts["sampling"]``."""
  sizes = np.array([len(s.splits["train"]) for s in sources], np.float64)
  kind = opts["sampling"]
  if kind == "proportional":
    w = sizes
  elif kind == "temperature":
    w = sizes ** (1.0 / float(opts["temperature"]))
  elif kind == "uniform":
    w = np.ones_like(sizes)
  else:
    missing = [s.alias for s in sources if s.weight is None]
    if missing:
      raise ValueError(f"config.mixing.sampling='weights' but datasets {missing} have no `weight`")
    w = np.array([s.weight for s in sources], np.float64)
    bad = [(s.alias, s.weight) for s in sources if not np.isfinite(s.weight) or s.weight < 0]
    if bad:
      raise ValueError(f"mixture weights must be finite and >= 0; got {bad}")
  if not w.sum() > 0:
    raise ValueError(f"every weight of {what} is zero ({[s.alias for s in sources]}): nothing "
                     f"would be sampled")
  return w / w.sum()


@dataclasses.dataclass
class Phase:
  """Steps [start, end): streams (dataset index, bool[T] tasks trained) and their probabilities."""
  start: int
  end: int
  streams: List[Tuple[int, np.ndarray]]
  probs: np.ndarray
  label: str = ""
  # ERNIE 2.0 allocation: exact iterations per stream (sum = end - start) and per task.
  counts: Optional[np.ndarray] = None
  allocation: Optional[Dict[str, int]] = None


def _split_counts(total: int, weights: np.ndarray) -> np.ndarray:
  """Integers summing to ``total`` proportional to ``weights`` (largest remainder, ties to the
  first)."""
  exact = total * np.asarray(weights, np.float64) / np.sum(weights)
  out = np.floor(exact).astype(np.int64)
  order = np.argsort(-(exact - out), kind="stable")
  out[order[:total - out.sum()]] += 1
  return out


def _allocation(j, stage, steps, present, opts) -> Dict[str, int]:
  """{task: iterations} of stage ``j`` over the tasks ``present`` (earlier + new, in order)."""
  alloc = stage["allocation"]
  if opts["batches"] != "per_dataset":
    raise ValueError(f"config.stages[{j}].allocation gives each task whole iterations (one "
                     f"task's batch each), which needs config.mixing.batches='per_dataset'")
  if stage.get("replay"):
    raise ValueError(f"config.stages[{j}] has both `replay` and `allocation`: allocation "
                     f"already gives earlier tasks their share; use one")
  if alloc == "equal":
    return dict(zip(present, (int(c) for c in _split_counts(steps, np.ones(len(present))))))
  if not hasattr(alloc, "items"):
    raise ValueError(f"config.stages[{j}].allocation must be 'equal' or a dict {{task: "
                     f"iterations}}, got {alloc!r}")
  alloc = {str(t): c for t, c in dict(alloc).items()}
  unknown = [t for t in alloc if t not in present]
  if unknown:
    raise ValueError(f"config.stages[{j}].allocation names {unknown}, which are not trained by "
                     f"this or an earlier stage; tasks present: {present}")
  bad = [(t, c) for t, c in alloc.items() if isinstance(c, bool) or int(c) != c or c < 0]
  if bad:
    raise ValueError(f"config.stages[{j}].allocation: iterations must be ints >= 0, got {bad}")
  if sum(int(c) for c in alloc.values()) != steps:
    raise ValueError(f"config.stages[{j}].allocation sums to {sum(alloc.values())} iterations "
                     f"but the stage has steps={steps}")
  return {t: int(alloc.get(t, 0)) for t in present}


def ernie_stages(task_groups: Sequence[Sequence[str]], total_steps: int) -> List[dict]:
  """ERNIE 2.0's continual multi-task schedule as ``config.stages``: stage j adds
  ``task_groups[j]``; the ``total_steps`` are split into equal stages, each divided equally
  among every task present so far."""
  lengths = _split_counts(int(total_steps), np.ones(len(task_groups)))
  return [dict(steps=int(n), tasks=list(g), allocation="equal")
          for n, g in zip(lengths, task_groups)]


def build_phases(config, sources: Sequence[Source], specs) -> List[Phase]:
  """One phase for a plain mixture, one per stage with ``config.stages``."""
  opts = mixing_options(config)
  names = [s.name for s in specs]
  num_steps = int(config.num_train_steps)
  if not config.get("stages"):
    probs = (main_ratio_weights(sources, opts) if opts["main"] is not None
             else mixture_weights(sources, opts))
    streams = [(i, np.array([t in s.tasks for t in names])) for i, s in enumerate(sources)]
    return [Phase(0, num_steps, streams, probs, "all")]
  if opts["main"] is not None:
    raise ValueError("config.mixing.main/ratio sets one mixture for the whole run; it does not "
                     "combine with config.stages")
  phases, earlier, start = [], [], 0
  aliases = [s.alias for s in sources]
  for j, stage in enumerate(config.stages):
    stage = dict(stage)
    unknown = sorted(set(stage) - set(STAGE_KEYS))
    if unknown:
      raise ValueError(f"config.stages[{j}]: unknown keys {unknown}; valid: {list(STAGE_KEYS)}")
    steps = int(stage.get("steps", 0))
    if steps < 1:
      raise ValueError(f"config.stages[{j}].steps must be >= 1, got {stage.get('steps')}")
    for key in ("tasks", "datasets"):
      if key in stage and not stage[key]:
        raise ValueError(f"config.stages[{j}].{key} is empty: the stage names no task")
    if bool(stage.get("tasks")) == bool(stage.get("datasets")):
      raise ValueError(f"config.stages[{j}] needs exactly one of `tasks` or `datasets`")
    if stage.get("datasets"):
      unknown = [d for d in stage["datasets"] if d not in aliases]
      if unknown:
        raise ValueError(f"config.stages[{j}].datasets names {unknown}; datasets: {aliases}")
      new = [t for t in names if any(t in sources[aliases.index(d)].tasks
                                     for d in stage["datasets"])]
    else:
      unknown = [t for t in stage["tasks"] if t not in names]
      if unknown:
        raise ValueError(f"config.stages[{j}].tasks names {unknown}, which no dataset labels; "
                         f"config.tasks: {names}")
      new = [t for t in names if t in stage["tasks"]]
    replay = float(stage.get("replay", 0.0))
    old = [t for t in earlier if t not in new]
    if not 0.0 <= replay < 1.0:
      raise ValueError(f"config.stages[{j}].replay must be in [0, 1), got {replay}")
    if replay > 0 and not old:
      raise ValueError(f"config.stages[{j}].replay={replay} but no earlier stage trained other "
                       f"tasks: there is nothing to replay")
    if stage.get("allocation") is not None:
      present = [t for t in names if t in earlier or t in new]
      alloc = _allocation(j, stage, steps, present, opts)
      idle = [t for t in new if not alloc[t]]
      if idle:
        raise ValueError(f"config.stages[{j}] adds tasks {idle} but allocates them no "
                         f"iterations: {alloc}")
      streams, counts = [], []
      for t, c in alloc.items():
        idx = [i for i, s in enumerate(sources) if t in s.tasks]
        per = _split_counts(c, mixture_weights([sources[i] for i in idx], opts, f"stage {j}"))
        for i, ci in zip(idx, per):
          if ci:
            streams.append((i, np.array([u == t for u in names])))
            counts.append(int(ci))
      counts = np.asarray(counts, np.int64)
      phases.append(Phase(start, start + steps, streams, counts / counts.sum(),
                          f"stage {j}: +{new}, iterations {alloc}", counts, alloc))
      earlier += [t for t in new if t not in earlier]
      start += steps
      continue
    streams, probs = [], []
    for group, share in ((new, 1.0 - replay), (old, replay)):
      if not group or share == 0:
        continue
      idx = [i for i, s in enumerate(sources) if any(t in s.tasks for t in group)]
      p = mixture_weights([sources[i] for i in idx], opts, f"stage {j}")
      for i, pi in zip(idx, p):
        streams.append((i, np.array([t in group and t in sources[i].tasks for t in names])))
        probs.append(share * pi)
    phases.append(Phase(start, start + steps, streams, np.asarray(probs) / np.sum(probs),
                        f"stage {j}: {new}" + (f" + replay {replay} of {old}" if replay else "")))
    earlier += [t for t in new if t not in earlier]
    start += steps
  if start != num_steps:
    raise ValueError(f"config.stages last {start} steps in all but num_train_steps={num_steps}; "
                     f"make them equal")
  never = [t for t in names if t not in earlier]
  if never:
    raise ValueError(f"config tasks {never} are in no stage of config.stages: they would never "
                     f"be trained")
  return phases


# ---------------------------------------------------------------------------- the sampler


def _normal_allocation(alloc):
  """A stage allocation list as plain {str: int} dicts (as it reads back from JSON)."""
  if alloc is None:
    return None
  return [None if a is None else {str(k): int(v) for k, v in dict(a).items()} for a in alloc]


class MixtureIterator:
  """Endless, seeded, checkpointable batches from several datasets (see module docstring)."""

  def __init__(self, sources: Sequence[Source], phases: Sequence[Phase], global_batch_size: int,
               seed: int, mixed: bool, process_index: int = 0, process_count: int = 1,
               groups: Optional[Sequence[Optional[np.ndarray]]] = None):
    self._data = [s.splits["train"] for s in sources]
    self._groups = list(groups) if groups is not None else [None] * len(sources)
    self._tasks = list(self._data[0].labels)
    self._labelled = [np.array([t in s.tasks for t in self._tasks]) for s in sources]
    self._aliases = [s.alias for s in sources]
    self._sizes = np.array([len(d) for d in self._data])
    self._phases = list(phases)
    self._batch_size = global_batch_size
    self._slice = _local_slice(global_batch_size, process_index, process_count)
    self._seed = seed
    self._mixed = mixed
    self._next = 0
    self._consumed = np.zeros(len(self._data), np.int64)
    self._perm_cache: Dict[Tuple[int, int], np.ndarray] = {}
    self._schedules: Dict[int, np.ndarray] = {}

  def _phase_index(self, k: int) -> int:
    for j, p in enumerate(self._phases):
      if k < p.end:
        return j
    return len(self._phases) - 1  # past the configured steps (e.g. a benchmark): keep the last

  def _phase(self, k: int) -> Phase:
    return self._phases[self._phase_index(k)]

  def _schedule(self, j: int) -> np.ndarray:
    """Stream of each iteration of allocated phase ``j``: its exact counts in a seeded order."""
    if j not in self._schedules:
      p = self._phases[j]
      self._schedules[j] = np.random.default_rng([self._seed, j, 2]).permutation(
          np.repeat(np.arange(len(p.counts)), p.counts))
    return self._schedules[j]

  def _perm(self, d: int, e: int) -> np.ndarray:
    key = (d, e)
    if key not in self._perm_cache:
      if len(self._perm_cache) > 4 * len(self._data):
        self._perm_cache.clear()
      self._perm_cache[key] = grouping.permutation(np.random.default_rng([self._seed, d, e]),
                                                   self._sizes[d], self._groups[d])
    return self._perm_cache[key]

  def _positions(self, d: int, count: int) -> np.ndarray:
    """The next ``count`` example indices of dataset ``d``'s endless shuffled stream."""
    pos = np.arange(self._consumed[d], self._consumed[d] + count)
    self._consumed[d] += count
    epochs, offsets = np.divmod(pos, self._sizes[d])
    return np.concatenate([self._perm(d, e)[offsets[epochs == e]] for e in np.unique(epochs)])

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    k = self._next
    phase = self._phase(k)
    rng = np.random.default_rng([self._seed, k, 1])
    if phase.counts is not None:
      j = self._phase_index(k)
      sched = self._schedule(j)
      counts = np.zeros(len(phase.streams), np.int64)
      counts[sched[min(k - phase.start, len(sched) - 1)]] = self._batch_size
    elif self._mixed:
      counts = rng.multinomial(self._batch_size, phase.probs)
    else:
      counts = np.zeros(len(phase.streams), np.int64)
      counts[rng.choice(len(phase.streams), p=phase.probs)] = self._batch_size
    # The global batch as (stream, example index) rows; every process computes the
    # same and keeps its slice.
    stream_of = np.repeat(np.arange(len(counts)), counts)
    index = np.empty(self._batch_size, np.int64)
    for s in np.flatnonzero(counts):
      index[stream_of == s] = self._positions(phase.streams[s][0], int(counts[s]))
    stream_of, index = stream_of[self._slice], index[self._slice]
    parts = []
    for s in np.flatnonzero(np.bincount(stream_of, minlength=len(counts))):
      d, active = phase.streams[s]
      b = self._data[d].take(index[stream_of == s])
      for t in np.flatnonzero(self._labelled[d] & ~active):  # labelled but not trained now
        name = self._tasks[t]
        b["mask"][name] = np.zeros_like(b["mask"][name])
      parts.append(b)
    self._next += 1
    return parts[0] if len(parts) == 1 else jax.tree.map(lambda *xs: np.concatenate(xs), *parts)

  def _allocations(self) -> Optional[List[Optional[Dict[str, int]]]]:
    if all(p.allocation is None for p in self._phases):
      return None
    return [None if p.allocation is None else dict(p.allocation) for p in self._phases]

  def get_state(self) -> dict:
    state = {"next_index": self._next,
             "consumed": {a: int(c) for a, c in zip(self._aliases, self._consumed)}}
    if self._allocations() is not None:  # the stage schedule the checkpoint was trained on
      state["allocation"] = self._allocations()
    return state

  def set_state(self, state: dict) -> None:
    consumed = state.get("consumed")
    if consumed is None or sorted(consumed) != sorted(self._aliases):
      raise ValueError(f"checkpoint data state is for datasets "
                       f"{None if consumed is None else sorted(consumed)}, the config has "
                       f"{sorted(self._aliases)}")
    saved = state.get("allocation")
    if saved is not None or self._allocations() is not None:
      norm = _normal_allocation
      if norm(saved) != norm(self._allocations()):
        raise ValueError(f"checkpoint was trained on the stage allocation {norm(saved)}, the "
                         f"config has {norm(self._allocations())}; resume with the same stages")
    self._next = int(state["next_index"])
    self._consumed = np.array([int(consumed[a]) for a in self._aliases], np.int64)

  def stats(self) -> Dict[str, float]:
    """{"data/<alias>/examples": seen, "data/<alias>/epochs": seen / size} (global batch)."""
    out = {}
    for a, c, n in zip(self._aliases, self._consumed, self._sizes):
      out[f"data/{a}/examples"] = float(c)
      out[f"data/{a}/epochs"] = float(c) / float(n)
    j = self._phase_index(max(self._next - 1, 0))
    phase = self._phases[j]
    if phase.allocation is not None:  # the current stage's allocation and its progress
      out["stage/index"] = float(j)
      done = np.bincount(self._schedule(j)[:max(self._next - phase.start, 0)],
                         minlength=len(phase.counts))
      for t, c in phase.allocation.items():
        out[f"stage/{t}/iterations"] = float(c)
        out[f"stage/{t}/done"] = float(sum(d for (_, act), d in zip(phase.streams, done)
                                           if act[self._tasks.index(t)]))
    return out
