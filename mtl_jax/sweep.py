"""Studies as grids: cells x seeds, run once each, results appended as JSON lines.

A study calls ``run_grid(study_dir, make_config, cells, seeds)``: every
(cell, seed) runs ``train_and_evaluate`` in ``study_dir/runs/<cell>/seed_<s>``
and appends one line to ``study_dir/results.jsonl``; pairs already in the
file are skipped, so an interrupted study resumes by rerunning it. Cells may
depend on earlier ones (e.g. downstream runs on an upstream checkpoint)
because they run in the given order. ``report`` turns the file into
Markdown tables of mean ± standard error over seeds.

Provenance. Every row carries ``provenance``: the hash of the config that
produced it (``config``), of that config with the seed taken out
(``setup_hash``: equal for every seed of a cell), a fingerprint of every data
file the config names and a listing (names, sizes) of every ``*data_dir``
folder (inside both hashes), the steps, the study-level
``setup`` (e.g. which data source) and the git commit. The full seed-free
configs sit beside the results, in ``<results>.configs.json``, so a mismatch
names the keys that differ. A row is skipped on resume only if it was made
by the same config; a table refuses rows of different setups (``check_rows``,
called by ``read_results``); another data source writes to its own results
file (``results_path``). Rows from before provenance are "legacy": a file
of only legacy rows still reads (``write_results_md`` says so), a mix does not.
"""

import hashlib
import json
import os
import subprocess
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple


from mtl_jax import train
from mtl_jax.metrics import mean_se  # noqa: F401  (re-exported for studies)

# Config keys that do not change a row's numbers (or that differ per seed by design).
_UNKEYED = ("progress_bar", "num_seeds")


def results_path(study_dir: str, source: Optional[str] = None, ext: str = "jsonl") -> str:
  """``results.<ext>``, or ``results_<source>.<ext>`` for another data source."""
  if source:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in source)
    return os.path.join(study_dir, f"results_{safe}.{ext}")
  return os.path.join(study_dir, f"results.{ext}")


def file_sha256(path: str, length: int = 16) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()[:length]


def git_commit(study_dir: Optional[str] = None) -> str:
  """HEAD of the checkout this module is in, ``+dirty`` if mtl_jax/ or the
  study's ``*.py`` (all studies' when ``study_dir`` is None) have uncommitted changes."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  scripts = (["experiments/*.py", "experiments/*/*.py"] if study_dir is None
             else [os.path.join(os.path.abspath(study_dir), "*.py")])
  try:
    head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "mtl_jax"]
                           + scripts, capture_output=True, text=True, check=True).stdout.strip()
    return head + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _flatten(value, prefix: str = "") -> Dict[str, object]:
  if isinstance(value, dict):
    out = {}
    for k in sorted(value):
      out.update(_flatten(value[k], f"{prefix}{k}."))
    return out
  if isinstance(value, (list, tuple)):
    if any(isinstance(v, (dict, list, tuple)) for v in value):
      out = {}
      for i, v in enumerate(value):
        out.update(_flatten(v, f"{prefix}{i}."))
      return out or {prefix[:-1]: []}
    return {prefix[:-1]: list(value)}
  return {prefix[:-1]: value}


def listing_sha256(folder: str, length: int = 16) -> str:
  """sha256 of the relative paths and sizes of every file under ``folder`` (no contents:
  a user's dataset folder, e.g. NYUv2's 2.6 GB of .npy files, is fingerprinted in ms)."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    for f in sorted(files):
      path = os.path.join(root, f)
      h.update(f"{os.path.relpath(path, folder)}:{os.path.getsize(path)};".encode())
  return h.hexdigest()[:length]


def _fingerprint_files(flat: Dict[str, object]) -> Dict[str, object]:
  """Adds ``<key>#sha256`` for every string value that names an existing file, and
  ``<key>#listing`` for a ``*data_dir`` key naming a folder (user-supplied datasets)."""
  out = dict(flat)
  for k, v in flat.items():
    if isinstance(v, str) and os.path.isfile(v):
      out[k + "#sha256"] = file_sha256(v)
    elif isinstance(v, str) and k.endswith("data_dir") and os.path.isdir(os.path.expanduser(v)):
      out[k + "#listing"] = listing_sha256(os.path.expanduser(v))
  return out


