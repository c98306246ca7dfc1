#!/usr/bin/env bash
# The accelerator check (benchmarks/device_suite.py; docs/performance.md says how to read it).
#
#   bash benchmarks/device_suite.sh fetch   # here, in the repository root, once: the wheels the
#                                           # device image lacks -> .whl/ (git-ignored, ~4.5 MB)
#   bash benchmarks/device_suite.sh [ARGS]  # on the device (the device tool, carry [".whl"]):
#                                           # $OUT/device_suite.json, .md, .log, versions.txt
#
# The device image has JAX 0.11 (CUDA), flax, optax, orbax, absl, PyYAML, cloudpickle, etils,
# protobuf and pillow, but not ml_collections or the streaming input's grain and array_record.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS="ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0"

if [[ "${1:-}" == fetch ]]; then
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $WHEELS
  ls -l .whl
  exit 0
fi

OUT=${OUT:-/tmp/device_suite_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$PY -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', \
flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__, jax.devices())" \
  | tee "$OUT/versions.txt"
status=0
# Under 8 minutes: sections that would start after --budget-s (450) are skipped, and the JSON is
# rewritten after every section, so a run stopped here still leaves what it measured.
timeout 500 $PY benchmarks/device_suite.py --out "$OUT/device_suite.json" "$@" \
  > "$OUT/device_suite_stdout.json" 2> >(tee "$OUT/device_suite.log" >&2) || status=$?
if [[ -f "$OUT/device_suite.json" ]]; then
  $PY benchmarks/device_table.py "$OUT/device_suite.json" | tee "$OUT/device_suite.md"
fi
exit $status
