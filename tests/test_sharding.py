"""Sharded parameters on 8 simulated CPU devices: FSDP and tensor parallelism train what the
replicated run trains, FSDP keeps ~1/8 of the parameters per device, a run resumes onto
another mesh, and rules that cannot apply fail naming the parameter."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from _train_subprocess import checkpoint_params, train_metrics
from mtl_jax import sharding

from conftest import child_env

HERE = os.path.dirname(os.path.abspath(__file__))
# Sharded sums reduce in another order: float32 moves by ulps, and Adam's normalised steps
# carry that to the parameters (largest difference seen over 8 steps: 1.9e-6 absolute on
# weights of ~0.1, one element in 65,536). Losses agree to 1e-5.
RTOL, ATOL = 1e-5, 5e-6
BASE = {"num_train_steps": 8, "batch_size": 64, "eval_batch_size": 512, "log_every_steps": 1,
        "eval_every_steps": 0, "checkpoint_every_steps": 4, "progress_bar": False}
CASES = {
    "rep": {},
    "fsdp": {"sharding": "fsdp"},
    "tp": {"sharding": "tensor_parallel", "mesh": {"model": 2}},
    "rules": {"sharding": [("heads/.*", ()), ("trunk/.*kernel", (None, "data")), (".*", ())]},
    "rep_upgrad": {"weighting": {"aggregator": "upgrad"}},
    "fsdp_upgrad": {"sharding": "fsdp", "weighting": {"aggregator": "upgrad"}},
    "bad_divide": {"sharding": [("heads/.*kernel", (None, None, "data")), (".*", ())]},
    "bad_unmatched": {"sharding": [("trunk/.*", ())]},
}


def _spec(root, runs, **extra):
  spec = {"num_cpu_devices": 8, "runs": runs, **extra}
  path = root / f"spec_{len(list(root.iterdir()))}.json"
  path.write_text(json.dumps(spec))
  env = child_env()
  proc = subprocess.run([sys.executable, os.path.join(HERE, "_train_subprocess.py"), str(path)],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("sharding")
  _spec(root, [{"workdir": str(root / name), "overrides": BASE,
                "set": {k: v for k, v in case.items()}, "expect_error": name.startswith("bad")}
               for name, case in CASES.items()],
        per_device_bytes={"out": str(root / "bytes.json"), "set": {"sharding": "fsdp"}})
  # Resume the FSDP run's step-4 checkpoint on a (4, 2) tensor-parallel mesh.
  import shutil
  shutil.copytree(root / "fsdp", root / "moved")
  shutil.rmtree(root / "moved" / "checkpoints" / "8")
  os.remove(root / "moved" / "results.json")
  _spec(root, [{"workdir": str(root / "moved"), "overrides": BASE,
                "set": {"sharding": "tensor_parallel", "mesh": {"model": 2}}}])
  return root


def _flat(tree, prefix=""):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flat(v, f"{prefix}{k}/")
    else:
      yield f"{prefix}{k}", np.asarray(v)


def _assert_params_close(a, b):
  fa, fb = dict(_flat(checkpoint_params(a)[1])), dict(_flat(checkpoint_params(b)[1]))
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_allclose(fb[k], fa[k], rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("case", ["fsdp", "tp", "rules", "moved"])
def test_sharded_runs_equal_the_replicated_run(runs, case):
  for a, b in zip(train_metrics(runs / "rep"), train_metrics(runs / case)):
    np.testing.assert_allclose(b["train/loss"], a["train/loss"], rtol=RTOL, atol=ATOL)
  _assert_params_close(runs / "rep", runs / case)


def test_aggregator_with_sharded_parameters(runs):
  """The Gramian is a sum over shards: UPGrad on FSDP parameters = UPGrad replicated."""
  _assert_params_close(runs / "rep_upgrad", runs / "fsdp_upgrad")


def test_fsdp_keeps_an_eighth_of_the_parameters_per_device(runs):
  b = json.loads((runs / "bytes.json").read_text())
  assert b["params"] <= 0.15 * b["total"], b   # 1/8 = 0.125, plus small replicated leaves
  assert b["opt_state"] <= 0.15 * b["opt_total"], b


@pytest.mark.parametrize("case,match", [
    ("bad_divide", "heads/digit_ge5_kernel|heads/.*kernel.*not divisible by mesh axis 'data' of size 8"),
    ("bad_unmatched", "match no rule for parameters")])
def test_rules_that_cannot_apply_name_the_parameter(runs, case, match):
  error = json.loads((runs / case / "error.json").read_text())
  assert error is not None and error["type"] == "ValueError"
  import re
  assert re.search(match, error["message"]), error["message"]


def test_rule_errors_in_process():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
  params = {"a": {"kernel": jax.ShapeDtypeStruct((4, 3), np.float32)}}
  with pytest.raises(ValueError, match=r"sharding rules \['b/.\*'\] match no parameter"):
    sharding.param_shardings([("a/.*", ()), ("b/.*", ())], params, mesh)
  with pytest.raises(ValueError, match=r"mesh axes \['modle'\] are not in the mesh"):
    sharding.param_shardings([("a/.*", ("modle",))], params, mesh)
  with pytest.raises(ValueError, match="is not a preset"):
    sharding.param_shardings("fdsp", params, mesh)
