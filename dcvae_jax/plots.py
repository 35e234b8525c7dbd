"""The paper's figures, as pure functions of arrays that each write one PNG and return its path.

Figures (Neloy & Turgeon's numbering):
  reconstructions   normal and anomalous test images over their reconstructions, each with E and A (Figs 1/2)
  latent_umap       encoder means embedded in 2D with UMAP, coloured by class, anomalies marked (Fig 3)
  manifold_2d       decodings on a grid over two latent dimensions, one panel per condition (Figs 4/5)
  traversals        one latent dimension varied at a time around a base code
  roc_curves        one ROC curve per run (held-out class)
  score_histograms  the distribution of each score for normal vs anomalous test images

Nothing here trains or scores: the functions take arrays, and where pictures must be decoded, a callable
``decode(z (n, d), condition: int | None) -> images (n, H, W) in [0, 1]``. ``inference.Model`` builds those
callables from a trained workdir's setup and parameters (jitted, batched); ``dcvae_jax.report`` ties it together.

Figures are drawn with ``matplotlib.figure.Figure`` and the Agg canvas directly (no pyplot, no display, no
global backend switch). Sizes are exact pixel counts (``DPI`` = 100; each function's docstring gives its size).
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np

DPI = 100
# Pixel sizes of the figures (see each function).
RECON_CELL = (90, 118)          # (w, h) of one image column/row in ``reconstructions``
RECON_MARGIN = (70, 50)         # left label column, top title band
SCATTER_SIZE = (640, 540)       # latent_umap
MANIFOLD_PANEL = (400, 430)     # one condition's grid (with its title band)
MANIFOLD_TOP = 46
TRAVERSAL_CELL = 56
TRAVERSAL_MARGIN = (110, 70)    # left label column, top title + value band
ROC_SIZE = (600, 520)
HIST_PANEL = (460, 380)

Decoder = Callable[[np.ndarray, "int | None"], np.ndarray]


def _figure(width_px: int, height_px: int):
  from matplotlib.figure import Figure
  return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=DPI, format="png")  # no bbox_inches="tight": the size stays exactly as documented
  return path


def _frac(px, total):
  return px / total


def _montage(images: np.ndarray, pad: int = 1, value: float = 1.0) -> np.ndarray:
  """(R, C, H, W) -> one (R*(H+pad)+pad, C*(W+pad)+pad) image with ``value`` lines between the tiles."""
  r, c, h, w = images.shape
  out = np.full((r * (h + pad) + pad, c * (w + pad) + pad), value, np.float32)
  for i in range(r):
    for j in range(c):
      out[pad + i * (h + pad):pad + i * (h + pad) + h, pad + j * (w + pad):pad + j * (w + pad) + w] = images[i, j]
  return out


def _images(x) -> np.ndarray:
  """(n, H, W[, 1]) -> float (n, H, W)."""
  x = np.asarray(x, np.float32)
  return x[..., 0] if x.ndim == 4 else x


def _class_colors(num: int):
  import matplotlib
  name = "tab10" if num <= 10 else "tab20" if num <= 20 else "turbo"
  cmap = matplotlib.colormaps[name]
  if name == "turbo":
    return [cmap(i / max(num - 1, 1)) for i in range(num)]
  return [cmap(i) for i in range(num)]


# ----------------------------------------------------------------------------------------------------------
# Figures.

def reconstructions(path: str, images, recons, is_anomaly, *, nelbo, recon, labels=None, per_group: int = 8,
                    title: str | None = None) -> str:
  """Figures 1/2: up to ``per_group`` normal and anomalous test images, each over its reconstruction, with
  its E (negative ELBO) and A (reconstruction score) under the reconstruction.

  images, recons: (N, H, W[, 1]) in [0, 1]; is_anomaly, nelbo, recon, labels: (N,). The first ``per_group``
  images of each group are shown. Size: (70 + 90 k) x (50 + 4 * 118) px, k = the larger group shown.
  """
  images, recons = _images(images), _images(recons)
  is_anomaly = np.asarray(is_anomaly, bool)
  groups = [("normal", np.flatnonzero(~is_anomaly)[:per_group]),
            ("anomalous", np.flatnonzero(is_anomaly)[:per_group])]
  cols = max(1, max(len(idx) for _, idx in groups))
  (cw, ch), (ml, mt) = RECON_CELL, RECON_MARGIN
  width, height = ml + cols * cw, mt + 4 * ch
  fig = _figure(width, height)
  fig.suptitle(title or "Reconstructions (E: negative ELBO, A: reconstruction score)", fontsize=10,
               y=1 - _frac(8, height), va="top")
  img_h = cw - 14  # square image area inside each cell, the rest of the cell holds the text
  for g, (name, idx) in enumerate(groups):
    for r, what in enumerate(("input", "recon")):
      row = 2 * g + r
      top = mt + row * ch
      fig.text(_frac(6, width), 1 - _frac(top + ch / 2, height), f"{name}\n{what}", fontsize=8,
               va="center", ha="left", color="firebrick" if name == "anomalous" else "black")
      for j in range(cols):
        ax = fig.add_axes([_frac(ml + j * cw + 7, width), 1 - _frac(top + 14 + img_h, height),
                           _frac(img_h, width), _frac(img_h, height)])
        ax.set_axis_off()
        if j >= len(idx):
          continue
        k = idx[j]
        ax.imshow((images if what == "input" else recons)[k], cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        if what == "input" and labels is not None:
          ax.set_title(f"class {int(np.asarray(labels)[k])}", fontsize=7, pad=2)
        if what == "recon":
          ax.text(0.5, -0.04, f"E {float(nelbo[k]):.1f}\nA {float(recon[k]):.1f}", fontsize=7,
                  ha="center", va="top", transform=ax.transAxes)
  return _save(fig, path)


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


def latent_umap(path: str, codes, labels, is_anomaly, *, max_points: int = 2000, seed: int = 0,
                method: str = "auto", class_names: Mapping[int, str] | None = None, title: str | None = None) -> str:
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
        ax.scatter(xy[sel, 0], xy[sel, 1], s=22 if anomalous else 8, marker="x" if anomalous else "o",
                   color=colors[int(k)], linewidths=1.0 if anomalous else 0, alpha=0.9 if anomalous else 0.6,
                   label=(class_names or {}).get(int(k), str(int(k))) + (" (anomalous)" if anomalous else ""))
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_xlabel(f"{used} 1", fontsize=8)
  ax.set_ylabel(f"{used} 2", fontsize=8)
  if classes.size <= 20:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, markerscale=1.5, frameon=False)
  head = title or "Latent space (encoder means)"
  ax.set_title(f"{head}: {used}" + (f" ({note})" if note else "") + f", N={codes.shape[0]}", fontsize=9)
  return _save(fig, path)


def manifold_2d(path: str, decode: Decoder, means, stds=None, *, conditions: Sequence | None = None,
                labels: Sequence[str] | None = None, dims=(0, 1), grid: int = 15, title: str | None = None) -> str:
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
  fig.suptitle(title or f"Latent manifold over z{dims[0]} (across) and z{dims[1]} (down)", fontsize=9,
               y=1 - _frac(4, height), va="top")
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
    ax = fig.add_axes([_frac(left + 10, width), 1 - _frac(top + 24 + size, height),
                       _frac(size, width), _frac(size, height)])
    ax.imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(labels[p], fontsize=9, pad=3)
  return _save(fig, path)


def traversals(path: str, decode: Decoder, base, *, condition=None, dims: Sequence[int] | None = None,
               values=None, means=None, stds=None, dim_labels: Sequence[str] | None = None,
               title: str | None = None) -> str:
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
    z[i * cols:(i + 1) * cols, j] = means[j] + stds[j] * values
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
    fig.text(_frac(ml + (k + 0.5) * cell, width), 1 - _frac(mt - 6, height), f"{v:+.1f}σ", fontsize=7,
             ha="center", va="bottom")
  return _save(fig, path)


def roc_curves(path: str, curves: Mapping[str, tuple], *, title: str | None = None) -> str:
  """One ROC curve per entry ``label -> (score (N,), is_anomaly (N,))`` (anomaly = positive, larger score =
  more anomalous), AUROC in the legend (shown for up to 15 curves). Size: 600 x 520 px."""
  from sklearn.metrics import roc_auc_score, roc_curve
  fig = _figure(*ROC_SIZE)
  ax = fig.add_axes([0.1, 0.1, 0.6, 0.8])
  colors = _class_colors(len(curves))
  aucs = []
  for (label, (score, is_anomaly)), color in zip(curves.items(), colors):
    is_anomaly = np.asarray(is_anomaly, bool)
    fpr, tpr, _ = roc_curve(is_anomaly, score)
    auc = roc_auc_score(is_anomaly, score)
    aucs.append(auc)
    ax.plot(fpr, tpr, color=color, lw=1.2, label=f"{label}  {auc:.3f}")
  ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls="--")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_xlabel("false positive rate", fontsize=8)
  ax.set_ylabel("true positive rate", fontsize=8)
  ax.tick_params(labelsize=7)
  if len(curves) <= 15:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False, title="run  AUROC",
              title_fontsize=7)
  mean = f" (mean AUROC {np.mean(aucs):.3f})" if aucs else ""
  ax.set_title((title or "ROC per held-out class") + mean, fontsize=9)
  return _save(fig, path)


def score_histograms(path: str, scores: Mapping[str, tuple], *, bins: int = 40, title: str | None = None) -> str:
  """One panel per entry ``name -> (score (N,), is_anomaly (N,))``: histograms (densities) of the score
  for normal and anomalous images on shared bins (range cut to the 0.5-99.5 percentiles; values outside
  are counted in the end bins). Size: 460 P x 380 px, P panels."""
  n = max(len(scores), 1)
  pw, ph = HIST_PANEL
  fig = _figure(n * pw, ph)
  if title:
    fig.suptitle(title, fontsize=10, y=0.99, va="top")
  for p, (name, (score, is_anomaly)) in enumerate(scores.items()):
    score = np.asarray(score, np.float64)
    is_anomaly = np.asarray(is_anomaly, bool)
    lo, hi = np.percentile(score, [0.5, 99.5])
    if not hi > lo:
      lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    clipped = np.clip(score, lo, hi)
    ax = fig.add_axes([(p + 0.16) / n, 0.13, 0.78 / n, 0.72])
    for anomalous, color, label in ((False, "tab:blue", "normal"), (True, "tab:red", "anomalous")):
      sel = is_anomaly == anomalous
      if sel.any():
        ax.hist(clipped[sel], bins=edges, density=True, alpha=0.55, color=color,
                label=f"{label} (n={int(sel.sum())}, mean {score[sel].mean():.1f})")
    ax.set_xlabel(name, fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
  return _save(fig, path)
