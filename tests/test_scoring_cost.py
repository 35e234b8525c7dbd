"""The cheaper scoring of issue 23: NAP's fit without an SVD (known answer: numpy's SVD), the choice of scores
(eval.scores) and what results hold when some are not computed, scoring's progress, and the persistent XLA
compilation cache. No timings here (benchmarks/main_job.py measures them)."""

import jax.numpy as jnp
import numpy as np
import pytest

from dcvae_jax.evaluators import anomaly_scores

# ----------------------------------------------------------------------------------------------------------
# NAP: principal_directions (Gram eigendecomposition) against numpy's SVD, an independent reference.


def _svd_nap(d_fit, d_test, rtol=1e-5):
  """NAP by the definition, with numpy's SVD, in float64: ||(d - m) V diag(1/s)||^2 over s > rtol s_1."""
  mean = d_fit.mean(0)
  _, s, vt = np.linalg.svd(d_fit - mean, full_matrices=False)
  keep = s > rtol * s[0]
  return np.sum((((d_test - mean) @ vt[keep].T) / s[keep]) ** 2, axis=1), int(keep.sum())


def _gram_nap(d_fit, d_test, rtol=1e-5):
  """The same from principal_directions (float64)."""
  mean = d_fit.mean(0)
  s, v = anomaly_scores.principal_directions(d_fit - mean)
  keep = s > rtol * s[0]
  return np.sum((((d_test - mean) @ v[:, keep]) / s[keep]) ** 2, axis=1), int(keep.sum())


def _differences(n, dim, seed, *, dead=0, dependent=0, decades=3.0):
  """Random 'training differences' (n, dim) with singular values spread over ``decades``, ``dead`` all-zero
  columns (a dead unit) and ``dependent`` columns that are combinations of others (an exact rank deficit)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, dim)) * np.logspace(0.0, -decades, dim)[rng.permutation(dim)] + rng.normal(size=dim)
  cols = rng.permutation(dim)
  x[:, cols[:dead]] = 0.0
  for j in cols[dead : dead + dependent]:
    a, b = rng.choice(cols[dead + dependent :], 2, replace=False)
    x[:, j] = 0.5 * x[:, a] - 2.0 * x[:, b]
  return x


@pytest.mark.parametrize(
  "n,dim,dead,dependent",
  [
    (300, 120, 0, 0),  # n > D: the D x D Gram matrix
    (80, 200, 0, 0),  # n < D: the n x n Gram matrix
    (300, 120, 15, 10),  # dead units and exactly dependent columns: a rank deficit
    (60, 200, 30, 20),
  ],
)
def test_principal_directions_give_the_svds_nap(n, dim, dead, dependent):
  d_fit = _differences(n, dim, seed=n + dim, dead=dead, dependent=dependent)
  d_test = _differences(50, dim, seed=1) * 1.5 + 0.1  # test points off the training subspace, too
  want, k_want = _svd_nap(d_fit, d_test)
  got, k_got = _gram_nap(d_fit, d_test)
  assert k_got == k_want == min(n - 1, dim - dead - dependent)  # centring removes one direction
  np.testing.assert_allclose(got, want, rtol=1e-9)

  # the singular values and the kept subspace (the vectors only up to sign)
  centred = d_fit - d_fit.mean(0)
  s_want = np.linalg.svd(centred, compute_uv=False)
  s_got, v = anomaly_scores.principal_directions(centred)
  np.testing.assert_allclose(s_got[:k_want], s_want[:k_want], rtol=1e-9)
  np.testing.assert_allclose(v[:, :k_want].T @ v[:, :k_want], np.eye(k_want), atol=1e-9)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  proj_want = vt[:k_want].T @ vt[:k_want]
  np.testing.assert_allclose(v[:, :k_want] @ v[:, :k_want].T, proj_want, atol=1e-9)


def test_fit_nap_scores_equal_the_svd_reference_in_float32():
  """The whole path the scorer uses (fit_nap's float32 statistics, then nap on the device) against the SVD."""
  d_fit = _differences(400, 150, seed=3, dead=12, dependent=5)
  d_test = _differences(64, 150, seed=4) * 2.0
  want, _ = _svd_nap(d_fit, d_test)
  stats = anomaly_scores.fit_nap(d_fit)
  assert stats["basis"].shape == (150, 150) and stats["inv_scale"].shape == (150,)
  assert np.count_nonzero(stats["inv_scale"]) == 150 - 12 - 5
  got = np.asarray(anomaly_scores.nap(jnp.asarray(d_test, jnp.float32), stats), np.float64)
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_principal_directions_of_degenerate_inputs():
  s, v = anomaly_scores.principal_directions(np.zeros((5, 4)))  # nothing varies
  assert s.shape == (0,) and v.shape == (4, 0)
  x = np.zeros((6, 3))
  x[:, 1] = np.arange(6) - 2.5  # one direction: e_1, singular value ||x[:, 1]||
  s, v = anomaly_scores.principal_directions(x)
  np.testing.assert_allclose(s, [np.linalg.norm(x[:, 1])])
  np.testing.assert_allclose(np.abs(v[:, 0]), [0.0, 1.0, 0.0])
