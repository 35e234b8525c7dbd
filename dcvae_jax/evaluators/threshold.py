"""A decision threshold with a meaning, set on held-out validation images that no run trained on, and the
precision / recall / F1 / false-positive rate of the decision on test images. Pure numpy.

Decision: an image is flagged anomalous iff its score s > t (larger = more anomalous). A non-finite score (a
diverged model) counts as +inf, i.e. as the most anomalous, as ``metrics.detection_metrics`` ranks it: it is always
flagged, and it sorts above every finite score when t is set.

The threshold is an upper order statistic. Of n scores sorted increasingly, s_(1) <= ... <= s_(n), and a rate r in
(0, 1),
    t(r) = s_(k),   k = n - floor(r n)      (floor computed with a 1e-9 tolerance, so 0.05 x 100 counts as 5),
the smallest sample value with at most floor(r n) of the n scores strictly above it; hence the fraction of the n
scores flagged is <= r (equal to floor(r n) / n without ties). k = ceil((1 - r) n), so t(r) equals
``numpy.quantile(s, 1 - r, method="inverted_cdf")`` (the smallest s with empirical CDF >= 1 - r).

Two ways to choose r and the scores (``eval.threshold_fpr``, ``eval.contamination``):
  fpr            (default) the scores of the run's NORMAL validation images and r = the target false-positive rate
                 on normal data: at most that fraction of normal validation images is flagged.
  contamination  (PyOD's ``contamination``) the scores of ALL the run's validation images (normal and anomalous,
                 in the proportions the validation split holds them) and r = the assumed fraction of anomalies:
                 that fraction of them is flagged. PyOD sets its threshold_ with np.percentile(scores, 100 (1 - r))
                 (linear interpolation between order statistics) on its training scores; here it is the order
                 statistic t(r) above, the same convention as fpr, which differs by less than one order statistic.
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("fpr", "contamination")


def ranked(scores) -> np.ndarray:
  """float64 scores with every non-finite value as +inf (the most anomalous)."""
  s = np.asarray(scores, np.float64).reshape(-1)
  return np.where(np.isfinite(s), s, np.inf)


def upper_order_statistic(scores, rate: float) -> float:
  """t(rate) = s_(k), k = n - floor(rate n) (see the module docstring); NaN for no scores."""
  s = np.sort(ranked(scores))
  n = s.size
  if n == 0:
    return float("nan")
  if not 0.0 < rate < 1.0:
    raise ValueError(f"rate must be in (0, 1), got {rate}")
  above = math.floor(rate * n + 1e-9)
  return float(s[n - above - 1])


def flagged(scores, threshold: float) -> np.ndarray:
  """bool: which scores are flagged anomalous at ``threshold`` (s > t; non-finite scores always are)."""
  s = np.asarray(scores, np.float64)
  return ~np.isfinite(s) | (s > threshold)


def decision_rates(scores, is_anomaly, threshold: float) -> dict:
  """Precision, recall, F1 and false-positive rate of flagging ``scores`` > threshold, anomalies positive.

  precision = TP / (TP + FP) (0 when nothing is flagged), recall = TP / (TP + FN), F1 = 2 P R / (P + R) (0 when
  P + R = 0), fpr = FP / (FP + TN); recall and F1 are None without anomalies, fpr is None without normal images."""
  is_anomaly = np.asarray(is_anomaly, bool)
  flag = flagged(scores, threshold)
  tp, fp = int(np.sum(flag & is_anomaly)), int(np.sum(flag & ~is_anomaly))
  fn, tn = int(np.sum(~flag & is_anomaly)), int(np.sum(~flag & ~is_anomaly))
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else None
  f1 = None
  if recall is not None:
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {
    "precision": precision,
    "recall": recall,
    "f1": f1,
    "fpr": fp / (fp + tn) if fp + tn else None,
    "tp": tp,
    "fp": fp,
    "fn": fn,
    "tn": tn,
  }


def choose(*, fpr: float, contamination: float) -> tuple[str, float]:
  """(method, target rate) from the config's eval.threshold_fpr and eval.contamination: contamination > 0
  overrides the false-positive-rate target."""
  return ("contamination", float(contamination)) if contamination > 0 else ("fpr", float(fpr))


def set_threshold(val_scores, val_is_anomaly, *, method: str, target: float) -> dict | None:
  """The threshold of one run from its validation images' scores: dict(threshold, val_fpr, n_val_normal), or
  None when there is nothing to set it on (no normal validation image for fpr, no image for contamination).

  val_fpr: the fraction of normal validation images flagged at that threshold (<= target for method fpr)."""
  s = np.asarray(val_scores, np.float64)
  is_anomaly = np.asarray(val_is_anomaly, bool)
  normal = s[~is_anomaly]
  if method == "fpr":
    pool = normal
  elif method == "contamination":
    pool = s
  else:
    raise ValueError(f"unknown threshold method {method!r}; known: {', '.join(METHODS)}")
  if normal.size == 0 or pool.size == 0:
    return None
  t = upper_order_statistic(pool, target)
  return {"threshold": t, "val_fpr": float(np.mean(flagged(normal, t))), "n_val_normal": int(normal.size)}
