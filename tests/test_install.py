"""The library is importable from any folder once installed (pyproject.toml; scripts/test.sh installs it
editable, scripts/test_newest.sh as a built wheel), and installing it shadows no well-known package."""
import os
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Folders of the repository that are programs, not library: they run from the repository root.
NOT_INSTALLED = {"configs", "tools", "benchmarks", "tests", "testkit", "examples", "scripts", "docs", "runs"}

CHECKS = r"""
import os
from samplers.schedules import GRID_DIR
assert sorted(f for f in os.listdir(GRID_DIR) if f.endswith(".json")), GRID_DIR   # package data installed
from evaluation.digits_classifier import SHIPPED, DigitsFeatures
assert os.path.isfile(SHIPPED) and DigitsFeatures().test_accuracy > 0.95, SHIPPED    # the digits FID's classifier
"""


def _readme_snippet():
  """The README's first python block (its library snippet), run as a user would paste it."""
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  start = text.index("```python\n") + len("```python\n")
  return text[start:text.index("```", start)]


def _packages():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["tool"]["setuptools"]["packages"]


def test_every_library_package_is_installed_and_nothing_else():
  folders = {d for d in os.listdir(ROOT)
             if os.path.isfile(os.path.join(ROOT, d, "__init__.py")) and d not in NOT_INSTALLED}
  assert set(_packages()) == folders


def test_no_installed_package_shadows_hugging_face_datasets():
  # A top-level `datasets` here would hide Hugging Face's `datasets` from every project that installs us.
  assert "datasets" not in _packages()
  assert not os.path.exists(os.path.join(ROOT, "datasets", "__init__.py"))


def test_the_readme_library_snippet_runs_from_another_folder(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  run = subprocess.run([sys.executable, "-c", _readme_snippet() + CHECKS], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
  assert run.returncode == 0, ("the installed library failed outside the repository (is it installed? "
                               "`pip install -e .`, as scripts/test.sh does):\n" + run.stderr[-2000:])
