"""notebooks/tutorial.py runs end to end as a notebook at small sizes, and what it prints is true.

The jupytext text is converted to an .ipynb in a temporary folder and executed there by nbclient on the
python3 kernel (jupyter_client starts it with this interpreter, so it imports the installed library), with
TUTORIAL_SMALL=1. Its last cell prints ``RESULTS {json}``: the numbers each section demonstrates, checked
below against the facts they illustrate.
"""
import json
import os

import pytest

if os.environ.get("CI", "false") != "false":         # CI installs requirements-docs.txt: missing is a failure
  import ipykernel  # noqa: F401
  import jupytext
  import nbclient
else:                                                # requirements-docs.txt, not requirements-lock.txt
  jupytext = pytest.importorskip("jupytext")
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "tutorial.py")
FIGURES = 6                                          # one per section
TOLERANCE = 1.5             # as tests/test_samplers.py: within 1.5x the 99% noise floor of an exact sample


def _execute(tmp):
  """The executed notebook (run in the empty folder tmp, outside the repository) and its RESULTS."""
  notebook = jupytext.read(NOTEBOOK)
  jupytext.write(notebook, tmp / "tutorial.ipynb")   # the conversion a reader does
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SCORE_SDE_JAX_ROOT", "TUTORIAL_FIGURES")}
  env["TUTORIAL_SMALL"] = "1"
  # python3: jupyter_client starts the kernel spec's "python" as sys.executable, this interpreter.
  client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=600,
                                   resources={"metadata": {"path": str(tmp)}})    # the kernel's cwd
  client.execute(env=env)
  text = [o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
          if o.get("output_type") == "stream"]
  line = next(ln for t in text for ln in t.splitlines() if ln.startswith("RESULTS "))
  return notebook, json.loads(line[len("RESULTS "):])


@pytest.mark.slow
def test_the_tutorial_runs_end_to_end_and_its_numbers_hold(tmp_path):
  """One test, so that the notebook runs once also under pytest-xdist (whose workers would each run a shared
  fixture); each fact is a _check_* below. About 2 minutes on 2 busy cores (1 minute of CPU time)."""
  notebook, results = _execute(tmp_path)            # a cell that raises fails here (nbclient's CellExecutionError)
  images = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
  assert len(images) == FIGURES
  assert results["small"] is True
  assert "checkpoint" in results                    # the fixture was found from a folder outside the repository
  _check_training_approaches_the_minimum_of_the_dsm_loss(results)
  _check_samplers_reproduce_the_mode_weights_and_count_their_evaluations(results)
  _check_ode_likelihood_matches_the_oracle_and_gibbs_inequality(results)
  _check_inpainting_keeps_the_observation_and_smc_beats_replacement(results)
  _check_the_converted_checkpoint_computes_the_reference_score(results)


def _check_training_approaches_the_minimum_of_the_dsm_loss(results):
  """Vincent's identity: the exact score minimises the DSM loss (in expectation; on one batch a zero-mean cross
  term remains). Measured on the same points and noise, training closes 98% of the untrained network's gap."""
  loss = results["loss"]
  assert abs(loss["trained"] - loss["exact"]) < 0.02 * (loss["untrained"] - loss["exact"]), loss


def _check_samplers_reproduce_the_mode_weights_and_count_their_evaluations(results):
  """Every sampler's mode weights (tv) lie within TOLERANCE x the 99% floor of exact samples of the same size
  (the project's target, tests/test_samplers.py), the trained network's too; driven by the exact score,
  DPM-Solver++ meets the floor on every metric. NFE as documented: PC 2 per step + the final denoising,
  DPM-Solver++ its exact budget."""
  results = results
  floor, sampling = results["floor"], results["sampling"]
  for method, metrics in sampling.items():
    assert metrics["tv"] <= TOLERANCE * floor["tv"], (method, metrics, floor)
  exact_score = sampling["dpm_solver_pp_exact_score"]
  assert all(exact_score[k] <= TOLERANCE * floor[k] for k in floor), (exact_score, floor)
  assert sampling["pc"]["nfe"] == 2 * 200 + 1
  assert sampling["dpm_solver_pp"]["nfe"] == exact_score["nfe"] == 20


def _check_ode_likelihood_matches_the_oracle_and_gibbs_inequality(results):
  """With the exact score the ODE likelihood is the oracle's log p_tmin up to solver error once the prior
  mismatch is added back: at rtol = atol = 1e-5 on average within 1e-4 nats/dim, the bound
  tests/test_likelihood.py asserts for the same solve. With the network: KL(p || q) = E[log p - log q] >= 0
  (its estimate, the mean over the test points, within 3 standard errors of it), and far below the best
  single Gaussian's KL."""
  lk = results["likelihood"]
  assert lk["solver_error_mean"] / lk["dims"] <= 1e-4, lk
  assert lk["kl"] >= -3 * lk["kl_se"]
  assert lk["kl"] + 3 * lk["kl_se"] < lk["kl_gauss"] / 10


def _check_inpainting_keeps_the_observation_and_smc_beats_replacement(results):
  """Every run keeps the observed coordinate exactly. With the exact score SMC samples the exact conditional
  (tv within TOLERANCE x the floor); with the network its share of the upper mode is still nearer the exact
  one than replacement's, which ignores the observation's likelihood. 16 particles cost 16 x the PC chain's
  NFE."""
  cond = results["conditional"]
  exact_upper = cond["weights"][1]
  replacement, smc, smc_exact = cond["replacement, network"], cond["smc, network"], cond["smc, exact score"]
  assert replacement["observed_kept"] and smc["observed_kept"] and smc_exact["observed_kept"]
  assert smc_exact["tv"] <= TOLERANCE * cond["floor_tv"], (smc_exact, cond["floor_tv"])
  assert abs(smc["upper_share"] - exact_upper) < abs(replacement["upper_share"] - exact_upper)
  assert smc["nfe"] == smc_exact["nfe"] == 16 * replacement["nfe"]


def _check_the_converted_checkpoint_computes_the_reference_score(results):
  """The seeded score_sde_pytorch checkpoint, loaded by the public loader: its score equals the reference's to
  the bound tests/test_published.py uses (1e-4 relative), and the sampler returns finite images."""
  ckpt = results["checkpoint"]
  assert ckpt["rel_error"] <= 1e-4
  assert ckpt["shape"] == [4, 16, 16, 3] and ckpt["finite"] and ckpt["nfe"] == 10
