#!/usr/bin/env bash
# Sets up a fresh virtual environment in .venv and runs the test suite (README command 2).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
# Pin JAX to the CPU and keep its threads to the 2 cores CI has.
export JAX_PLATFORMS=cpu
# The suite is compile-bound (hundreds of small programs, each compiled once): XLA's backend optimisation
# off compiles ~3x faster for ~1.2x slower runs (measured on tests/test_remat.py and test_samplers.py),
# and one persistent compilation cache shared by the workers and the main.py runs they start compiles
# each identical program once. Benchmarks run without either.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
JAX_COMPILATION_CACHE_DIR="$(mktemp -d)"
export JAX_COMPILATION_CACHE_DIR JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
set +e
.venv/bin/python -m pytest -q -n 2 --durations=25 tests "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests at all: failing" >&2
  exit 1
fi
exit "$status"
