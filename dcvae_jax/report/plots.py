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
callables from a trained workdir's setup and parameters (jitted, batched); ``dcvae_jax.report.html`` ties it together.

Figures are drawn with ``matplotlib.figure.Figure`` and the Agg canvas directly (no pyplot, no display, no
global backend switch). Sizes are exact pixel counts (``DPI`` = 100; each function's docstring gives its size).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dcvae_jax.report.plots_latent import embed_2d, latent_umap, manifold_2d, traversals  # noqa: F401 - re-exported
from dcvae_jax.report.style import (  # noqa: F401 - DPI, the sizes and Decoder are part of this module's API
  DPI,
  HIST_PANEL,
  RECON_CELL,
  RECON_MARGIN,
  ROC_SIZE,
  Decoder,
  _class_colors,
  _figure,
  _frac,
  _images,
  _save,
)

# ----------------------------------------------------------------------------------------------------------
# Figures.


def reconstructions(
  path: str, images, recons, is_anomaly, *, nelbo, recon, labels=None, per_group: int = 8, title: str | None = None
) -> str:
  """Figures 1/2: up to ``per_group`` normal and anomalous test images, each over its reconstruction, with
  its E (negative ELBO) and A (reconstruction score) under the reconstruction.

  images, recons: (N, H, W[, 1]) in [0, 1]; is_anomaly, nelbo, recon, labels: (N,). The first ``per_group``
  images of each group are shown. Size: (70 + 90 k) x (50 + 4 * 118) px, k = the larger group shown.
  """
  images, recons = _images(images), _images(recons)
  is_anomaly = np.asarray(is_anomaly, bool)
  groups = [("normal", np.flatnonzero(~is_anomaly)[:per_group]), ("anomalous", np.flatnonzero(is_anomaly)[:per_group])]
  cols = max(1, max(len(idx) for _, idx in groups))
  (cw, ch), (ml, mt) = RECON_CELL, RECON_MARGIN
  width, height = ml + cols * cw, mt + 4 * ch
  fig = _figure(width, height)
  fig.suptitle(
    title or "Reconstructions (E: negative ELBO, A: reconstruction score)",
    fontsize=10,
    y=1 - _frac(8, height),
    va="top",
  )
  img_h = cw - 14  # square image area inside each cell, the rest of the cell holds the text
  for g, (name, idx) in enumerate(groups):
    for r, what in enumerate(("input", "recon")):
      row = 2 * g + r
      top = mt + row * ch
      fig.text(
        _frac(6, width),
        1 - _frac(top + ch / 2, height),
        f"{name}\n{what}",
        fontsize=8,
        va="center",
        ha="left",
        color="firebrick" if name == "anomalous" else "black",
      )
      for j in range(cols):
        ax = fig.add_axes(
          [
            _frac(ml + j * cw + 7, width),
            1 - _frac(top + 14 + img_h, height),
            _frac(img_h, width),
            _frac(img_h, height),
          ]
        )
        ax.set_axis_off()
        if j >= len(idx):
          continue
        k = idx[j]
        ax.imshow((images if what == "input" else recons)[k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if what == "input" and labels is not None:
          ax.set_title(f"class {int(np.asarray(labels)[k])}", fontsize=7, pad=2)
        if what == "recon":
          ax.text(
            0.5,
            -0.04,
            f"E {float(nelbo[k]):.1f}\nA {float(recon[k]):.1f}",
            fontsize=7,
            ha="center",
            va="top",
            transform=ax.transAxes,
          )
  return _save(fig, path)


def roc_curves(path: str, curves: Mapping[str, tuple], *, title: str | None = None) -> str:
  """One ROC curve per entry ``label -> (score (N,), is_anomaly (N,))`` (anomaly = positive, larger score =
  more anomalous), AUROC in the legend (shown for up to 15 curves). Size: 600 x 520 px."""
  from sklearn.metrics import roc_auc_score, roc_curve

  fig = _figure(*ROC_SIZE)
  ax = fig.add_axes([0.1, 0.1, 0.6, 0.8])
  colors = _class_colors(len(curves))
  aucs = []
  for (label, (score, is_anomaly)), color in zip(curves.items(), colors, strict=True):
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
    ax.legend(
      loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False, title="run  AUROC", title_fontsize=7
    )
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
        ax.hist(
          clipped[sel],
          bins=edges,
          density=True,
          alpha=0.55,
          color=color,
          label=f"{label} (n={int(sel.sum())}, mean {score[sel].mean():.1f})",
        )
    ax.set_xlabel(name, fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
  return _save(fig, path)
