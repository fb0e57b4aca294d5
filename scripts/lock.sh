#!/usr/bin/env bash
# Refreshes requirements-lock.txt, the exact versions the README's commands and CI install.
#
#   bash scripts/lock.sh            # PYTHON=python3.11 by default (the locked Python)
#   PYTHON=/path/to/python3.11 bash scripts/lock.sh
#
# 1. makes a fresh virtual environment (in a temporary directory) with $PYTHON;
# 2. installs requirements.txt's ranges there: the newest releases PyPI offers that Python;
# 3. runs the whole test suite in it through scripts/test.sh (the same flags as CI);
# 4. only if every test passed, writes that environment's `pip freeze` into requirements-lock.txt:
#    every installed distribution pinned with ==, transitive ones included, without pip, setuptools,
#    wheel and this project, and with the environment marker of the dependency that brought it in
#    when that dependency is platform-specific (e.g. uvloop: platform_system != "Windows").
# Then review `git diff requirements-lock.txt` and commit it with the suite's result. Nothing is written
# when the install or a test fails: the lock keeps the versions the suite last passed with.
# `bash scripts/lock.sh -x` stops at the first failing test; no other argument is taken (the lock is
# written only from a run of the whole suite).
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  [ "$arg" = "-x" ] || { echo "lock.sh: only -x is accepted (the lock needs the whole suite), got $arg" >&2; exit 2; }
done
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || { echo "lock.sh: $PYTHON not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet --upgrade -r requirements.txt
# scripts/test.sh with this environment and the ranges instead of the lock (it reuses the venv as is).
VENV="$work/venv" REQUIREMENTS=requirements.txt PYTHON="$PYTHON" bash scripts/test.sh "$@"
commit="$(git describe --always --dirty 2>/dev/null || echo "no git")"
"$work/venv/bin/python" - requirements.txt "$commit" > "$work/lock.txt" <<'EOF'
"""Print the environment's distributions pinned with ==, with platform markers where they apply."""
import datetime
import importlib.metadata as md
import platform
import sys

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXCLUDED = {"pip", "setuptools", "wheel", "distribute", "score-sde-jax"}
PLATFORM_KEYS = ("platform_system", "sys_platform", "os_name", "platform_machine", "platform_python_implementation",
                 "implementation_name")

dists = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
roots = []
for line in open(sys.argv[1]):
  line = line.split("#", 1)[0].strip()
  if line:
    roots.append(Requirement(line))

# marker[name]: None = needed everywhere; else the platform conditions (strings, OR-ed) under which it is.
marker = {}
queue = [(canonicalize_name(r.name), set(r.extras), None) for r in roots]
while queue:
  name, extras, condition = queue.pop()
  if name not in dists:
    continue
  known = name in marker
  if known and marker[name] is None:
    continue
  if condition is None:
    marker[name] = None
  elif not known or condition not in marker[name]:
    marker.setdefault(name, []).append(condition)
  else:
    continue
  for spec in dists[name].requires or []:
    req = Requirement(spec)
    if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""}) | {""}):
      continue                                         # not installed here (other platform, unrequested extra)
    text = str(req.marker) if req.marker is not None else ""
    edge = text if any(key in text for key in PLATFORM_KEYS) and "extra" not in text else None
    if condition is None:
      child = edge
    else:
      child = condition if edge is None or edge in condition else f"({condition}) and ({edge})"
    queue.append((canonicalize_name(req.name), set(req.extras), child))

print(f"# Exact versions the whole test suite passed with, written by scripts/lock.sh on "
      f"{datetime.date.today().isoformat()}")
print(f"# (Python {platform.python_version()}, {platform.system()} {platform.machine()}, commit {sys.argv[2]}). "
      f"Install with")
print("#   pip install -r requirements-lock.txt")
print("# requirements.txt keeps the ranges for projects that import this library; refresh this file with")
print("# `bash scripts/lock.sh` (fresh venv from the ranges, whole suite, written only if it passes).")
for name in sorted(dists, key=str.lower):
  if name in EXCLUDED:
    continue
  dist = dists[name]
  pin = f"{dist.metadata['Name']}=={dist.version}"
  if name not in marker:
    print(f"lock.sh: {pin} is installed but no requirement needs it: locked anyway", file=sys.stderr)
  elif marker[name] is not None:
    conditions = sorted(set(marker[name]))
    pin += " ; " + (conditions[0] if len(conditions) == 1 else " or ".join(f"({c})" for c in conditions))
    Marker(pin.split(" ; ", 1)[1])                     # must parse
  print(pin)
EOF
mv "$work/lock.txt" requirements-lock.txt
echo "lock.sh: the suite passed; requirements-lock.txt written ($(grep -c '==' requirements-lock.txt) pins). Review: git diff requirements-lock.txt"
