"""From scores to results: AUROC / AUPR of each score, one run's metrics, the summary in results.json, and the
text table. Anomalies are the positive class."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from dcvae_jax.evaluators import anomaly_scores
from dcvae_jax.evaluators.scoring import DEVICE_SCORES, SCORES, reduce_scores


def detection_metrics(score: np.ndarray, is_anomaly: np.ndarray) -> dict:
  """AUROC and AUPR with anomalies as the positive class, and mean score of each group.

  A non-finite score (a diverged model) ranks as the most anomalous; how many there were is reported."""
  is_anomaly = np.asarray(is_anomaly, bool)
  bad = ~np.isfinite(score)
  if bad.any():
    top = np.max(score[~bad]) + 1.0 if (~bad).any() else 0.0
    score = np.where(bad, top, score)
  return {
    "nonfinite": int(bad.sum()),
    "auroc": float(roc_auc_score(is_anomaly, score)),
    "aupr": float(average_precision_score(is_anomaly, score)),
    "mean_normal": float(np.mean(score[~is_anomaly])),
    "mean_anomalous": float(np.mean(score[is_anomaly])),
  }


def evaluate_run(
  run,
  scores: dict,
  y_test: np.ndarray,
  *,
  conditional: bool,
  condition_counts,
  protocol,
  length_bits=None,
  offset_bits: float = 0.0,
  reference: dict | None = None,
) -> dict:
  """All metrics of one run from its scores (name -> (N_test, C')). The headline score is protocol.score.

  ``length_bits`` (N_test,): L(x) of every test image for the complexity score (computed from the reduced iwae
  plus ``offset_bits``); without it, or without an iwae score, complexity is not reported. ``reference``: the
  reduced rapp_sap and complexity of normal training images (see :func:`sap_complexity`)."""
  keep = np.isin(y_test, run.normal + run.anomalous)
  y = y_test[keep]
  is_anomaly = np.isin(y, run.anomalous)
  result = {
    "run": run.name,
    "label": run.label,
    "seed": run.seed,
    "normal": list(run.normal),
    "anomalous": list(run.anomalous),
    "num_test_normal": int((~is_anomaly).sum()),
    "num_test_anomalous": int(is_anomaly.sum()),
  }
  reduced = reduce_scores(
    run,
    {k: v[keep] for k, v in scores.items() if k in DEVICE_SCORES},
    y,
    conditional=conditional,
    condition_counts=condition_counts,
    protocol=protocol,
    length_bits=None if length_bits is None else np.asarray(length_bits)[keep],
    offset_bits=offset_bits,
  )
  if reference is not None and "complexity" in reduced:
    reduced["sap_complexity"] = anomaly_scores.sap_complexity(
      reduced["rapp_sap"], reduced["complexity"], reference["rapp_sap"], reference["complexity"]
    )
  if protocol.score not in reduced:
    raise ValueError(f"score {protocol.score!r} was not computed for run {run.name}")
  for name, values in reduced.items():
    m = detection_metrics(values, is_anomaly)
    result.update({f"{name}_{k}": v for k, v in m.items()})
  result["auroc"] = result[f"{protocol.score}_auroc"]
  result["aupr"] = result[f"{protocol.score}_aupr"]
  # The paper's A (reconstruction error) and E (negative ELBO) for normal and anomalous test images.
  result["A_normal"], result["A_anomalous"] = result["recon_mean_normal"], result["recon_mean_anomalous"]
  result["E_normal"], result["E_anomalous"] = result["nelbo_mean_normal"], result["nelbo_mean_anomalous"]
  return result


def summarize(
  per_run: list[dict],
  *,
  model: str,
  dataset: str,
  protocol,
  train_seconds: float,
  complexity_likelihood: str | None = None,
) -> dict:
  """results.json: per-class AUROC (mean over seeds), mean and std over classes and seeds."""

  def mean_std(key):
    v = np.array([r[key] for r in per_run], np.float64)
    return float(v.mean()), float(v.std())

  by_label: dict[str, list] = {}
  for r in per_run:
    by_label.setdefault(r["label"], []).append(r)
  out = {
    "model": model,
    "dataset": dataset,
    "protocol": protocol.name,
    "score": protocol.score,
    "score_condition": protocol.score_condition,
    "num_runs": len(per_run),
    "train_seconds": float(train_seconds),
  }
  if protocol.score_condition == "given":
    out["warning"] = "score_condition='given' uses the test label (leaks the anomaly label)"
  for key in (
    "auroc",
    "aupr",
    "recon_auroc",
    "nelbo_auroc",
    "recon_aupr",
    "nelbo_aupr",
    "A_normal",
    "A_anomalous",
    "E_normal",
    "E_anomalous",
  ):
    out[f"{key}_mean"], out[f"{key}_std"] = mean_std(key)
  out["auroc_per_class"] = {k: float(np.mean([r["auroc"] for r in v])) for k, v in by_label.items()}
  out["aupr_per_class"] = {k: float(np.mean([r["aupr"] for r in v])) for k, v in by_label.items()}
  computed = [n for n in SCORES if all(f"{n}_auroc" in r for r in per_run)]
  out["auroc_by_score"] = {n: mean_std(f"{n}_auroc")[0] for n in computed}
  out["auroc_std_by_score"] = {n: mean_std(f"{n}_auroc")[1] for n in computed}
  out["aupr_by_score"] = {n: mean_std(f"{n}_aupr")[0] for n in computed}
  out["auroc_per_class_by_score"] = {
    n: {k: float(np.mean([r[f"{n}_auroc"] for r in v])) for k, v in by_label.items()} for n in computed
  }
  # Non-finite scores over all runs (each ranked as the most anomalous, see detection_metrics).
  out["nonfinite_by_score"] = {n: int(sum(r.get(f"{n}_nonfinite", 0) for r in per_run)) for n in computed}
  if complexity_likelihood is not None and "complexity" in computed:
    out["complexity_likelihood"] = complexity_likelihood
  out["runs"] = per_run
  return out


def format_table(results: dict) -> str:
  """A short text table: one row per class, then the mean +- std."""
  lines = [
    f"{results['model']} on {results['dataset']} ({results['protocol']}, score={results['score']})",
    f"{'class':>8} {'AUROC':>7} {'AUPR':>7}",
  ]
  for k in sorted(results["auroc_per_class"], key=lambda s: (len(s), s)):
    lines.append(f"{k:>8} {results['auroc_per_class'][k]:7.3f} {results['aupr_per_class'][k]:7.3f}")
  lines.append(
    f"{'mean':>8} {results['auroc_mean']:7.3f} {results['aupr_mean']:7.3f}   "
    f"(AUROC std {results['auroc_std']:.3f}; train {results['train_seconds']:.1f} s)"
  )
  lines.append(
    f"A normal/anomalous {results['A_normal_mean']:.2f}/{results['A_anomalous_mean']:.2f}   "
    f"E normal/anomalous {results['E_normal_mean']:.2f}/{results['E_anomalous_mean']:.2f}"
  )
  if results.get("auroc_by_score"):
    lines.append("mean AUROC by score: " + "  ".join(f"{k} {v:.3f}" for k, v in results["auroc_by_score"].items()))
  bad = {k: v for k, v in results.get("nonfinite_by_score", {}).items() if v}
  if bad:
    lines.append("non-finite scores (ranked most anomalous): " + "  ".join(f"{k} {v}" for k, v in bad.items()))
  return "\n".join(lines)
