"""The option vocabulary table of the guide (docs/samplers.md), generated from the samplers' options dataclasses.

``markdown_table()`` renders one row per shared option name (its meaning below) and one column per method of
``samplers.METHODS`` with the option's default; a method's options outside the shared vocabulary are listed
in the last row. tests/test_steps.py checks that docs/samplers.md holds exactly this table, so the defaults
shown cannot drift from the code, and a new sampler appears in it without an edit here.
"""

from __future__ import annotations

import dataclasses
import math

from samplers.registry import METHODS

MEANINGS = {
    "num_steps": "grid steps (PC predictor steps, fixed ODE steps, ALD noise levels, EDM levels); None: PC the "
                 "SDE's N, ODE adaptive steps",
    "nfe": "exact budget of score evaluations, final denoising included; overrides `num_steps` (None: unset)",
    "t_min": "the smallest time reached",
    "denoise": "finish with Tweedie's E[x₀ \\| x(t_min)] (+1 NFE; on a ladder: the last step's mean)",
    "corrector_steps": "corrector / Langevin steps per level",
    "sigma_floor": "lowest noise level of the σ-grid samplers (not the VE SDE's `sigma_min`)",
    "grid": "noise levels: `edm` (ρ-grid), `logsnr` (uniform log-SNR), `fitted:<name>` "
            "(`samplers/grids/<name>.json` or a path)",
    "order": "multistep order (DPM-Solver++ 1/2/3M; UniPC's predictor order p, corrector p + 1)",
    "lower_order_final": "lower orders on the last multistep steps",
    "langevin_step_size": "ALD's ε (None: NCSN's 0.2 σ_L²)",
    "langevin_step_rule": "PC Langevin step: `batch` (score_sde) or `expected` (batch-independent)",
    "checkpoint": "`jax.checkpoint` on each step: less memory when differentiating through the sampler",
    "adjoint": "how `jax.grad` goes through the diffrax solve: `recursive_checkpoint`, `backsolve`, `direct`",
}


def _cell(value) -> str:
  if value is None:
    return "None"
  if isinstance(value, float) and math.isinf(value):
    return "inf"
  return str(value)


def markdown_table() -> str:
  """The vocabulary table (markdown, no trailing newline)."""
  methods = list(METHODS)
  defaults = {m: {f.name: f.default for f in dataclasses.fields(METHODS[m].options)} for m in methods}
  lines = ["| name | meaning | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
  for name, meaning in MEANINGS.items():
    cells = [_cell(defaults[m][name]) if name in defaults[m] else "" for m in methods]
    lines.append(f"| `{name}` | {meaning} | " + " | ".join(cells) + " |")
  others = [", ".join(f"`{n}`" for n in defaults[m] if n not in MEANINGS) for m in methods]
  lines.append("| others | the method's own options (its options dataclass, `samplers.METHODS[name].options`) | "
               + " | ".join(others) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown_table())
