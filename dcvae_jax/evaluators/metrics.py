"""From scores to results: AUROC / AUPR of each score, one run's metrics, the summary in results.json, and the
text table. Anomalies are the positive class.

Validation: a run's validation images (data.validation_fraction of the training split, which no run trains on) are
scored exactly as its test images; ``val_auroc_by_score`` / ``val_aupr_by_score`` are their AUROC / AUPR, and every
score's decision threshold is set on them (``threshold``). ``protocol.score="auto"`` makes the headline the score
with the highest mean validation AUROC over the protocol's runs (``select_score``); test is not looked at."""

from __future__ import annotations

from typing import Any

import numpy as np

from dcvae_jax.evaluators import threshold
from dcvae_jax.evaluators.base import run_fields
from dcvae_jax.evaluators.scoring import PER_CONDITION_SCORES, SCORES, reduce_scores


def _one_of_each(is_anomaly: np.ndarray) -> None:
  if is_anomaly.all() or not is_anomaly.any():
    raise ValueError("AUROC / AUPR need both normal and anomalous examples; these are all of one kind")


def auroc(score: np.ndarray, is_anomaly: np.ndarray) -> float:
  """Area under the ROC curve with anomalies positive: the Mann-Whitney statistic
      AUROC = (sum of the anomalies' ranks - n_a (n_a + 1) / 2) / (n_a n_n) = P(s_a > s_n) + P(s_a = s_n) / 2,
  ranks 1..N ascending, tied scores sharing their mean rank (what the trapezoidal ROC area gives). Exact in float64;
  a few microseconds of numpy where scikit-learn's checks of its inputs took milliseconds per call."""
  score, is_anomaly = np.asarray(score, np.float64).ravel(), np.asarray(is_anomaly, bool).ravel()
  _one_of_each(is_anomaly)
  _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
  mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # of each distinct score, ascending
  n_a = int(is_anomaly.sum())
  n_n = is_anomaly.size - n_a
  u = mean_rank[inverse.ravel()][is_anomaly].sum() - n_a * (n_a + 1) / 2.0
  return float(u / (n_a * n_n))


def average_precision(score: np.ndarray, is_anomaly: np.ndarray) -> float:
  """AUPR as average precision, anomalies positive: AP = sum_t (R_t - R_{t-1}) P_t over the distinct scores t in
  descending order, flagging score >= t (ties enter together), R_0 = 0 (scikit-learn's definition)."""
  score, is_anomaly = np.asarray(score, np.float64).ravel(), np.asarray(is_anomaly, bool).ravel()
  _one_of_each(is_anomaly)
  order = np.argsort(-score, kind="mergesort")
  s, hit = score[order], is_anomaly[order]
  last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last position of each group of equal scores
  tp = np.cumsum(hit)[last]
  precision = tp / (last + 1.0)
  recall = tp / tp[-1]
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


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
    "auroc": auroc(score, is_anomaly),
    "aupr": average_precision(score, is_anomaly),
    "mean_normal": float(np.mean(score[~is_anomaly])),
    "mean_anomalous": float(np.mean(score[is_anomaly])),
  }


