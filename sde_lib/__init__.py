"""Forward SDEs of score-based generative modelling and their score-matching losses.

Public names: ``SDE`` (abstract), ``VESDE``, ``VPSDE``, ``subVPSDE``, ``ScheduleSDE`` (any x(t) = alpha(t) x(0) +
sigma(t) eps), ``RectifiedFlow``, ``CosineSDE``, ``get_sde``, ``ReverseSDE``,
``get_loss_fn``, ``get_per_example_loss_fn``, ``perturb``.
"""

from sde_lib.base import SDE, ReverseSDE, ScoreFn, batch_broadcast
from sde_lib.losses import get_loss_fn, get_per_example_loss_fn, perturb
from sde_lib.schedule import CosineSDE, RectifiedFlow, ScheduleSDE
from sde_lib.ve import VESDE
from sde_lib.vp import VPSDE, subVPSDE

SDES = {"vesde": VESDE, "vpsde": VPSDE, "subvpsde": subVPSDE, "rectified_flow": RectifiedFlow, "cosine": CosineSDE}


# score_sde's layout: the SDE's name in config.training.sde and its parameters in config.model.
_PARAMETERS = {"vesde": ("sigma_min", "sigma_max"), "vpsde": ("beta_min", "beta_max"), "subvpsde": ("beta_min", "beta_max"),
               "rectified_flow": (), "cosine": ()}


def get_sde(config) -> SDE:
  """Builds the SDE of a typed sde section (``schema.Sde``: name, sigma_min, sigma_max, beta_min, beta_max,
  num_scales), of a typed config holding one (``config.sde``), or of a ConfigDict in score_sde's layout
  (``training.sde`` and the ``model`` fields). VE reads sigma_min and sigma_max, VP and sub-VP beta_min and
  beta_max; rectified_flow and cosine have no parameters; all read num_scales as N.

  Raises:
    ValueError: an unknown SDE name (the valid ones are listed) or invalid parameters.
  """
  section = getattr(config, "sde", config)
  if hasattr(section, "name") and hasattr(section, "num_scales"):
    where, name, params = "sde.name", section.name, section
  else:
    where, name, params = "training.sde", config.training.sde, config.model
  if str(name).lower() not in SDES:
    raise ValueError(f"{where} must be one of {sorted(SDES)}, got {name!r}")
  name = str(name).lower()
  return SDES[name](*(getattr(params, p) for p in _PARAMETERS[name]), N=params.num_scales)


__all__ = ["SDE", "ReverseSDE", "ScoreFn", "VESDE", "VPSDE", "subVPSDE", "ScheduleSDE", "RectifiedFlow", "CosineSDE", "SDES", "get_sde", "get_loss_fn",
           "get_per_example_loss_fn", "perturb", "batch_broadcast"]
