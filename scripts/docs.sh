#!/usr/bin/env bash
# Builds the guide and its API reference (mkdocs.yml) into site/ with warnings as errors: a broken link, a
# link to a missing anchor or file, a page outside the nav or a docstring griffe cannot parse fails the build.
# Installs requirements-docs.txt into the environment first (VENV, default .venv, as scripts/test.sh makes it;
# the library must be installed there, editable, for the API reference). Prints the time taken.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
start=$(date +%s)
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-docs.txt
# Material for MkDocs prints a notice about MkDocs 2.0 on every build; it is not about this site.
export NO_MKDOCS_2_WARNING=1
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
"$VENV/bin/mkdocs" build --strict --clean 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# strict mode already aborts on warnings; this also catches any WARNING line a plugin logs without failing.
if [ "$status" -eq 0 ] && grep -q "WARNING" "$log"; then
  echo "docs.sh: the build logged warnings (above)" >&2
  status=1
fi
echo "docs.sh: $( [ "$status" -eq 0 ] && echo built site/ || echo FAILED ) in $(( $(date +%s) - start )) s"
exit "$status"