def reduced_run_scores(
  run,
  scores: dict,
  y: np.ndarray,
  *,
  conditional,
  condition_counts,
  protocol,
  length_bits,
  offset_bits,
  reference,
  names: tuple = SCORES,
):
  """A run's images of ``y`` (its normal and anomalous classes only) and their scores reduced over conditions:
  (reduced name -> (n,), is_anomaly (n,)); sap_complexity from ``reference`` (see :func:`evaluate_run`); only
  the scores in ``names``."""
  keep = np.isin(y, run.normal + run.anomalous)
  reduced = reduce_scores(
    run,
    {k: v[keep] for k, v in scores.items() if k in PER_CONDITION_SCORES},
    y[keep],
    conditional=conditional,
    condition_counts=condition_counts,
    protocol=protocol,
    length_bits=None if length_bits is None else np.asarray(length_bits)[keep],
    offset_bits=offset_bits,
    reference=reference,
  )
  reduced = {name: values for name, values in reduced.items() if name in names}
  return reduced, np.isin(y[keep], run.anomalous)


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
  validation: dict | None = None,
  threshold_method: tuple[str, float] = ("fpr", 0.05),
  names: tuple = SCORES,
) -> dict:
  """All metrics of one run from its scores (name -> (N_test, C')). The headline score is protocol.score (none
  yet for "auto": :func:`set_headline` sets it once the score is chosen).

  ``length_bits`` (N_test,): L(x) of every test image for the complexity score (computed from the reduced iwae
  plus ``offset_bits``); without it, or without an iwae score, complexity is not reported. ``reference``: the
  reduced rapp_sap and complexity of normal training images (see :func:`sap_complexity`). Only the scores
  named in ``names`` (eval.scores) are reported; the others are absent (and so are A / E without recon /
  nelbo).

  ``validation``: dict(scores=name -> (N_val, C'), y=(N_val,), length_bits=(N_val,)) of validation images, scored
  as the test images are; they give ``val_auroc_by_score`` / ``val_aupr_by_score`` (when the run's validation
  images hold both normal and anomalous ones) and, per score, the decision threshold set on them
  (``threshold_method``: (method, target) of :func:`threshold.set_threshold`) with the test precision, recall,
  F1 and FPR at it (``threshold_by_score``)."""
  common = dict(
    conditional=conditional,
    condition_counts=condition_counts,
    protocol=protocol,
    offset_bits=offset_bits,
    reference=reference,
    names=names,
  )
  reduced, is_anomaly = reduced_run_scores(run, scores, y_test, length_bits=length_bits, **common)
  result = {
    **run_fields(run),
    "num_test_normal": int((~is_anomaly).sum()),
    "num_test_anomalous": int(is_anomaly.sum()),
  }
  if protocol.score != "auto" and protocol.score not in reduced:
    raise ValueError(f"score {protocol.score!r} was not computed for run {run.name}")
  for name, values in reduced.items():
    m = detection_metrics(values, is_anomaly)
    result.update({f"{name}_{k}": v for k, v in m.items()})
  # The paper's A (reconstruction error) and E (negative ELBO) for normal and anomalous test images.
  if "recon" in reduced:
    result["A_normal"], result["A_anomalous"] = result["recon_mean_normal"], result["recon_mean_anomalous"]
  if "nelbo" in reduced:
    result["E_normal"], result["E_anomalous"] = result["nelbo_mean_normal"], result["nelbo_mean_anomalous"]
  if validation is not None:
    result.update(_validation_results(run, reduced, is_anomaly, validation, common, threshold_method))
  if protocol.score != "auto":
    set_headline(result, protocol.score)
  return result


def untested_run(
  run, *, validation: dict | None = None, threshold_method: tuple[str, float] = ("fpr", 0.05), **common
) -> dict:
  """The result of a run without test images (data.name=folder without test/): who it is, no test metrics; with
  ``validation`` (as :func:`evaluate_run`'s, and its keyword arguments ``common``: conditional, condition_counts,
  protocol, offset_bits, reference) every score's decision threshold set on the validation images."""
  result = {**run_fields(run), "num_test_normal": 0, "num_test_anomalous": 0}
  if validation is not None:
    result.update(_validation_results(run, None, None, validation, common, threshold_method))
  return result


def _validation_results(run, test_reduced, test_is_anomaly, validation, common, threshold_method) -> dict:
  """The validation metrics and thresholds of one run (see :func:`evaluate_run`); ``test_reduced`` None: no test
  images (the thresholds come without test rates)."""
  reduced, is_anomaly = reduced_run_scores(
    run, validation["scores"], np.asarray(validation["y"]), length_bits=validation.get("length_bits"), **common
  )
  out: dict[str, Any] = {"num_val_normal": int((~is_anomaly).sum()), "num_val_anomalous": int(is_anomaly.sum())}
  if is_anomaly.any() and (~is_anomaly).any():
    val = {name: detection_metrics(values, is_anomaly) for name, values in reduced.items()}
    out["val_auroc_by_score"] = {name: m["auroc"] for name, m in val.items()}
    out["val_aupr_by_score"] = {name: m["aupr"] for name, m in val.items()}
  else:
    out["val_note"] = "the run's validation images hold no anomalous (or no normal) image: no validation AUROC"
  method, target = threshold_method
  by_score = {}
  for name, values in reduced.items():
    t = threshold.set_threshold(values, is_anomaly, method=method, target=target)
    if t is not None and test_reduced is None:
      by_score[name] = t
    elif t is not None and name in test_reduced:
      rates = threshold.decision_rates(test_reduced[name], test_is_anomaly, t["threshold"])
      t.update({f"test_{k}": rates[k] for k in ("precision", "recall", "f1", "fpr")})
      by_score[name] = t
  if by_score:
    out["threshold_by_score"] = by_score
    out["threshold_method"] = {"method": method, "target": target}
  return out


