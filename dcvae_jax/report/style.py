"""Shared drawing conventions of the figures: exact pixel sizes (``DPI`` = 100), the Agg canvas without pyplot,
image montages and class colours."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from dcvae_jax.evaluators.recon_grid import montage as _montage  # noqa: F401 (the figures' montage)

DPI = 100
# Pixel sizes of the figures (see each function).
RECON_CELL = (90, 118)  # (w, h) of one image column/row in ``reconstructions``
RECON_MARGIN = (70, 50)  # left label column, top title band
SCATTER_SIZE = (640, 540)  # latent_umap
MANIFOLD_PANEL = (400, 430)  # one condition's grid (with its title band)
MANIFOLD_TOP = 46
TRAVERSAL_CELL = 56
TRAVERSAL_MARGIN = (110, 70)  # left label column, top title + value band
ROC_SIZE = (600, 520)
HIST_PANEL = (460, 380)

Decoder = Callable[[np.ndarray, "int | None"], np.ndarray]


def _figure(width_px: int, height_px: int):
  from matplotlib.figure import Figure

  return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"  # whole or not at all: a rename once the PNG is written
  try:
    fig.savefig(tmp, dpi=DPI, format="png")  # no bbox_inches="tight": the size stays exactly as documented
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _frac(px, total):
  return px / total


def _images(x) -> np.ndarray:
  """(n, H, W[, 1]) -> float (n, H, W) (grey, drawn with a grey colour map); colour (n, H, W, 3) stays (RGB)."""
  x = np.asarray(x, np.float32)
  return x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x


def _class_colors(num: int):
  import matplotlib

  name = "tab10" if num <= 10 else "tab20" if num <= 20 else "turbo"
  cmap = matplotlib.colormaps[name]
  if name == "turbo":
    return [cmap(i / max(num - 1, 1)) for i in range(num)]
  return [cmap(i) for i in range(num)]
