#!/usr/bin/env bash
# Sets up a fresh virtual environment in .venv and runs the test suite (README command 2).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
# Pin JAX to the CPU and keep its threads to the 2 cores CI has.
export JAX_PLATFORMS=cpu
set +e
.venv/bin/python -m pytest -q -n 2 tests "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests at all: failing" >&2
  exit 1
fi
exit "$status"
