"""Pictures of samples as PNG: image grids, and scatter plots of low-dimensional (toy) samples."""

from __future__ import annotations

import math
import os

import numpy as np

from evaluation.pixels import to_unit_range


def save_grid(images: np.ndarray, path: str, *, scale: int = 1, cols: int | None = None) -> str:
  """Tiles images [N, H, W, C] in [0, 1] into a grid PNG (1 px gaps), ``cols`` wide (default: near-square);
  returns the path."""
  from PIL import Image

  n, h, w, c = images.shape
  cols = cols or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / cols))
  grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.float32)
  for i, img in enumerate(images):
    r, q = divmod(i, cols)
    grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = img
  pixels = np.round(grid * 255).astype(np.uint8)
  picture = Image.fromarray(pixels.squeeze(-1) if c == 1 else pixels)
  if scale > 1:
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  picture.save(path)
  return path


def save_rows(rows: list[np.ndarray], path: str, *, scale: int = 1) -> str:
  """Stacks equal-length image lists [N, H, W, C] in [0, 1] as the rows of one PNG (1 px gaps); returns the path."""
  return save_grid(np.concatenate(rows), path, scale=scale, cols=len(rows[0]))


def save_scatter(points: np.ndarray, path: str) -> str:
  """Scatter plot PNG of the first two coordinates of points [N, D]."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
  ax.scatter(points[:, 0], points[:, 1], s=1, c="tab:blue")
  ax.set_aspect("equal")
  ax.set_title(f"{len(points)} samples (x0, x1)", fontsize=9)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, bbox_inches="tight")
  plt.close(fig)
  return path


def save_samples_picture(x: np.ndarray, data_config, path: str) -> str:
  """Model-space samples as a PNG: a grid of up to 100 images (4x magnified), or a 2-D scatter plot."""
  x = np.asarray(x)
  if x.ndim == 2:
    return save_scatter(x, path)
  return save_grid(to_unit_range(x[:100], bool(data_config.centered)), path, scale=4)
