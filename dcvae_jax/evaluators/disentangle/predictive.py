"""Disentanglement scores from predictors fit on the codes: DCI (Eastwood & Williams 2018) and
SAP (Kumar et al. 2018).

Re-exported by :mod:`dcvae_jax.evaluators.disentangle.metrics` (see its docstring for the conventions shared by all
metrics). Each metric fits sklearn models to get a matrix -- DCI's importance matrix R, SAP's
score matrix S, both (d code dims, K factors) -- and reduces it with a pure function:
:func:`dci_from_importance` and :func:`sap_from_matrix`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.stats

from dcvae_jax.evaluators.disentangle.inputs import check_inputs, informative_factors

__all__ = ["dci", "dci_from_importance", "sap", "sap_from_matrix"]


# ----------------------------------------------------------------------------- DCI


def _split(n: int, test_fraction: float, rng: np.random.Generator):
  perm = rng.permutation(n)
  n_test = min(n - 1, max(1, int(round(test_fraction * n))))
  return perm[n_test:], perm[:n_test]


def _make_tree_model(estimator: str, seed: int, n_jobs):
  if estimator == "forest":
    from sklearn.ensemble import RandomForestClassifier

    # Bagged trees over *all* features: with per-split feature subsampling
    # (max_features="sqrt") trees are forced onto uninformative dims, which smears the
    # importances and caps D/C for a perfectly disentangled code near 0.5.
    return RandomForestClassifier(
      n_estimators=50,
      max_features=None,
      min_samples_leaf=5,
      random_state=seed,
      n_jobs=n_jobs,
    )
  if estimator == "gbt":  # disentanglement_lib's default (slow for many-valued factors)
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(random_state=seed)
  raise ValueError(f"unknown estimator {estimator!r}; use 'forest' or 'gbt'")


def dci(
  codes,
  factors,
  *,
  seed: int = 0,
  test_fraction: float = 0.25,
  estimator: str = "forest",
  n_jobs=-1,
  return_importance: bool = False,
) -> dict:
  """DCI disentanglement / completeness / informativeness (Eastwood & Williams 2018).

  Rows are split at random (``seed``) into train / test (``test_fraction``). For every
  informative factor a tree-ensemble classifier predicts the factor from all code dims;
  its impurity-based feature importances form column k of the importance matrix R (d, K).
  By default the ensemble is a random forest of 50 bagged trees over all features
  (``estimator="forest"``, ~1 s for N=2000, d=10, K=5); ``estimator="gbt"`` uses
  disentanglement_lib's ``GradientBoostingClassifier()`` (much slower).

  * disentanglement = sum_i rho_i (1 - H_K(R_i.)), rho_i = R_i. / sum(R)
  * completeness    = sum_k rho_k (1 - H_d(R_.k)), rho_k = R_.k / sum(R)
  * informativeness = mean test accuracy over factors (not an error, higher is better)

  where H_b is the entropy (base b) of the normalised row/column. Single-valued factors are
  dropped. With only one informative factor, disentanglement is 1 (a dim can only relate to
  one factor) if any dim is used; with d == 1 completeness is 1 likewise. If R is all zero
  (e.g. all dims constant), disentanglement = completeness = 0. No informative factor: all 0.
  The R -> (disentanglement, completeness) step is :func:`dci_from_importance`.
  """
  codes, factors = check_inputs(codes, factors)
  keep = informative_factors(factors)
  d = codes.shape[1]
  out: dict[str, Any] = {"disentanglement": 0.0, "completeness": 0.0, "informativeness": 0.0}
  if keep.size == 0:
    if return_importance:
      out["importance_matrix"] = np.zeros((d, 0))
    return out
  factors = factors[:, keep]
  K = factors.shape[1]
  rng = np.random.default_rng(seed)
  tr, te = _split(codes.shape[0], test_fraction, rng)
  R = np.zeros((d, K))
  accs = np.zeros(K)
  for k in range(K):
    y_tr, y_te = factors[tr, k], factors[te, k]
    if np.unique(y_tr).size < 2:  # pathological split: predict the only training value
      accs[k] = np.mean(y_te == y_tr[0])
      continue
    model = _make_tree_model(estimator, seed, n_jobs)
    model.fit(codes[tr], y_tr)
    R[:, k] = np.abs(model.feature_importances_)
    accs[k] = model.score(codes[te], y_te)
  out["informativeness"] = float(accs.mean())
  out["disentanglement"], out["completeness"] = dci_from_importance(R)
  if return_importance:
    out["importance_matrix"] = R  # (d, K_informative), columns = informative factors
  return out


def dci_from_importance(R) -> tuple[float, float]:
  """(disentanglement, completeness) of an importance matrix ``R`` (d code dims, K factors).

  * disentanglement = sum_i rho_i (1 - H_K(P_i.)), P_i. = R_i. / sum_k R_ik
  * completeness    = sum_k rho_k (1 - H_d(P_.k)), P_.k = R_.k / sum_i R_ik

  with weights rho_i = sum_k R_ik / sum(R) (code i) and rho_k = sum_i R_ik / sum(R) (factor k).

  H_b is the entropy in base b (so each term lies in [0, 1]); 1e-11 is added to every entry
  before normalising, so an all-zero row/column is uniform (it has weight 0 anyway). K == 1
  gives disentanglement 1, d == 1 completeness 1; an all-zero R gives (0.0, 0.0).
  """
  R = np.asarray(R, dtype=np.float64)
  d, K = R.shape
  total = R.sum()
  if not total > 0:
    return 0.0, 0.0
  eps = 1e-11
  if K > 1:
    d_per = 1.0 - scipy.stats.entropy(R.T + eps, base=K)
  else:
    d_per = np.ones(d)
  if d > 1:
    c_per = 1.0 - scipy.stats.entropy(R + eps, base=d)
  else:
    c_per = np.ones(K)
  disentanglement = float(np.sum(d_per * R.sum(axis=1) / total))
  completeness = float(np.sum(c_per * R.sum(axis=0) / total))
  return disentanglement, completeness


# ----------------------------------------------------------------------------- SAP


def sap(
  codes,
  factors,
  *,
  continuous: bool = False,
  classifier: str = "threshold",
  seed: int = 0,
  test_fraction: float = 0.25,
  return_matrix: bool = False,
):
  """Separated Attribute Predictability (Kumar et al. 2018, DIP-VAE, Sec. 3).

  Builds a (d, K) score matrix S -- how well code dim i alone predicts factor k -- and
  returns the mean over factors of the gap between the two highest entries of each column.

  * ``continuous=True``: S_ik = R^2 = corr(z_i, v_k)^2 (0 for a constant dim), on all rows.
  * ``continuous=False`` (default): S_ik = held-out accuracy of a 1-D classifier trained on
    z_i (rows split at random by ``seed`` into train/test). ``classifier="threshold"``
    (default) is a class-balanced depth-limited decision tree on the single dim, i.e. a set
    of thresholds (at most ``2 * n_values`` leaves, >= 10 rows per leaf); it can isolate
    each value of a many-valued factor on a monotone code.
    ``classifier="linear_svm"`` is disentanglement_lib's ``LinearSVC(C=0.01,
    class_weight="balanced")``; one-vs-rest linear scores on one feature cannot carve out
    middle values, so it scores a perfect code far below 1 for factors with many values
    (e.g. ~0.18 instead of ~0.85 on a 5-factor identity code).

  A constant dim is scored as a constant predictor: the test frequency of the majority
  training class (discrete) or 0 (continuous). Single-valued factors are dropped.
  Range [0, 1]; 0.0 if no informative factor. The S -> score step is
  :func:`sap_from_matrix`.
  """
  codes, factors = check_inputs(codes, factors)
  keep = informative_factors(factors)
  d = codes.shape[1]
  if keep.size == 0:
    return (0.0, np.zeros((d, 0))) if return_matrix else 0.0
  factors = factors[:, keep]
  K = factors.shape[1]
  std = codes.std(axis=0)
  const = std <= 1e-12 * np.maximum(1.0, np.abs(codes).max(axis=0))
  z = np.where(const, 0.0, (codes - codes.mean(axis=0)) / np.where(const, 1.0, std))
  S = np.zeros((d, K))
  chance = np.zeros(K)  # score of a constant predictor
  if continuous:
    f = factors.astype(np.float64)
    fz = (f - f.mean(axis=0)) / f.std(axis=0)
    corr = z.T @ fz / codes.shape[0]
    S = np.where(const[:, None], 0.0, corr**2)
  else:
    rng = np.random.default_rng(seed)
    tr, te = _split(codes.shape[0], test_fraction, rng)
    for k in range(K):
      y_tr, y_te = factors[tr, k], factors[te, k]
      vals, counts = np.unique(y_tr, return_counts=True)
      chance[k] = np.mean(y_te == vals[np.argmax(counts)])
      for i in range(d):
        if const[i] or vals.size < 2:
          S[i, k] = chance[k]
          continue
        model = _make_1d_classifier(classifier, vals.size, seed)
        model.fit(z[tr, i : i + 1], y_tr)
        S[i, k] = model.score(z[te, i : i + 1], y_te)
  score = sap_from_matrix(S, chance)
  return (score, S) if return_matrix else score


def sap_from_matrix(S, chance=None) -> float:
  """SAP of a score matrix ``S`` (d code dims, K factors): the mean over factors (columns) of
  the gap between the highest and second-highest score in the column.

  With d == 1 the runner-up is a constant predictor scoring ``chance`` (K,) (default 0),
  capped at the top score.
  """
  S = np.asarray(S, dtype=np.float64)
  d, K = S.shape
  if chance is None:
    chance = np.zeros(K)
  top = np.sort(S, axis=0)[::-1]
  # d == 1: the runner-up is a constant predictor.
  second = top[1] if d > 1 else np.minimum(top[0], chance)
  return float(np.mean(top[0] - second))


def _make_1d_classifier(kind: str, n_classes: int, seed: int):
  if kind == "threshold":
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(
      max_leaf_nodes=max(2, 2 * n_classes),
      min_samples_leaf=10,
      class_weight="balanced",
      random_state=seed,
    )
  if kind == "linear_svm":
    from sklearn.svm import LinearSVC

    return LinearSVC(C=0.01, class_weight="balanced")
  raise ValueError(f"unknown classifier {kind!r}; use 'threshold' or 'linear_svm'")
