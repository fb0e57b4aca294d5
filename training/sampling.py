"""The one place config.sampling becomes sampler options."""

from __future__ import annotations

import samplers


def sampler_options(sampling, continuous: bool = True) -> tuple[str, dict]:
  """(method, options) for ``samplers.get_sampler`` from config.sampling (score_sde's field names).

  A discrete-ladder model (``continuous=False``: training.continuous) is sampled by PC on its own
  ladder (``ladder=True``, N = the SDE's N), as score_sde does.
  """
  method = str(sampling.method).lower()
  n = int(sampling.get("n_steps", 0))
  eps = float(sampling.get("eps", 1e-3))
  if method == "pc":
    options = dict(predictor=sampling.predictor, corrector=sampling.corrector, snr=sampling.snr,
                   n_steps=sampling.n_steps_each, denoise=sampling.noise_removal,
                   probability_flow=sampling.probability_flow, eps=eps)
    if not continuous:
      options["ladder"] = True
    elif n:
      options["N"] = n
  elif method == "ode":
    options = dict(rtol=sampling.rtol, atol=sampling.atol, denoise=sampling.noise_removal, eps=eps,
                   n_steps=n or None)
  elif method in ("edm_heun", "dpm_solver_pp"):
    options = dict(eps=eps, **({"N": n} if n else {}))
  elif method == "ald":
    options = dict(eps=eps, denoise=sampling.noise_removal, **({"n_levels": n} if n else {}))
  else:
    raise ValueError(f"sampling.method must be one of {sorted(samplers.METHODS)}, got {sampling.method!r}")
  return method, options


def get_sampler_from_config(config, sde, shape):
  method, options = sampler_options(config.sampling, bool(config.training.continuous))
  return samplers.get_sampler(sde, shape, method, **options)
