"""The latent-space figures: the 2D embedding of codes (Fig 3), the 2D manifold (Figs 4/5) and latent
traversals. Same conventions as :mod:`dcvae_jax.report.plots` (one PNG per call, exact pixel sizes), which re-exports
them."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from dcvae_jax.report.style import (
  MANIFOLD_PANEL,
  MANIFOLD_TOP,
  SCATTER_SIZE,
  TRAVERSAL_CELL,
  TRAVERSAL_MARGIN,
  Decoder,
  _class_colors,
  _figure,
  _frac,
  _images,
  _montage,
  _save,
)


def embed_2d(codes, *, method: str = "auto", seed: int = 0, min_umap_points: int = 100):
  """(N, d) -> ((N, 2), name of the method used, note). UMAP where possible, else PCA (note says why)."""
  codes = np.asarray(codes, np.float64)
  if codes.shape[1] == 1:
    codes = np.concatenate([codes, np.zeros_like(codes)], axis=1)
  note = ""
  if method in ("auto", "umap"):
    if codes.shape[0] < min_umap_points:
      note = f"N={codes.shape[0]} too few for UMAP"
    else:
      try:
        with warnings.catch_warnings():
          warnings.simplefilter("ignore")
          import umap  # noqa: PLC0415 - optional dependency (the `plots` extra), slow to import

          reducer = umap.UMAP(n_neighbors=min(15, codes.shape[0] - 1), min_dist=0.1, random_state=seed)
          return reducer.fit_transform(codes.astype(np.float32)), "UMAP", ""
      except ImportError:
        if method == "umap":
          raise
        note = "umap-learn not installed"
  centred = codes - codes.mean(axis=0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt[:2].T, "PCA", note


def latent_umap(
  path: str,
  codes,
  labels,
  is_anomaly,
  *,
  max_points: int = 2000,
  seed: int = 0,
  method: str = "auto",
  class_names: Mapping[int, str] | None = None,
  title: str | None = None,
) -> str:
  """Figure 3: codes (N, d) embedded in 2D (UMAP; PCA when umap-learn is missing or N < 100, said in the
  title), coloured by class; anomalies drawn as crosses. At most ``max_points`` points (a fixed random
  subset). Size: 640 x 540 px."""
  codes, labels = np.asarray(codes), np.asarray(labels)
  is_anomaly = np.asarray(is_anomaly, bool)
  if codes.shape[0] > max_points:
    keep = np.sort(np.random.default_rng(seed).choice(codes.shape[0], max_points, replace=False))
    codes, labels, is_anomaly = codes[keep], labels[keep], is_anomaly[keep]
  xy, used, note = embed_2d(codes, method=method, seed=seed)
  fig = _figure(*SCATTER_SIZE)
  ax = fig.add_axes([0.08, 0.08, 0.68, 0.82])
  classes = np.unique(labels)
  colors = _class_colors(int(classes.max()) + 1 if classes.size else 1)
  for k in classes:
    for anomalous in (False, True):
      sel = (labels == k) & (is_anomaly == anomalous)
      if sel.any():
        ax.scatter(
          xy[sel, 0],
          xy[sel, 1],
          s=22 if anomalous else 8,
          marker="x" if anomalous else "o",
          color=colors[int(k)],
          linewidths=1.0 if anomalous else 0,
          alpha=0.9 if anomalous else 0.6,
          label=(class_names or {}).get(int(k), str(int(k))) + (" (anomalous)" if anomalous else ""),
        )
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_xlabel(f"{used} 1", fontsize=8)
  ax.set_ylabel(f"{used} 2", fontsize=8)
  if classes.size <= 20:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, markerscale=1.5, frameon=False)
  head = title or "Latent space (encoder means)"
  ax.set_title(f"{head}: {used}" + (f" ({note})" if note else "") + f", N={codes.shape[0]}", fontsize=9)
  return _save(fig, path)


def manifold_2d(
  path: str,
  decode: Decoder,
  means,
  stds=None,
  *,
  conditions: Sequence | None = None,
  labels: Sequence[str] | None = None,
  dims=(0, 1),
  grid: int = 15,
  title: str | None = None,
) -> str:
  """Figures 4/5: decodings of a ``grid`` x ``grid`` lattice over latent dimensions ``dims``, one panel per
  condition. Panel k holds z = means[k] except z[dims] = means[k, dims] + stds[k, dims] * Phi^-1(u), u on an
  even grid in (0, 1) (the prior's quantiles, as in Kingma & Welling); the other dimensions stay at the
  condition's prior mean (0 for N(0, I)). means, stds: (K, d) (stds default 1); conditions: K ids passed to
  ``decode`` (None = unconditional). Size: min(K, 3) * 400 x (46 + ceil(K / 3) * 430) px."""
  from scipy.stats import norm

  means = np.atleast_2d(np.asarray(means, np.float32))
  stds = np.ones_like(means) if stds is None else np.atleast_2d(np.asarray(stds, np.float32))
  k_panels = means.shape[0]
  conditions = list(conditions) if conditions is not None else [None] * k_panels
  labels = list(labels) if labels is not None else [""] * k_panels
  ncols = min(k_panels, 3)
  nrows = -(-k_panels // 3)
  pw, ph = MANIFOLD_PANEL
  width, height = ncols * pw, MANIFOLD_TOP + nrows * ph
  fig = _figure(width, height)
  fig.suptitle(
    title or f"Latent manifold over z{dims[0]} (across) and z{dims[1]} (down)",
    fontsize=9,
    y=1 - _frac(4, height),
    va="top",
  )
  q = norm.ppf(np.linspace(0.5 / grid, 1 - 0.5 / grid, grid)).astype(np.float32)
  for p in range(k_panels):
    z = np.tile(means[p], (grid * grid, 1))
    row_v, col_v = np.meshgrid(q, q, indexing="ij")
    z[:, dims[0]] = means[p, dims[0]] + stds[p, dims[0]] * col_v.ravel()
    z[:, dims[1]] = means[p, dims[1]] - stds[p, dims[1]] * row_v.ravel()  # up = larger z, like a plot axis
    imgs = _images(decode(z, conditions[p]))
    tile = _montage(imgs.reshape((grid, grid, *imgs.shape[1:])), pad=0)
    r, c = divmod(p, 3)
    left, top = c * pw, MANIFOLD_TOP + r * ph
    size = pw - 20
    ax = fig.add_axes(
      [_frac(left + 10, width), 1 - _frac(top + 24 + size, height), _frac(size, width), _frac(size, height)]
    )
    ax.imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(labels[p], fontsize=9, pad=3)
  return _save(fig, path)


def traversals(
  path: str,
  decode: Decoder,
  base,
  *,
  condition=None,
  dims: Sequence[int] | None = None,
  values=None,
  means=None,
  stds=None,
  dim_labels: Sequence[str] | None = None,
  title: str | None = None,
) -> str:
  """Latent traversals: row j varies latent dimension dims[j] over ``values`` (in prior standard
  deviations around the prior mean: z_j = means_j + stds_j * v; default v = -2..2, 9 steps), the other
  dimensions held at ``base`` (d,). Size: (110 + 56 V) x (70 + 56 R) px, V values, R rows."""
  base = np.asarray(base, np.float32)
  d = base.shape[0]
  dims = list(range(d)) if dims is None else list(dims)
  values = np.linspace(-2.0, 2.0, 9, dtype=np.float32) if values is None else np.asarray(values, np.float32)
  means = np.zeros(d, np.float32) if means is None else np.asarray(means, np.float32)
  stds = np.ones(d, np.float32) if stds is None else np.asarray(stds, np.float32)
  rows, cols = len(dims), len(values)
  z = np.tile(base, (rows * cols, 1))
  for i, j in enumerate(dims):
    z[i * cols : (i + 1) * cols, j] = means[j] + stds[j] * values
  imgs = _images(decode(z, condition))
  tile = _montage(imgs.reshape((rows, cols, *imgs.shape[1:])), pad=1)
  cell, (ml, mt) = TRAVERSAL_CELL, TRAVERSAL_MARGIN
  width, height = ml + cols * cell, mt + rows * cell
  fig = _figure(width, height)
  fig.suptitle(title or "Latent traversals", fontsize=10, y=1 - _frac(6, height), va="top")
  ax = fig.add_axes([_frac(ml, width), 0, _frac(cols * cell, width), _frac(rows * cell, height)])
  ax.imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
  ax.set_axis_off()
  names = list(dim_labels) if dim_labels is not None else [f"z{j}" for j in dims]
  for i, name in enumerate(names):
    fig.text(_frac(6, width), 1 - _frac(mt + (i + 0.5) * cell, height), name, fontsize=8, va="center")
  for k, v in enumerate(values):
    fig.text(
      _frac(ml + (k + 0.5) * cell, width), 1 - _frac(mt - 6, height), f"{v:+.1f}σ", fontsize=7, ha="center", va="bottom"
    )
  return _save(fig, path)
