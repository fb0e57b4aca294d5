"""Model-space images to the [0, 1] pixels every metric (and every picture) reads."""

from __future__ import annotations

import numpy as np


def to_unit_range(x: np.ndarray, centered: bool) -> np.ndarray:
  """Model-space images ([-1, 1] if centered, else [0, 1]) to [0, 1], clipped."""
  x = np.asarray(x, np.float32)
  return np.clip((x + 1.0) / 2.0 if centered else x, 0.0, 1.0)
