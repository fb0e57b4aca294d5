"""--mode sample --config.sampling.condition=inverse: the sampling.inverse section (built from the library's
operator and algorithm dataclasses), its errors, and a run on a tiny trained digits model."""

import copy
import dataclasses
import importlib
import json

import numpy as np
import pytest

import samplers
import schema
from schema import parse_config


def _digits():
  return importlib.import_module("configs.vp.digits").get_config().to_dict()


def test_the_section_holds_every_operator_parameter_and_algorithm_option_once():
  """Defaults are the library's; a name whose defaults differ between operators (kernel_size) is None there."""
  inverse = parse_config(_digits()).sampling.inverse
  assert (inverse.operator, inverse.noise_std, inverse.algorithm) == ("superres", 0.0, "smc")
  for cls in list(samplers.OPERATOR_OPTIONS.values()) + list(samplers.INVERSE_OPTIONS.values()):
    for f in dataclasses.fields(cls):
      if f.name in schema.SHARED:
        assert not hasattr(inverse, f.name)         # ddrm's t_min is sampling.t_min
      elif f.name == "kernel_size":
        assert inverse.kernel_size is None
      else:
        assert getattr(inverse, f.name) == f.default, f.name
  for operator, defaults in samplers.OPERATOR_PARAMS.items():
    raw = _digits()
    raw["sampling"]["inverse"]["operator"] = operator
    _, _, params = schema.observation_arguments(parse_config(raw))
    assert params == {k: v for k, v in defaults.items() if k != "kernel_size"}   # None: the operator's own


@pytest.mark.parametrize("field, value, match", [
    ("operator", "fourier", "must be one of"), ("noise_std", -0.1, "must be >= 0"),
    ("noise_std", float("nan"), "finite"), ("algorithm", "ddpm", "must be one of"),
    ("factor", 0, ">= 1"), ("kernel_size", 2.5, "integer"), ("mask", "everything", "must be one of"),
    ("n_particles", 0, ">= 1"), ("eta", 1.5, "<= 1"), ("step_size", -1.0, ">= 0"),
    ("no_such", 1, "not a config field")])
def test_bad_values_give_one_line_naming_the_field(field, value, match):
  raw = _digits()
  raw["sampling"]["inverse"][field] = value
  with pytest.raises(ValueError, match=match) as e:
    parse_config(raw)
  assert str(e.value).startswith(f"sampling.inverse.{field}") and "\n" not in str(e.value)


def test_inverse_arguments_give_the_solver_its_method_options_and_the_algorithm_s_own():
  raw = _digits()
  raw["sampling"].update(method="pc", condition="inverse", t_min=0.01)
  raw["sampling"]["inverse"].update(algorithm="smc", n_particles=4)
  method, algorithm, options = schema.inverse_arguments(parse_config(raw))
  assert (method, algorithm) == ("pc", "smc") and options["n_particles"] == 4 and options["ess_threshold"] == 0.5
  assert options["options"].corrector == "none" and options["options"].t_min == 0.01
  raw["sampling"]["inverse"].update(algorithm="ddrm", num_steps=7)
  assert schema.inverse_arguments(parse_config(raw)) == (None, "ddrm", {"num_steps": 7, "eta": 0.85, "eta_b": 1.0,
                                                                        "t_min": 0.01})
  raw["sampling"].update(method="ode")
  raw["sampling"]["inverse"].update(algorithm="dps")
  with pytest.raises(ValueError, match=r"^sampling.method must be one of .* sampling.inverse.algorithm='dps', "
                                       r"got 'ode'$"):
    schema.inverse_arguments(parse_config(raw))


# ------------------------------------------------------------------------- through main.py
@pytest.mark.slow
def test_main_solves_inverse_problems_on_test_digits(tmp_path):
  """Noise-free masks with replacement keep the observation exactly; noisy super-resolution with SMC reports
  finite metrics and NFE per image with the particles; both use the same y for the same config; bad
  operator parameters and algorithm/noise pairs fail in one line naming the field."""
  from PIL import Image

  from tests.test_pipeline import run_main, tiny_flags

  flags = tiny_flags(tmp_path, 2)
  assert run_main(flags + ["--mode=train"]).returncode == 0
  sample = flags + ["--mode=sample", "--config.sampling.condition=inverse", "--config.sampling.method=pc",
                    "--config.sampling.pc.num_steps=3", "--config.sampling.pc.corrector=none",
                    "--config.sampling.denoise=False", "--config.eval.num_samples=10", "--config.eval.batch_size=4"]

  def solve(folder, *extra):
    done = run_main(sample + [f"--eval_folder={folder}", *extra])
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / folder / "inverse_step_2.json") as f:
      metrics = json.load(f)
    with np.load(tmp_path / folder / "inverse_step_2.npz") as f:
      arrays = dict(f)
    return metrics, arrays

  mask, arrays = solve("mask", "--config.sampling.inverse.operator=mask",
                       "--config.sampling.inverse.algorithm=replacement")
  assert mask["nfe"] == 3 and mask["n"] == 10 and mask["m"] == 32 and mask["consistency"] == 0.0
  np.testing.assert_array_equal(arrays["samples"][:, :4], arrays["truth"][:, :4])     # the observed top half
  assert arrays["y"].shape == arrays["samples"].shape == (10, 8, 8, 1)
  picture = Image.open(mask["picture"])
  assert picture.size == (4 * (10 * 9 + 1), 4 * (3 * 9 + 1))           # 10 columns, observed | samples | truth
  noisy = ["--config.sampling.inverse.operator=superres", "--config.sampling.inverse.noise_std=0.1",
           "--config.sampling.inverse.algorithm=smc", "--config.sampling.inverse.n_particles=2"]
  smc, arrays = solve("smc", *noisy)
  assert smc["nfe"] == 2 * 3 and smc["m"] == 16 and arrays["y"].shape == (10, 4, 4, 1)
  for k in ("psnr", "psnr_observed", "consistency", "seconds_per_image", "digits_label_agreement",
            "class_fid_over_floor"):
    assert np.isfinite(smc[k]) and smc[k] >= 0, k
  _, again = solve("smc_again", *noisy[:-1], "--config.sampling.inverse.n_particles=3")
  np.testing.assert_array_equal(arrays["y"], again["y"])                 # the observation noise is fixed
  truth = arrays["truth"].reshape(10, 4, 2, 4, 2, 1).mean(axis=(2, 4))
  residual = (arrays["y"] - truth).reshape(10, -1)
  assert 0.5 < np.sqrt(np.mean(residual ** 2)) / 0.1 < 1.5                # y = A x + 0.1 eps
  for bad, field in (("--config.sampling.inverse.factor=3", "sampling.inverse.factor"),
                     ("--config.sampling.inverse.noise_std=0.1", "sampling.inverse.algorithm='replacement'")):
    done = run_main(sample + ["--config.sampling.inverse.algorithm=replacement", bad])
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith(f"error: {field}"), last
