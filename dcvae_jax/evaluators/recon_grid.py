"""Image grids in numpy alone: the montage of tiles that the report's figures draw with, and the reconstruction
grid that the ``tensorboard`` evaluator writes for every scored run (evaluators/tensorboard.py)."""

from __future__ import annotations

import numpy as np


def montage(images: np.ndarray, pad: int = 1, value: float = 1.0) -> np.ndarray:
  """(R, C, H, W[, 3]) -> one (R*(H+pad)+pad, C*(W+pad)+pad[, 3]) image with ``value`` lines between the tiles."""
  r, c, h, w = images.shape[:4]
  out = np.full((r * (h + pad) + pad, c * (w + pad) + pad, *images.shape[4:]), value, np.float32)
  for i in range(r):
    for j in range(c):
      out[pad + i * (h + pad) : pad + i * (h + pad) + h, pad + j * (w + pad) : pad + j * (w + pad) + w] = images[i, j]
  return out


def reconstruction_grid(inputs: np.ndarray, recons: np.ndarray, is_anomaly: np.ndarray, per_group: int = 8):
  """One grey image: up to ``per_group`` normal inputs (row 1) over their reconstructions (row 2), then as many
  anomalous ones (rows 3 and 4), 1-pixel white lines between the tiles; a group with fewer images leaves its
  cells white. inputs, recons: (N, H, W) in [0, 1]; is_anomaly: (N,)."""
  inputs, recons = np.asarray(inputs, np.float32), np.asarray(recons, np.float32)
  is_anomaly = np.asarray(is_anomaly, bool)
  groups = [np.flatnonzero(~is_anomaly)[:per_group], np.flatnonzero(is_anomaly)[:per_group]]
  cols = max(1, *(len(g) for g in groups))
  tiles = np.ones((4, cols, *inputs.shape[1:]), np.float32)
  for r, idx in enumerate(groups):
    tiles[2 * r, : len(idx)] = inputs[idx]
    tiles[2 * r + 1, : len(idx)] = recons[idx]
  return montage(tiles)
