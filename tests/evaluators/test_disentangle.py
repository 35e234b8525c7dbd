"""Known-answer tests for dcvae_jax.evaluators.disentangle.metrics."""

import json
import math

import numpy as np
import pytest

from dcvae_jax.evaluators.disentangle import metrics as dis

N = 2000
SIZES = (3, 6, 20, 16, 16)
K = len(SIZES)
D = 10


@pytest.fixture(scope="module")
def factors():
  rng = np.random.default_rng(123)
  return np.stack([rng.integers(0, s, N) for s in SIZES], axis=1).astype(np.int32)


@pytest.fixture(scope="module")
def codes(factors):
  """Named synthetic 'encoder means' with known disentanglement properties."""
  rng = np.random.default_rng(7)
  f = factors / np.asarray(SIZES, dtype=float)  # factors scaled to [0, 1)
  out = {}
  # Identity: dim k = factor k (+ tiny noise), 5 extra dims of tiny noise (collapsed dims).
  ident = np.zeros((N, D))
  ident[:, :K] = f
  ident += 0.01 * rng.normal(size=ident.shape)
  out["identity"] = ident
  # Random rotation of the standardised identity code: each dim mixes all factors.
  q, _ = np.linalg.qr(rng.normal(size=(D, D)))
  out["rotation"] = ((ident - ident.mean(0)) / ident.std(0)) @ q
  # Dense mixing of the factors, no noise dims.
  out["mixed"] = f @ rng.normal(size=(K, K))
  out["noise"] = rng.normal(size=(N, D))
  out["constant"] = np.full((N, D), 0.3)
  # Factor 0 duplicated in two dims; the other factors have their own dim.
  out["duplicate"] = np.concatenate([f, f[:, :1]], axis=1) + 0.01 * rng.normal(size=(N, K + 1))
  return out


@pytest.fixture(scope="module")
def results(codes, factors):
  return {name: dis.compute_all(c, factors, seed=0) for name, c in codes.items()}


# ----------------------------------------------------------------------------- MIG


def test_mig_identity_high(results):
  assert 0.9 <= results["identity"]["mig"] <= 1.0


def test_mig_constant_and_noise_low(results):
  assert results["constant"]["mig"] <= 0.05
  assert results["noise"]["mig"] <= 0.05
  assert results["rotation"]["mig"] <= 0.1
  assert results["mixed"]["mig"] <= 0.15


def test_mig_duplicated_factor_has_no_gap(codes, factors):
  gaps = dis.mig_per_factor(codes["duplicate"], factors)
  assert gaps[0] <= 0.05  # two dims share factor 0 -> ~0 gap
  assert np.all(gaps[1:] >= 0.9)  # the other factors are still perfectly captured
  assert dis.mig(codes["duplicate"], factors) == pytest.approx(np.mean(gaps))


def _entropy_from_counts(counts):
  p = counts[counts > 0] / counts.sum()
  return -np.sum(p * np.log(p))


