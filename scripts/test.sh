#!/usr/bin/env bash
# Sets up a virtual environment in .venv with the locked versions (requirements-lock.txt, the exact
# versions the suite last passed with) and runs the test suite (README command 2).
# scripts/lock.sh reuses it with VENV (an environment it made) and REQUIREMENTS=requirements.txt (the
# ranges); PYTHON picks the interpreter that makes the environment (python3; the lock is for 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
REQUIREMENTS="${REQUIREMENTS:-requirements-lock.txt}"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r "$REQUIREMENTS"
# The tutorial's executor (jupytext, nbclient, ipykernel) and the guide's builder: tests/test_tutorial.py runs
# notebooks/tutorial.py as a notebook; scripts/docs.sh, run by .ci/run after this, finds them installed.
"$VENV/bin/python" -m pip install --quiet -r requirements-docs.txt
# The library itself, editable (pyproject.toml): importable from any folder, as README's install makes it.
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
# The JAX settings the suite runs under (scripts/test_env.sh: CPU, compile-fast XLA flags, one compilation
# cache); the samplers' second run below uses the user's XLA_FLAGS as they were.
JAX_COMPILATION_CACHE_DIR="$(mktemp -d)"
trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
source scripts/test_env.sh "$VENV/bin/python" "$JAX_COMPILATION_CACHE_DIR"
set +e
# The layer contracts first (import-linter reads .importlinter; seconds): a broken one fails the run too.
"$VENV/bin/lint-imports"
contracts=$?
# Two workers; an idle one takes tests queued for the other (worksteal), so the run does not end on one worker's
# backlog of slow tests.
"$VENV/bin/python" -m pytest -q -n 2 --dist worksteal --durations=25 tests "$@"
status=$?
# The samplers' fast tests once more with XLA's optimisation on, as users run them: there XLA may contract
# arithmetic into FMAs, which hid a NaN in stochastic Heun (sqrt of a rounding-negative) from the run above.
if [ "$#" -eq 0 ]; then
  XLA_FLAGS="$TEST_ENV_USER_XLA_FLAGS" "$VENV/bin/python" -m pytest -q -n 2 tests/test_samplers.py -m "not slow"
  optimised=$?
  [ "$status" -ne 0 ] || status=$optimised
fi
set -e
if [ "$contracts" -ne 0 ]; then
  echo "lint-imports: a layer contract is broken (see above)" >&2
  [ "$status" -ne 0 ] || status=1
fi
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests at all: failing" >&2
  exit 1
fi
exit "$status"
