"""Disentanglement metrics on encoder means and known ground-truth factors (numpy/sklearn).

All metrics take ``codes`` (N, d) float -- e.g. the encoder means of a VAE on a labelled
dataset -- and ``factors`` (N, K) int, the discrete ground-truth factor indices of the same
examples. They follow the original papers and the recipes of google-research/
disentanglement_lib, adapted to a *finite* dataset of (code, factor) pairs instead of a
ground-truth simulator; the deviations are listed per function.

Degenerate inputs (documented, never NaN):

* **single-valued factors** (a factor column with one distinct value) carry no information
  and are dropped by every metric (MIG, FactorVAE, DCI, SAP). If *no* factor has two or more
  values every metric returns 0.0.
* **constant code dims** (zero variance) are handled naturally: MIG puts them in one bin
  (MI = 0); FactorVAE prunes them; DCI's trees never split on them (importance 0); SAP scores
  them as a constant predictor (chance accuracy for discrete factors, R^2 = 0 for
  continuous). An all-constant code therefore scores 0 on MIG, FactorVAE, SAP and DCI
  disentanglement/completeness (DCI informativeness is then the majority-class accuracy).
* ``d == 1``: the MIG/SAP "second best" code is taken as 0 (MI) / the chance score.

Non-finite codes raise ``ValueError``.

This module holds the information-theoretic metric (MIG) and :func:`compute_all`; the
FactorVAE score is in :mod:`dcvae_jax.evaluators.disentangle.factor_vae`, DCI and SAP in
:mod:`dcvae_jax.evaluators.disentangle.predictive`, the input checks in :mod:`dcvae_jax.evaluators.disentangle.inputs`.
All of their public names are importable from here.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mutual_info_score

from dcvae_jax.evaluators.disentangle.factor_vae import (
  factor_vae_score,
  majority_vote_accuracy,
  majority_vote_classifier,
)
from dcvae_jax.evaluators.disentangle.inputs import check_inputs
from dcvae_jax.evaluators.disentangle.predictive import dci, dci_from_importance, sap, sap_from_matrix

__all__ = [
  "discretize",
  "mutual_info_matrix",
  "mig",
  "mig_per_factor",
  "factor_vae_score",
  "majority_vote_classifier",
  "majority_vote_accuracy",
  "dci",
  "dci_from_importance",
  "sap",
  "sap_from_matrix",
  "compute_all",
]


# ----------------------------------------------------------------------------- helpers


def discretize(codes, num_bins: int = 20) -> np.ndarray:
  """Per-dimension equal-width histogram binning, int (N, d) with values in [0, num_bins).

  Bin edges are ``np.histogram_bin_edges(codes[:, j], num_bins)``; bins are half-open
  ``[e_i, e_{i+1})`` except the last, which is closed (exactly ``np.histogram``'s rule).
  A constant dim lands in a single bin.
  """
  codes = np.asarray(codes, dtype=np.float64)
  if codes.ndim == 1:
    codes = codes[:, None]
  out = np.empty(codes.shape, dtype=np.int64)
  for j in range(codes.shape[1]):
    edges = np.histogram_bin_edges(codes[:, j], bins=num_bins)
    out[:, j] = np.digitize(codes[:, j], edges[1:-1], right=False)
  return out


def mutual_info_matrix(discrete_codes, factors) -> np.ndarray:
  """MI (nats) between every discrete code dim and factor, (d, K), via sklearn."""
  d, K = discrete_codes.shape[1], factors.shape[1]
  m = np.zeros((d, K))
  for i in range(d):
    for k in range(K):
      m[i, k] = mutual_info_score(factors[:, k], discrete_codes[:, i])
  return m


# ----------------------------------------------------------------------------- MIG


def mig_per_factor(codes, factors, *, num_bins: int = 20) -> np.ndarray:
  """Normalised MI gap per factor, (K,); NaN for single-valued factors (excluded by ``mig``).

  gap_k = (I(z_a; v_k) - I(z_b; v_k)) / H(v_k), with a, b the two code dims of highest MI
  with factor k (the second-best MI is 0 if d == 1).
  """
  codes, factors = check_inputs(codes, factors)
  m = mutual_info_matrix(discretize(codes, num_bins), factors)
  h = np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])
  top = np.sort(m, axis=0)[::-1]
  second = top[1] if top.shape[0] > 1 else np.zeros(factors.shape[1])
  gaps = np.full(factors.shape[1], np.nan)
  ok = h > 0
  gaps[ok] = (top[0, ok] - second[ok]) / h[ok]
  return gaps


def mig(codes, factors, *, num_bins: int = 20) -> float:
  """Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement").

  Each code dim is discretised into ``num_bins`` equal-width bins (disentanglement_lib's
  histogram discretiser), the discrete MI with each factor is computed with
  ``sklearn.metrics.mutual_info_score`` and normalised by the factor's entropy, and the gap
  between the two most informative dims is averaged over factors. Range [0, 1]. Factors with
  a single value are skipped; returns 0.0 if none remain.
  """
  gaps = mig_per_factor(codes, factors, num_bins=num_bins)
  gaps = gaps[np.isfinite(gaps)]
  return float(gaps.mean()) if gaps.size else 0.0


# ----------------------------------------------------------------------------- FactorVAE
# ----------------------------------------------------------------------------- all


def compute_all(codes, factors, seed: int = 0) -> dict:
  """All metrics with default settings, as a flat JSON-ready ``{name: float}`` dict.

  Keys: ``mig``, ``factor_vae``, ``dci_disentanglement``, ``dci_completeness``,
  ``dci_informativeness``, ``sap`` (discrete-factor SAP).
  """
  codes, factors = check_inputs(codes, factors)
  d = dci(codes, factors, seed=seed)
  return {
    "mig": float(mig(codes, factors)),
    "factor_vae": float(factor_vae_score(codes, factors, seed=seed)),
    "dci_disentanglement": float(d["disentanglement"]),
    "dci_completeness": float(d["completeness"]),
    "dci_informativeness": float(d["informativeness"]),
    "sap": float(sap(codes, factors, seed=seed)),
  }
