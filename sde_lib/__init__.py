"""Forward SDEs of score-based generative modelling and their score-matching losses.

Public names: ``SDE`` (abstract), ``VESDE``, ``VPSDE``, ``subVPSDE``, ``get_sde``, ``ReverseSDE``,
``get_loss_fn``, ``get_per_example_loss_fn``, ``perturb``.
"""

from sde_lib.base import SDE, ReverseSDE, ScoreFn, batch_broadcast
from sde_lib.losses import get_loss_fn, get_per_example_loss_fn, perturb
from sde_lib.ve import VESDE
from sde_lib.vp import VPSDE, subVPSDE

SDES = {"vesde": VESDE, "vpsde": VPSDE, "subvpsde": subVPSDE}


def get_sde(config) -> SDE:
  """Builds the SDE named by ``config.training.sde`` from the ``config.model`` fields of score_sde.

  VE reads ``model.sigma_min``, ``model.sigma_max``; VP and sub-VP read ``model.beta_min``,
  ``model.beta_max``; all read ``model.num_scales`` as N.

  Raises:
    ValueError: an unknown SDE name (the valid ones are listed) or invalid parameters.
  """
  name = str(config.training.sde).lower()
  if name not in SDES:
    raise ValueError(f"training.sde must be one of {sorted(SDES)}, got {config.training.sde!r}")
  m = config.model
  if name == "vesde":
    return VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)
  return SDES[name](beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)


__all__ = ["SDE", "ReverseSDE", "ScoreFn", "VESDE", "VPSDE", "subVPSDE", "SDES", "get_sde", "get_loss_fn",
           "get_per_example_loss_fn", "perturb", "batch_broadcast"]
