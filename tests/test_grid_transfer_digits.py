"""The route benchmarks/samplers/grid_transfer_digits.py evaluates a model-fitted grid by: a grid saved with
``save_grid`` over the range the configured sampler uses (t_min, sigma_floor of its typed options), given as
``--config.sampling.<method>.grid=fitted:<path>`` with ``--config.sampling.nfe``, is sampled on exactly the saved
levels (no end move: the fit used the sampler's own t_min and sigma_floor) at exactly the asked NFE."""

import os

import numpy as np
import pytest

import samplers
import sde_lib
from samplers import fit_grid, schedules
from schema import as_config, load_config_file
from schema.sampling import sampler_options


CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "vp", "digits.py")


@pytest.mark.parametrize("method,nfe", [("unipc", 10), ("dpm_solver_pp", 20), ("edm_heun", 11)])
def test_a_saved_grid_reaches_the_digits_sampler_through_the_config(method, nfe, tmp_path):
  config = load_config_file(CONFIG)
  config.sampling.method = method
  sde = sde_lib.VPSDE()
  _, defaults = sampler_options(as_config(config))                 # the range the sampler will use
  hi, lo = schedules.sigma_ends(sde, defaults.t_min, defaults.sigma_floor)
  n = fit_grid.grid_levels(method, nfe)
  u = np.linspace(0, 1, n + 1) ** 1.7                               # not log-linear: a resampled grid would differ
  saved = np.exp(np.log(hi) + u * (np.log(lo) - np.log(hi)))
  path = tmp_path / f"{method}.json"
  fit_grid.save_grid(str(path), {n: saved}, method=method, nfe=nfe)
  config.sampling.method = method
  config.sampling.nfe = nfe
  config.sampling[method].grid = f"fitted:{path}"
  name, options = sampler_options(as_config(config))
  stepper = samplers.get_stepper(sde, (2, 8, 8, 1), name, options)
  assert options.thresholding == "static"                          # the config's default is kept
  assert stepper.nfe == nfe
  levels = stepper.sigma_list if method == "edm_heun" else stepper.sigmas
  np.testing.assert_allclose(np.asarray(levels), saved, rtol=1e-5)