def set_headline(result: dict, score: str) -> dict:
  """Make ``score`` one run's headline: ``auroc``, ``aupr`` (none for a run without test images), and the
  decision threshold of that score."""
  result["score"] = score
  if f"{score}_auroc" in result:
    result["auroc"] = result[f"{score}_auroc"]
    result["aupr"] = result[f"{score}_aupr"]
  for key in ("val_auroc", "val_aupr"):
    if f"{key}_by_score" in result:
      result[key] = result[f"{key}_by_score"].get(score)
  if score in result.get("threshold_by_score", {}):
    result["threshold"] = {"score": score, **result["threshold_method"], **result["threshold_by_score"][score]}
  else:
    result.pop("threshold", None)
  return result


def mean_by_score(per_run: list[dict], key: str) -> dict:
  """Mean over the runs that have it of each score's ``key`` (a per-run dict score -> value)."""
  names = [n for n in SCORES if any(n in r.get(key, {}) for r in per_run)]
  return {n: float(np.mean([r[key][n] for r in per_run if n in r.get(key, {})])) for n in names}


def select_score(per_run: list[dict]) -> tuple[str, list[dict]]:
  """protocol.score="auto": the score with the highest mean validation AUROC over the runs (the first in SCORES
  order on a tie), and that table: [{"score", "val_auroc"}, ...], best first. Raises ValueError when no run has a
  validation AUROC."""
  table = mean_by_score(per_run, "val_auroc_by_score")
  finite = {n: v for n, v in table.items() if np.isfinite(v)}
  if not finite:
    raise ValueError("protocol.score='auto' needs validation AUROCs, and no run has one")
  best = max(finite, key=lambda n: (finite[n], -SCORES.index(n)))
  order = sorted(finite, key=lambda n: (-finite[n], SCORES.index(n))) + [n for n in table if n not in finite]
  return best, [{"score": n, "val_auroc": table[n]} for n in order]


def summarize(
  per_run: list[dict],
  *,
  score: str,
  score_condition: str,
  score_selection: str = "config",
  complexity_likelihood: str | None = None,
) -> dict:
  """results.json's detection part: per-class AUROC (mean over seeds), mean and std over classes and seeds, of
  the headline ``score`` (the runs' headlines must be set to it, :func:`set_headline`), chosen by
  ``score_selection`` ("config" or "validation"); every score's test and validation AUROC / AUPR; the decision
  threshold. Runs without test images (:func:`untested_run`) leave every metric None."""

  def mean_std(key):
    v = np.array([r[key] for r in per_run] if any(key in r for r in per_run) else [], np.float64)
    return (float(v.mean()), float(v.std())) if v.size else (None, None)

  by_label: dict[str, list] = {}
  for r in per_run:
    by_label.setdefault(r["label"], []).append(r)
  out: dict[str, Any] = {
    "score": score,
    "score_selected": score,
    "score_selection": score_selection,
    "score_condition": score_condition,
  }
  if score_condition == "given":
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
    untested = not any(r.get("num_test_normal") or r.get("num_test_anomalous") for r in per_run)
    if untested or all(key in r for r in per_run):  # a score left out of eval.scores stays absent
      out[f"{key}_mean"], out[f"{key}_std"] = mean_std(key)  # (None, None) without test images
  tested = {k: v for k, v in by_label.items() if all("auroc" in r for r in v)}
  out["auroc_per_class"] = {k: float(np.mean([r["auroc"] for r in v])) for k, v in tested.items()}
  out["aupr_per_class"] = {k: float(np.mean([r["aupr"] for r in v])) for k, v in tested.items()}
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
  val_runs = [r for r in per_run if "val_auroc_by_score" in r]
  if val_runs:
    out["val_auroc_by_score"] = mean_by_score(val_runs, "val_auroc_by_score")
    out["val_aupr_by_score"] = mean_by_score(val_runs, "val_aupr_by_score")
    out["val_num_runs"] = len(val_runs)
    if score in out["val_auroc_by_score"]:
      out["val_auroc_mean"], out["val_aupr_mean"] = out["val_auroc_by_score"][score], out["val_aupr_by_score"][score]
  section = summarize_threshold(per_run, score)
  if section is not None:
    out["threshold"] = section
  return out


