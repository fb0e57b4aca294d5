#!/usr/bin/env bash
# A quick subset of the tests on Python 3.12 with the newest releases requirements.txt allows (jax >= 0.11
# needs Python >= 3.12; the lock, requirements-lock.txt, is for Python 3.11 and jax 0.10.2). .ci/run runs
# it after the whole suite on the lock, so the supported range the README states stays true.
#
#   bash scripts/test_newest.sh              # python3.12 from PATH or pyenv; PYTHON_NEWEST=... to choose
#   bash scripts/test_newest.sh -x           # extra arguments go to pytest
#
# It makes a throwaway virtual environment (outside the repo), installs requirements.txt's ranges with
# --upgrade (the newest releases PyPI offers that Python), prints the versions it got and runs the fast tier
# of the SDEs, losses, PC / ODE / ALD / adaptive samplers, likelihoods and published-checkpoint readers, then
# the flax checkpoint reader and tiny training, resume (main.py) and evaluation runs (SUBSET and SUBSET_SLOW
# below), with the same JAX settings as scripts/test.sh (scripts/test_env.sh).
# Without Python 3.12 it prints a skip line and exits 0, except in CI (CI set and not "false"), where it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
candidates=()
if [ -n "${PYTHON_NEWEST:-}" ]; then
  candidates=("$PYTHON_NEWEST")
else
  candidates+=("$(command -v python3.12 || true)")
  if command -v pyenv >/dev/null; then
    candidates+=("$(ls -d "$(pyenv root)"/versions/3.12*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)")
  fi
  candidates+=("$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)")
fi
python=""
for candidate in "${candidates[@]}"; do
  if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] >= (3, 12)' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  if [ -n "${CI:-}" ] && [ "${CI:-}" != "false" ]; then
    echo "test_newest.sh: FAILED: no Python >= 3.12 found (python3.12 on PATH, pyenv, or PYTHON_NEWEST) and CI=$CI" >&2
    exit 1
  fi
  echo "test_newest.sh: SKIPPED: no Python >= 3.12 found (python3.12 on PATH, pyenv, or PYTHON_NEWEST)"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet --upgrade -r requirements.txt
# The library as a built wheel (not editable): tests/test_install.py then checks the wheel's contents.
"$work/venv/bin/python" -m pip install --quiet --no-deps .
echo "test_newest.sh: installed in $((SECONDS - start)) s:" \
  "$("$work/venv/bin/python" -c 'import sys; print("Python", sys.version.split()[0])')," \
  "$("$work/venv/bin/python" -m pip freeze | grep -iE '^(jax|jaxlib|flax|optax|orbax-checkpoint|diffrax|equinox|numpy|scipy)==' | tr '\n' ' ')"
source scripts/test_env.sh "$work/venv/bin/python" "$work/cache"
# The library's fast tier (-m "not slow") of these files, then a few slow tests by name: SUBSET_SLOW. Left out for
# time (CI's 30 minutes): the fast samplers (EDM Heun, DPM-Solver++, UniPC: jax.numpy and lax.scan, as the PC and
# adaptive samplers here); their fast tier took 51 worker-seconds in the Python 3.11 suite.
SUBSET=(
  tests/test_install.py                      # the installed wheel imports from any folder
  tests/test_sde.py                          # the SDEs against closed forms and simulation
  tests/test_losses.py                       # DSM / discrete / sliced losses against the oracle
  tests/test_samplers.py                     # PC, ALD, ODE (diffrax) samplers reproduce the mixture
  tests/test_sde_adaptive.py                 # the adaptive reverse SDE
  tests/test_steps.py                        # the step protocol, its loop, observations, the option table
  tests/test_likelihood.py                   # probability-flow likelihoods against the oracle
  tests/test_published.py                    # checkpoint readers: pickles refused, .pth (reduced networks)
)
SUBSET_SLOW=(
  tests/test_differentiable.py::test_likelihood_gradient_matches_central_difference   # float64 AD through diffrax
  "tests/test_published.py::test_our_networks_compute_score_sdes_flax_score_and_read_its_checkpoints[r_ncsnpp_residual]"
  tests/test_pipeline.py::test_resumed_run_is_bit_identical  # main.py train, orbax checkpoints, resume
  tests/test_pipeline.py::test_evaluation_writes_metrics_and_resumes   # train + evaluate (samples, FID, bits/dim)
)
set +e
"$work/venv/bin/python" -m pytest -q -n 2 -p no:cacheprovider --durations=5 -m "not slow" "${SUBSET[@]}" "$@"
status=$?
"$work/venv/bin/python" -m pytest -q -n 2 -p no:cacheprovider --durations=5 "${SUBSET_SLOW[@]}" "$@"
slow=$?
[ "$status" -ne 0 ] || status=$slow
set -e
echo "test_newest.sh: $((SECONDS - start)) s in all, install included"
if [ "$status" -eq 5 ]; then
  echo "test_newest.sh: pytest collected no tests at all: failing" >&2
  exit 1
fi
exit "$status"
