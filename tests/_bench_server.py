"""Runs benchmark scripts one after another in this one process, for the benchmark smoke tests.

Each request (one JSON line on stdin: ``{"script": path, "args": [...]}``) runs the script as
``__main__`` with that argv and answers one JSON line on the original stdout:
``{"rc": exit code, "stdout": what the script printed, "error": traceback or ""}``. Why: a
benchmark's --quick run is a few seconds of work after ~3 s of importing JAX, flax, torch and
the library; a dozen scripts paying that once instead of each saves about half a minute of CPU
per test session (tests/conftest.py ``run_benchmark``). Scripts that need an environment of
their own (a simulated device count) still run as fresh subprocesses (``fresh=True``).
"""

import contextlib
import io
import json
import os
import runpy
import sys
import traceback


def main() -> None:
  answer = os.fdopen(os.dup(1), "w")  # answers only; the scripts' prints go to their buffer
  os.dup2(2, 1)  # anything written to fd 1 below Python (XLA, C extensions) goes to stderr
  sys.stdout = sys.stderr
  for line in sys.stdin:
    request = json.loads(line)
    out, error, rc = io.StringIO(), "", 0
    sys.argv = [request["script"], *request["args"]]
    try:
      with contextlib.redirect_stdout(out):
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as e:
      rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 -- reported to the test, which fails naming it
      rc, error = 1, traceback.format_exc()
    answer.write(json.dumps({"rc": rc, "stdout": out.getvalue(), "error": error}) + "\n")
    answer.flush()


if __name__ == "__main__":
  main()