def summarize_threshold(per_run: list[dict], score: str) -> dict | None:
  """results.json's ``threshold``: how the headline score's decision threshold was set, each run's threshold, its
  validation FPR and its test precision / recall / F1 / FPR, and their means over runs (None where undefined)."""
  runs = {r["run"]: r["threshold_by_score"][score] for r in per_run if score in r.get("threshold_by_score", {})}
  if not runs:
    return None
  how = next(r["threshold_method"] for r in per_run if score in r.get("threshold_by_score", {}))
  set_on = {
    "fpr": "the run's normal validation images",
    "contamination": "all the run's validation images (normal and anomalous)",
  }[how["method"]]
  out = {
    "score": score,
    "method": how["method"],
    "target": how["target"],
    "how": (
      f"per run, on {set_on}: of their n {score} scores sorted increasingly, threshold = the k-th, "
      f"k = n - floor({how['target']:g} n) (numpy.quantile(s, 1 - {how['target']:g}, method='inverted_cdf')); "
      "an image is flagged anomalous iff its score > threshold (non-finite scores always are)"
    ),
    "runs": runs,
  }
  for key in ("val_fpr", "test_precision", "test_recall", "test_f1", "test_fpr"):
    values = [v[key] for v in runs.values() if v.get(key) is not None]
    out[f"{key}_mean"] = float(np.mean(values)) if values else None
  return out


def format_table(results: dict) -> str:
  """A short text table: one row per class, then the mean +- std."""
  chosen = " chosen on validation" if results.get("score_selection") == "validation" else ""
  score = f", score={results['score']}{chosen}" if "score" in results else ""
  lines = [
    f"{results['model']} on {results['dataset']} ({results['protocol']}{score})",
    f"{'class':>8} {'AUROC':>7} {'AUPR':>7}",
  ]
  if results.get("auroc_mean") is None:  # no test images: trained only
    lines.append(f"{'(none)':>8}       -       -   (train {results['train_seconds']:.1f} s)")
    lines.append(results.get("note", "no detection metrics: eval.evaluators leaves out detection"))
    return "\n".join(lines)
  for k in sorted(results["auroc_per_class"], key=lambda s: (len(s), s)):
    lines.append(f"{k:>8} {results['auroc_per_class'][k]:7.3f} {results['aupr_per_class'][k]:7.3f}")
  lines.append(
    f"{'mean':>8} {results['auroc_mean']:7.3f} {results['aupr_mean']:7.3f}   "
    f"(AUROC std {results['auroc_std']:.3f}; train {results['train_seconds']:.1f} s)"
  )
  paper = [
    f"{name} normal/anomalous {results[f'{name}_normal_mean']:.2f}/{results[f'{name}_anomalous_mean']:.2f}"
    for name in ("A", "E")
    if f"{name}_normal_mean" in results
  ]
  if paper:
    lines.append("   ".join(paper))
  if results.get("auroc_by_score"):
    lines.append("mean AUROC by score: " + "  ".join(f"{k} {v:.3f}" for k, v in results["auroc_by_score"].items()))
  if results.get("val_auroc_by_score"):
    lines.append(
      "mean validation AUROC by score: " + "  ".join(f"{k} {v:.3f}" for k, v in results["val_auroc_by_score"].items())
    )
  t = results.get("threshold")
  if t:
    f = {k: "-" if t[f"{k}_mean"] is None else f"{t[f'{k}_mean']:.3f}" for k in ("test_precision", "test_recall")}
    f1, fpr = t["test_f1_mean"], t["test_fpr_mean"]
    lines.append(
      f"threshold ({t['method']} {t['target']:g} on validation): test precision {f['test_precision']}  "
      f"recall {f['test_recall']}  F1 {'-' if f1 is None else f'{f1:.3f}'}  FPR {'-' if fpr is None else f'{fpr:.3f}'}"
    )
  bad = {k: v for k, v in results.get("nonfinite_by_score", {}).items() if v}
  if bad:
    lines.append("non-finite scores (ranked most anomalous): " + "  ".join(f"{k} {v}" for k, v in bad.items()))
  return "\n".join(lines)