def _hash(flat: Dict[str, object]) -> str:
  return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def provenance(config, seed: int, setup: Optional[dict] = None,
               commit: Optional[str] = None) -> Tuple[dict, Dict[str, object]]:
  """(row provenance, the flat seed-free config) for ``config`` run as ``seed``.

  Seed-free: keys named ``seed`` are dropped and ``seed_<seed>`` in strings
  (e.g. an upstream workdir) becomes ``seed_<S>``, so all seeds of one cell
  share ``setup_hash`` while ``config`` still tells them apart.
  """
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  raw = {k: v for k, v in raw.items() if k not in _UNKEYED}
  full = _fingerprint_files(_flatten(json.loads(json.dumps(raw, default=str))))
  free = {}
  for k, v in full.items():
    if k == "seed" or k.endswith(".seed"):
      continue
    if isinstance(v, str):
      v = v.replace(f"seed_{seed}", "seed_<S>")
    free[k] = v
  prov = {"config": _hash(dict(full, seed=seed)), "setup_hash": _hash(free),
          "steps": full.get("num_train_steps"), "setup": dict(setup or {}),
          "commit": commit or git_commit()}
  return prov, free


def _configs_path(path: str) -> str:
  return os.path.splitext(path)[0] + ".configs.json"


def read_configs(path: str) -> Dict[str, Dict[str, object]]:
  p = _configs_path(path)
  if not os.path.exists(p):
    return {}
  with open(p) as f:
    return json.load(f)


def _save_config(path: str, setup_hash: str, flat: Dict[str, object]) -> None:
  configs = read_configs(path)
  if setup_hash not in configs:
    configs[setup_hash] = flat
    with open(_configs_path(path), "w") as f:
      json.dump(configs, f, indent=1, sort_keys=True, default=str)
      f.write("\n")


def _diff(a: Optional[dict], b: Optional[dict], limit: int = 8) -> str:
  if a is None or b is None:
    return "(config not saved beside the results)"
  keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
  shown = [f"{k}: {a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r}" for k in keys[:limit]]
  more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
  return "; ".join(shown) + more


def check_rows(rows: List[dict], configs: Optional[dict] = None, where: str = "results") -> None:
  """Raises ValueError if ``rows`` mix setups; names the differing keys.

  One table holds either only legacy rows (no provenance) or only keyed rows
  with one study ``setup`` and, per cell, one ``setup_hash``.
  """
  legacy = [r for r in rows if "provenance" not in r]
  if legacy and len(legacy) != len(rows):
    cells = sorted({r["cell"] for r in legacy})
    raise ValueError(f"{where}: {len(legacy)} legacy rows without provenance (cells {cells[:4]}) "
                     f"mixed with {len(rows) - len(legacy)} keyed rows; regenerate the legacy "
                     "rows or move them to another file")
  if legacy:
    return
  first = rows[0]
  for r in rows[1:]:
    a, b = first["provenance"]["setup"], r["provenance"]["setup"]
    if a != b:
      raise ValueError(f"{where}: rows of different study setups in one table: cell "
                       f"{first['cell']!r} seed {first['seed']} vs cell {r['cell']!r} seed "
                       f"{r['seed']}: {_diff(a, b)}")
  by_cell: Dict[str, dict] = {}
  for r in rows:
    ref = by_cell.setdefault(r["cell"], r)
    ha, hb = ref["provenance"]["setup_hash"], r["provenance"]["setup_hash"]
    if ha != hb:
      configs = configs or {}
      raise ValueError(f"{where}: cell {r['cell']!r} mixes configs (seed {ref['seed']}: "
                       f"{ha}, seed {r['seed']}: {hb}): {_diff(configs.get(ha), configs.get(hb))}")


