# The two commands of the README. Both create .venv with the pinned ranges first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf /tmp/mtl_jax_demo
	$(PY) -m mtl_jax.main --config=configs/quickstart.py --workdir=/tmp/mtl_jax_demo

# Compiled XLA programs are cached on disk so the many short test runs (and
# their subprocesses) compile each program once.
JAX_CACHE_ENV := JAX_COMPILATION_CACHE_DIR=$(HOME)/.cache/mtl_jax/xla \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0

test: $(STAMP)
	$(JAX_CACHE_ENV) $(PY) -m pytest -n 2 --dist loadfile -q tests

bench: $(STAMP)
	$(PY) benchmarks/many_tasks_step_time.py
	$(PY) benchmarks/frozen_trunk_step_time.py

clean:
	rm -rf $(VENV) build *.egg-info