def test_mig_matches_hand_computation():
  """Independent re-computation: bins by hand, MI and entropy from contingency counts."""
  num_bins = 4
  # Two code dims spanning [0, 4] (bin width exactly 1, no value on an inner edge).
  codes = np.array(
    [
      [0.0, 4.0],
      [0.3, 3.5],
      [1.1, 0.2],
      [1.6, 2.5],
      [2.6, 1.2],
      [4.0, 0.0],
      [3.2, 2.2],
      [0.5, 1.9],
      [2.2, 3.1],
      [3.7, 0.7],
      [1.4, 2.9],
      [2.9, 3.9],
    ]
  )
  factors = np.array([[0, 1], [0, 1], [1, 0], [1, 2], [2, 0], [2, 0], [2, 2], [0, 1], [1, 2], [2, 0], [1, 2], [2, 1]])
  bins = np.clip(np.floor(codes / 1.0), 0, num_bins - 1).astype(int)  # max -> last bin
  assert np.array_equal(bins, dis.discretize(codes, num_bins))
  n = codes.shape[0]
  mi = np.zeros((2, 2))
  for i in range(2):
    for k in range(2):
      joint = np.zeros((num_bins, 3))
      for a, b in zip(bins[:, i], factors[:, k], strict=True):
        joint[a, b] += 1
      pa, pb = joint.sum(1) / n, joint.sum(0) / n
      pj = joint / n
      nz = pj > 0
      mi[i, k] = np.sum(pj[nz] * np.log(pj[nz] / np.outer(pa, pb)[nz]))
  h = np.array([_entropy_from_counts(np.bincount(factors[:, k])) for k in range(2)])
  expected = np.mean((mi.max(0) - mi.min(0)) / h)
  got = dis.mig(codes, factors, num_bins=num_bins)
  assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
  assert np.allclose(dis.mutual_info_matrix(bins, factors), mi, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- FactorVAE


def test_factor_vae_identity_and_noise(results):
  assert results["identity"]["factor_vae"] >= 0.95
  assert results["duplicate"]["factor_vae"] >= 0.95
  # Uninformative code: ~1/K (slightly above from majority voting).
  assert results["noise"]["factor_vae"] <= 0.35
  assert results["constant"]["factor_vae"] == 0.0  # all dims pruned


def test_factor_vae_details_and_determinism(codes, factors):
  a = dis.factor_vae_score(codes["identity"], factors, seed=3, return_details=True)
  b = dis.factor_vae_score(codes["identity"], factors, seed=3, return_details=True)
  assert a["eval_accuracy"] == b["eval_accuracy"]
  # Collapsed (std 0.01 < 0.05) dims are pruned; votes are diagonal.
  assert a["num_active_dims"] == K
  assert a["votes"].shape == (K, K)
  assert np.array_equal(np.argmax(a["votes"], axis=0), np.arange(K))


def test_factor_vae_small_groups():
  # Many values with very few rows each still works (sampling with replacement).
  rng = np.random.default_rng(0)
  f = np.stack([rng.integers(0, 200, 300), rng.integers(0, 2, 300)], axis=1)
  c = f + 0.01 * rng.normal(size=f.shape)
  s = dis.factor_vae_score(c, f, num_train=500, num_eval=500)
  assert 0.9 <= s <= 1.0


# ----------------------------------------------------------------------------- DCI


def test_dci_identity_high(results):
  r = results["identity"]
  assert r["dci_disentanglement"] >= 0.95
  assert r["dci_completeness"] >= 0.95
  assert r["dci_informativeness"] >= 0.95


def test_dci_mixed_low(results):
  for name in ("rotation", "mixed"):
    assert results[name]["dci_disentanglement"] <= 0.3, name
    assert results[name]["dci_completeness"] <= 0.3, name
  assert results["noise"]["dci_disentanglement"] <= 0.1
  assert results["noise"]["dci_completeness"] <= 0.1
  assert results["noise"]["dci_informativeness"] <= 0.25


def test_dci_duplicate_is_incomplete(results):
  # Disentangled (each dim about one factor) but factor 0 is split over two dims.
  r = results["duplicate"]
  assert r["dci_disentanglement"] >= 0.95
  assert r["dci_completeness"] < r["dci_disentanglement"]


def test_dci_importance_matrix(codes, factors):
  out = dis.dci(codes["identity"], factors, return_importance=True)
  R = out["importance_matrix"]
  assert R.shape == (D, K)
  assert np.array_equal(np.argmax(R, axis=0), np.arange(K))


# ----------------------------------------------------------------------------- SAP


def test_sap(results, codes, factors):
  assert results["identity"]["sap"] >= 0.7
  assert results["constant"]["sap"] <= 0.05
  assert results["noise"]["sap"] <= 0.05
  assert results["rotation"]["sap"] <= 0.15
  cont = dis.sap(codes["identity"], factors, continuous=True)
  assert cont >= 0.9
  assert dis.sap(codes["constant"], factors, continuous=True) == 0.0
  # disentanglement_lib's LinearSVC variant runs and ranks identity above noise.
  svm_id = dis.sap(codes["identity"], factors, classifier="linear_svm")
  svm_noise = dis.sap(codes["noise"], factors, classifier="linear_svm")
  assert svm_id > svm_noise


# ----------------------------------------------------------------------------- misc


def test_compute_all_flat_json(results):
  keys = {"mig", "factor_vae", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap"}
  for r in results.values():
    assert set(r) == keys
    assert all(type(v) is float and math.isfinite(v) and -1e-9 <= v <= 1 + 1e-9 for v in r.values())
    json.dumps(r)


def test_single_valued_factor_is_ignored(codes, factors):
  n = 800
  c, factors = codes["identity"][:n], factors[:n]
  f2 = np.concatenate([factors, np.full((n, 1), 4)], axis=1)
  assert dis.mig(c, f2) == pytest.approx(dis.mig(c, factors))
  assert np.isnan(dis.mig_per_factor(c, f2)[-1])
  assert dis.sap(c, f2) == pytest.approx(dis.sap(c, factors))
  assert dis.dci(c, f2) == pytest.approx(dis.dci(c, factors))
  assert dis.factor_vae_score(c, f2) >= 0.95
  r = dis.compute_all(c, f2)
  assert all(math.isfinite(v) for v in r.values())


def test_all_degenerate():
  rng = np.random.default_rng(0)
  f = np.zeros((50, 2), dtype=int)
  r = dis.compute_all(rng.normal(size=(50, 3)), f)
  assert r == {k: 0.0 for k in r}
  # One code dim, one factor: finite, in range.
  f1 = rng.integers(0, 3, size=(200, 1))
  r1 = dis.compute_all(f1 + 0.01 * rng.normal(size=(200, 1)), f1)
  assert all(math.isfinite(v) for v in r1.values())
  assert r1["mig"] >= 0.9 and r1["factor_vae"] == 1.0


def test_rejects_bad_input():
  with pytest.raises(ValueError):
    dis.mig(np.array([[np.nan], [1.0]]), np.array([[0], [1]]))
  with pytest.raises(ValueError):
    dis.mig(np.zeros((3, 2)), np.zeros((4, 1), dtype=int))
  with pytest.raises(ValueError):
    dis.mig(np.zeros((3, 2)), np.array([[0.5], [1.0], [0.0]]))