def read_results(path: str, check: bool = True) -> List[dict]:
  """The rows of ``path``; with ``check``, refuses a file that mixes setups (``check_rows``)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if check and rows:
    check_rows(rows, read_configs(path), where=path)
  return rows


def append_rows(path: str, rows: List[dict], flat_config: Optional[Dict[str, object]] = None
                ) -> None:
  """Appends keyed rows (and their seed-free config, once per ``setup_hash``)."""
  if flat_config is not None and rows:
    _save_config(path, rows[0]["provenance"]["setup_hash"], flat_config)
  with open(path, "a") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def done_or_mismatch(path: str, cell: str, seed: int, prov: dict, flat: Dict[str, object],
                     rows: List[dict]) -> bool:
  """True if ``rows`` already hold (cell, seed) made by this config; raises if made by another."""
  for r in rows:
    if r["cell"] != cell or r["seed"] != seed:
      continue
    old = r.get("provenance")
    if old is None:
      raise ValueError(f"{path}: cell {cell!r} seed {seed} is a legacy row without provenance; "
                       "move the file aside to regenerate it")
    if old["setup"] != prov["setup"]:
      raise ValueError(f"{path}: cell {cell!r} seed {seed} was made under another study setup: "
                       f"{_diff(old['setup'], prov['setup'])}; use another results file")
    if old["setup_hash"] != prov["setup_hash"]:
      raise ValueError(f"{path}: cell {cell!r} seed {seed} was made by another config: "
                       f"{_diff(read_configs(path).get(old['setup_hash']), flat)}; "
                       "use another results file or move this one aside")
    return True
  return False


def train_curves(workdir: str, keys: Sequence[str]) -> dict:
  """{"step": [...], key: {task: [...]}} of ``train/<task>/<key>`` from ``metrics.jsonl``.

  Lets a study keep the logged curves it reports in its committed rows
  (``runs/`` is not committed). Under ``num_seeds`` the library logs the mean
  over replicas, so these are replica means.
  """
  out: dict = {"step": []}
  path = os.path.join(workdir, "metrics.jsonl")
  if not keys or not os.path.exists(path):
    return {}
  with open(path) as f:
    for line in f:
      m = json.loads(line)
      found = {k: {n.split("/")[1]: v for n, v in m.items()
                   if n.startswith("train/") and n.count("/") == 2 and n.endswith("/" + k)}
               for k in keys}
      if not any(found.values()):
        continue
      out["step"].append(m["step"])
      for k, by_task in found.items():
        for task, v in by_task.items():
          out.setdefault(k, {}).setdefault(task, []).append(v)
  return out


def run_grid(study_dir: str, make_config: Callable[[str, int], object],
             cells: Sequence[str], seeds: Iterable[int], log: Callable[[str], None] = print,
             vmap_seeds: bool = False, setup: Optional[dict] = None,
             path: Optional[str] = None, curves: Sequence[str] = ()) -> str:
  """Runs every (cell, seed) not yet in the results file; returns its path.

  ``path`` defaults to ``study_dir/results.jsonl``; ``setup`` is the
  study-level record every row must share (e.g. {"data": "generator"}). A
  (cell, seed) already there from another config raises (see
  ``done_or_mismatch``). With ``vmap_seeds`` a cell's missing seeds (which
  must be consecutive from the first) train as one ``num_seeds`` program;
  each replica still gets its own row. ``curves`` names per-task train
  metrics (e.g. "weight") whose logged curves go into each row
  (``train_curves``).
  """
  path = path or results_path(study_dir)
  existing = read_results(path)
  commit = git_commit(study_dir)
  seeds = list(seeds)
  for cell in cells:
    todo = []
    for s in seeds:
      prov, flat = provenance(make_config(cell, s), s, setup, commit)
      if not done_or_mismatch(path, cell, s, prov, flat, existing):
        todo.append(s)
    batches = [todo] if vmap_seeds and todo else [[s] for s in todo]
    for batch in batches:
      if batch != list(range(batch[0], batch[0] + len(batch))):
        raise ValueError(f"vmap_seeds needs consecutive seeds, cell {cell!r} misses {batch}")
      config = make_config(cell, batch[0])
      config.progress_bar = False
      if len(batch) > 1:
        config.num_seeds = len(batch)
      name = f"seed_{batch[0]}" if len(batch) == 1 else f"seeds_{batch[0]}-{batch[-1]}"
      workdir = os.path.join(study_dir, "runs", cell.replace("/", "_"), name)
      t0 = time.time()
      results = train.train_and_evaluate(config, workdir)
      seconds = round(time.time() - t0, 2)
      rows = results.pop("replicas", None) or [{"seed": batch[0], **results}]
      kept = train_curves(workdir, curves)
      if kept:
        rows = [dict(r, train_curves_replica_mean=kept) for r in rows]
      out = []
      for row in rows:
        prov, flat = provenance(make_config(cell, row["seed"]), row["seed"], setup, commit)
        out.append({"cell": cell, "seconds": seconds, **row, "provenance": prov})
      append_rows(path, out, flat)
      existing += out
      log(f"{cell} seeds {batch}: {seconds:.1f}s")
  return path


def paired_mean_se(a: Dict[int, float], b: Dict[int, float]) -> Tuple[float, float, int]:
  """``mean_se`` of a[s] - b[s] over the seeds both hold ({seed: value} dicts): the
  seed-paired difference of two cells that share initialisation and data per seed."""
  return mean_se([a[s] - b[s] for s in sorted(set(a) & set(b))])


def collect(rows: List[dict], split: str, task: str, metric: str) -> Dict[str, List[float]]:
  """{cell: [value per seed]} for one split/task/metric."""
  out: Dict[str, List[float]] = {}
  for r in rows:
    value = r.get(split, {}).get(task, {}).get(metric)
    if value is not None:
      out.setdefault(r["cell"], []).append(value)
  return out


def table(rows: List[dict], split: str, task: str, metric: str, scale: float = 1.0,
          cells: Optional[Sequence[str]] = None, digits: int = 1) -> str:
  """Markdown table: cell | mean ± s.e. | seeds."""
  values = collect(rows, split, task, metric)
  lines = [f"| cell | {split} {task} {metric} | seeds |", "|---|---|---|"]
  for cell in cells or list(values):
    if cell not in values:
      continue
    m, se, n = mean_se([v * scale for v in values[cell]])
    lines.append(f"| {cell} | {m:.{digits}f} ± {se:.{digits}f} | {n} |")
  return "\n".join(lines)


NOTES_MARKER = "<!-- notes -->"


def provenance_md(rows: List[dict]) -> str:
  """One Markdown paragraph saying which setup, steps and commits made ``rows``."""
  if not rows:
    return ""
  if any("provenance" not in r for r in rows):
    return ("Provenance: **legacy rows** (written before rows were keyed by config, data "
            "and commit; `mtl_jax/sweep.py`). Their setup is the one this page and `run.py` "
            "describe; rerunning needs the file moved aside.\n\n")
  setup = rows[0]["provenance"]["setup"]
  per_cell = {}
  for r in rows:
    per_cell.setdefault(r["cell"], r["provenance"]["setup_hash"])
  commits = sorted({r["provenance"]["commit"] for r in rows})
  steps = sorted({str(r["provenance"]["steps"]) for r in rows})
  setup_txt = ", ".join(f"{k}={v}" for k, v in sorted(setup.items())) or "none"
  hashes = ", ".join(f"{c} `{h}`" for c, h in per_cell.items())
  return (f"Provenance: {len(rows)} rows keyed by config (`<results>.configs.json` beside the "
          f"rows), study setup {setup_txt}; steps {'/'.join(steps)}; commits "
          f"{', '.join(f'`{c}`' for c in commits)}. Config hash per cell: {hashes}.\n\n")


def write_results_md(path: str, generated: str, rows: Optional[List[dict]] = None) -> None:
  """Writes a study's generated tables, keeping the hand-written part.

  Everything from the ``<!-- notes -->`` marker on is the study's written
  comparison with the paper: it survives regeneration. With ``rows`` a
  provenance paragraph (``provenance_md``) goes before the notes; the rows
  are checked not to mix setups first.
  """
  if rows:
    check_rows(rows, where=path)
  notes = NOTES_MARKER + "\n"
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
    if NOTES_MARKER in text:
      notes = text[text.index(NOTES_MARKER):]
  with open(path, "w") as f:
    f.write(generated + provenance_md(rows or []) + notes)
