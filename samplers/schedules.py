"""Noise-level grids of the fast samplers, and the exact NFE budget they share.

A grid is a decreasing float64 array sigma_0 = sigma(T) > ... > sigma_n = sigma_lo of noise levels
sigma = s/a (Karras et al. 2022 eq. 10), identical for every SDE: in x_hat = x/a the probability-flow
ODE is dx_hat/dsigma = (x_hat - D(x_hat; sigma))/sigma whatever the SDE (ibid. eq. 4 with s = 1), so
only the range [sigma_lo, sigma(T)] and the prior depend on it. Three kinds:

* ``"edm"``: uniform in sigma^(1/rho) (Karras et al. 2022 eq. 5);
* ``"logsnr"``: uniform in lambda = -log sigma, the half-log-SNR (Lu et al. 2022a sec. 3.3);
* ``"fitted:<name>"``: a grid fitted to the data (``samplers.fit_grid``, in the spirit of "Align
  Your Steps", Sabour et al. 2024) and saved as JSON: ``<name>`` is a file of ``samplers/grids/``
  (without ``.json``) or a path to one. A fitted grid stored for another step count is resampled by
  AYS's log-linear interpolation (Sabour et al. 2024 sec. 3.3: log sigma linear in the step index),
  and its ends are moved affinely in log sigma onto this sampler's [sigma_lo, sigma(T)] (the identity
  when the sampler's t_min and sigma_floor are those it was fitted with).
"""

from __future__ import annotations

import json
import math
import os

import jax.numpy as jnp
import numpy as np

from samplers import common
from sde_lib import SDE, checks

GRIDS = ("edm", "logsnr", "fitted:<name or path.json>")
GRID_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grids")
FITTED = "fitted:"


def fitted_path(grid: str) -> str:
  """The JSON file of a ``"fitted:<name>"`` grid (a name in ``GRID_DIR`` or a path)."""
  ref = grid[len(FITTED):]
  return ref if ref.endswith(".json") else os.path.join(GRID_DIR, ref + ".json")


def check_grid(grid, name: str = "grid") -> str:
  """``"edm"``, ``"logsnr"`` or ``"fitted:<name>"`` whose file exists; else one-line ValueError."""
  if isinstance(grid, str) and grid in ("edm", "logsnr"):
    return grid
  if isinstance(grid, str) and grid.startswith(FITTED):
    path = fitted_path(grid)
    if not os.path.isfile(path):
      names = sorted(f[:-5] for f in os.listdir(GRID_DIR) if f.endswith(".json")) if os.path.isdir(GRID_DIR) else []
      raise ValueError(f"{name}={grid!r}: no fitted grid file {path} (stored: {['fitted:' + n for n in names]})")
    return grid
  raise ValueError(f"{name} must be one of {list(GRIDS)}, got {grid!r}")


def sigma_ends(sde: SDE, t_min: float, sigma_floor: float) -> tuple[float, float]:
  """(sigma(T), max(sigma_floor, sigma(t_min))) as Python floats (``common.sigma_range``)."""
  hi, lo = common.sigma_range(sde, t_min, sigma_floor)
  return float(hi), float(lo)


def edm_sigmas(sigma_hi, sigma_lo, n: int, rho: float):
  """n + 1 levels uniform in sigma^(1/rho) (Karras et al. 2022 eq. 5). Works on numpy and jax arrays."""
  i = np.arange(n + 1) / n
  return (sigma_hi ** (1 / rho) + i * (sigma_lo ** (1 / rho) - sigma_hi ** (1 / rho))) ** rho


def loglinear_interp(sigmas, n: int) -> np.ndarray:
  """Resamples a decreasing grid to n + 1 levels, log sigma linear in the index (Sabour et al. 2024 sec. 3.3)."""
  log_s = np.log(np.asarray(sigmas, np.float64))
  return np.exp(np.interp(np.linspace(0, 1, n + 1), np.linspace(0, 1, len(log_s)), log_s))


def load_fitted(grid: str) -> dict:
  """The JSON record of a fitted grid: ``{"grids": {"<steps>": [sigma_0, ..., sigma_steps]}, ...}``."""
  with open(fitted_path(grid)) as f:
    record = json.load(f)
  if not isinstance(record.get("grids"), dict) or not record["grids"]:
    raise ValueError(f"{fitted_path(grid)} holds no 'grids' mapping of step counts to sigma lists")
  return record


def fitted_sigmas(grid: str, n: int, sigma_hi: float, sigma_lo: float) -> np.ndarray:
  """n + 1 levels of a fitted grid: the stored grid with n steps, else the one with the nearest step
  count log-linearly resampled; ends moved affinely in log sigma onto [sigma_lo, sigma_hi]."""
  stored = {int(k): np.asarray(v, np.float64) for k, v in load_fitted(grid)["grids"].items()}
  base = stored[min(stored, key=lambda k: (abs(k - n), -k))]
  log_s = np.log(base if len(base) == n + 1 else loglinear_interp(base, n))
  u = (log_s - log_s[0]) / (log_s[-1] - log_s[0])                   # 0 at the top, 1 at the bottom
  return np.exp(math.log(sigma_hi) + u * (math.log(sigma_lo) - math.log(sigma_hi)))


def sigma_grid(sde: SDE, n: int, grid: str = "edm", *, t_min: float = 1e-3, sigma_floor: float = 0.01,
               rho: float = 7.0) -> np.ndarray:
  """n + 1 decreasing noise levels from sigma(T) to sigma_lo = max(sigma_floor, sigma(t_min)): [n + 1] float64."""
  hi, lo = sigma_ends(sde, t_min, sigma_floor)
  if grid == "edm":
    return edm_sigmas(hi, lo, n, rho)
  if grid == "logsnr":
    return np.exp(np.linspace(math.log(hi), math.log(lo), n + 1))     # uniform lambda = -log sigma
  return fitted_sigmas(grid, n, hi, lo)


def times_of(sde: SDE, sigmas) -> jnp.ndarray:
  """t(sigma) for each level, the first pinned to T exactly: [n + 1] float32."""
  return jnp.asarray(sde.t_from_sigma(jnp.asarray(sigmas, jnp.float32))).at[0].set(sde.T)


def steps_for_budget(nfe, denoise: bool, name: str = "nfe") -> int:
  """Steps of a one-evaluation-per-step method for an exact budget: nfe - denoise (>= 1)."""
  nfe = common.check_steps(name, nfe)
  steps = nfe - int(denoise)
  if steps < 1:
    raise ValueError(f"{name}={nfe} leaves no solver step after the final denoising evaluation (need >= 2)")
  return steps


# The option field check of ``grid`` (``sde_lib.checks``).
GRID = checks.labelled(lambda v, where: check_grid(v, where), "choice", options=GRIDS)
