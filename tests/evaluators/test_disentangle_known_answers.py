"""Known-answer tests for the classifier-based disentanglement scores (DCI, SAP, FactorVAE score).

Each score is checked twice: its pure matrix -> score step on a hand-written matrix against numbers
worked out by hand (or by an independent numpy formula in the test), and end to end on codes whose
answer is known exactly -- codes that copy the factors of a full factorial grid, where the factors
are exactly uncorrelated and every combination occurs equally often.
"""

import math

import numpy as np
import pytest

from dcvae_jax.evaluators.disentangle import factor_vae as disentangle_factor_vae
from dcvae_jax.evaluators.disentangle import metrics as dis
from dcvae_jax.evaluators.disentangle import predictive as disentangle_predictive

SIZES = (2, 3, 4)
PERM = (2, 0, 1)  # code dim j copies factor PERM[j]; a 3-cycle, so a transposed matrix is caught


def _grid(sizes, reps):
  """Every combination of factor values, ``reps`` times: (prod(sizes) * reps, len(sizes)) int."""
  axes = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
  return np.tile(np.stack(axes, -1).reshape(-1, len(sizes)), (reps, 1))


@pytest.fixture(scope="module")
def grid():
  return _grid(SIZES, 25)  # 600 rows


@pytest.fixture(scope="module")
def copies(grid):
  """Dim j = factor PERM[j] exactly, plus one constant dim: (600, 4)."""
  return np.concatenate([grid[:, PERM].astype(float), np.zeros((len(grid), 1))], axis=1)


def _perm_matrix(d, K):
  """(d, K): 1 where code dim j copies factor PERM[j]."""
  P = np.zeros((d, K))
  P[np.arange(len(PERM)), PERM] = 1.0
  return P


def test_reexported_from_disentangle():
  for name in dis.__all__:
    assert hasattr(dis, name), name
  assert dis.dci is disentangle_predictive.dci and dis.sap is disentangle_predictive.sap
  assert dis.factor_vae_score is disentangle_factor_vae.factor_vae_score


# ----------------------------------------------------------------------------- DCI


def _entropy(p, base):
  """Entropy (base ``base``) of a distribution given as non-negative weights; 0 log 0 = 0."""
  p = np.asarray(p, dtype=float) / np.sum(p)
  p = p[p > 0]
  return float(-np.sum(p * np.log(p)) / np.log(base))


def _dci_numpy(R):
  """Eastwood & Williams (2018) from the definition, without scipy and without the 1e-11."""
  d, K = R.shape
  rho_code, rho_factor = R.sum(axis=1) / R.sum(), R.sum(axis=0) / R.sum()
  D = sum(rho_code[i] * (1 - _entropy(R[i], K)) for i in range(d) if R[i].sum() > 0)
  C = sum(rho_factor[k] * (1 - _entropy(R[:, k], d)) for k in range(K) if R[:, k].sum() > 0)
  return D, C


def test_dci_from_importance_by_hand():
  # 3 code dims x 2 factors, so the two entropy bases differ (K = 2 for D, d = 3 for C).
  R = np.array([[0.6, 0.2], [0.0, 0.2], [0.0, 0.0]])
  # D: code 0 has P = (3/4, 1/4), H_2 = 2 - (3/4) log2 3, weight 0.8; code 1 P = (0, 1), H = 0,
  #    weight 0.2; code 2 has weight 0.
  # C: factor 0 has P = (1, 0, 0), H = 0, weight 0.6; factor 1 has P = (1/2, 1/2, 0),
  #    H_3 = log_3 2, weight 0.4.
  expected_d = 0.8 * (1 - (2 - 0.75 * math.log2(3))) + 0.2
  expected_c = 0.6 + 0.4 * (1 - math.log(2) / math.log(3))
  assert expected_d == pytest.approx(0.35097750043269)
  assert expected_c == pytest.approx(0.74762809856)
  D, C = dis.dci_from_importance(R)
  assert D == pytest.approx(expected_d, abs=1e-8)
  assert C == pytest.approx(expected_c, abs=1e-8)
  # The transpose swaps the roles (and the bases), so a swapped axis cannot pass.
  Dt, Ct = dis.dci_from_importance(R.T)
  assert Dt == pytest.approx(expected_c, abs=1e-8) and Ct == pytest.approx(expected_d, abs=1e-8)


def test_dci_from_importance_limits():
  # One factor per code (any permutation, any scale): D = C = 1.
  D, C = dis.dci_from_importance(3.0 * _perm_matrix(3, 3))
  assert D == pytest.approx(1.0, abs=1e-8) and C == pytest.approx(1.0, abs=1e-8)
  # Every code equally important for every factor: D = C = 0.
  D, C = dis.dci_from_importance(np.full((4, 3), 0.25))
  assert D == pytest.approx(0.0, abs=1e-8) and C == pytest.approx(0.0, abs=1e-8)
  # One factor: D = 1 whatever R; one code dim: C = 1.
  assert dis.dci_from_importance(np.array([[0.3], [0.7]]))[0] == pytest.approx(1.0)
  assert dis.dci_from_importance(np.array([[0.3, 0.7]]))[1] == pytest.approx(1.0)
  assert dis.dci_from_importance(np.zeros((3, 2))) == (0.0, 0.0)


def test_dci_from_importance_matches_definition():
  R = np.random.default_rng(0).random((5, 3)) ** 3  # uneven rows and columns
  D, C = dis.dci_from_importance(R)
  eD, eC = _dci_numpy(R)
  assert D == pytest.approx(eD, abs=1e-8) and C == pytest.approx(eC, abs=1e-8)
  assert 0.05 < D < 0.95 and 0.05 < C < 0.95 and abs(D - C) > 0.01  # a non-trivial case


def test_dci_copies_known_answer(copies, grid):
  """Each factor is read off one dim exactly: every tree splits on that dim only."""
  out = dis.dci(copies, grid, seed=0, return_importance=True, n_jobs=1)
  assert out["importance_matrix"].shape == (4, 3)  # (code dims, factors)
  np.testing.assert_allclose(out["importance_matrix"], _perm_matrix(4, 3), atol=1e-12)
  assert out["informativeness"] == 1.0
  assert out["disentanglement"] == pytest.approx(1.0, abs=1e-8)
  assert out["completeness"] == pytest.approx(1.0, abs=1e-8)


def test_dci_end_to_end_matches_definition(grid):
  """On a mixed code, D and C are the definition applied to dci's own importance matrix, and
  informativeness is the mean test accuracy of a forest refit on the same split."""
  from sklearn.ensemble import RandomForestClassifier

  rng = np.random.default_rng(1)
  codes = grid @ rng.normal(size=(3, 3)) + 0.3 * rng.normal(size=(len(grid), 3))
  out = dis.dci(codes, grid, seed=4, return_importance=True, n_jobs=1)
  D, C = _dci_numpy(out["importance_matrix"])
  assert out["disentanglement"] == pytest.approx(D, abs=1e-8)
  assert out["completeness"] == pytest.approx(C, abs=1e-8)
  # Same split as dci: permutation from default_rng(seed), the first round(0.25 N) rows are test.
  perm = np.random.default_rng(4).permutation(len(grid))
  te, tr = perm[:150], perm[150:]
  accs, R = [], []
  for k in range(3):
    m = RandomForestClassifier(n_estimators=50, max_features=None, min_samples_leaf=5, random_state=4, n_jobs=1).fit(
      codes[tr], grid[tr, k]
    )
    accs.append(m.score(codes[te], grid[te, k]))
    R.append(m.feature_importances_)
  np.testing.assert_allclose(out["importance_matrix"], np.stack(R, axis=1), atol=1e-12)
  assert out["informativeness"] == pytest.approx(np.mean(accs), abs=1e-12)


# ----------------------------------------------------------------------------- SAP


def test_sap_from_matrix_by_hand():
  S = np.array([[0.9, 0.5], [0.6, 0.5], [0.1, 0.2]])
  # Columns are factors: gaps 0.9 - 0.6 = 0.3 and 0.5 - 0.5 = 0 -> mean 0.15. (Gaps over rows
  # would give 0.2; top-minus-worst would give 0.55.)
  assert dis.sap_from_matrix(S) == pytest.approx(0.15, abs=1e-12)
  assert dis.sap_from_matrix(S[:, :1]) == pytest.approx(0.3, abs=1e-12)
  # d == 1: the runner-up is the constant predictor's score, capped at the top score.
  one = np.array([[0.8, 0.3]])
  assert dis.sap_from_matrix(one, np.array([0.5, 0.5])) == pytest.approx((0.3 + 0.0) / 2)
  assert dis.sap_from_matrix(one) == pytest.approx((0.8 + 0.3) / 2)  # chance defaults to 0


def test_sap_continuous_known_answer(copies, grid):
  # Copies of exactly uncorrelated factors: S = R^2 is the permutation matrix, every gap is 1.
  score, S = dis.sap(copies, grid, continuous=True, return_matrix=True)
  np.testing.assert_allclose(S, _perm_matrix(4, 3), atol=1e-12)
  assert score == pytest.approx(1.0, abs=1e-12)
  # Factor 0 copied into two dims: its gap is 0, the other two stay 1 -> 2/3.
  dup = np.concatenate([grid, grid[:, :1]], axis=1).astype(float)
  score, S = dis.sap(dup, grid, continuous=True, return_matrix=True)
  assert S[0, 0] == S[3, 0] == pytest.approx(1.0)
  assert score == pytest.approx(2 / 3, abs=1e-12)


def _gaps_numpy(S):
  """Per factor (column): best minus second-best score."""
  return np.array([np.diff(np.sort(S[:, k])[-2:])[0] for k in range(S.shape[1])])


def test_sap_discrete_known_answer(copies, grid):
  # The copying dim predicts its factor perfectly; every other dim is independent of it.
  score, S = dis.sap(copies, grid, return_matrix=True)
  assert S.shape == (4, 3)
  assert np.all(S[np.arange(3), PERM] == 1.0)
  assert np.all(S[_perm_matrix(4, 3) == 0] < 0.6)
  assert score == pytest.approx(np.mean(_gaps_numpy(S)), abs=1e-12)
  assert score > 0.4
  # Factor 0 predicted equally well by two identical dims: gap exactly 0 for that factor.
  dup = np.concatenate([grid, grid[:, :1]], axis=1).astype(float)
  score, S = dis.sap(dup, grid, return_matrix=True)
  assert np.array_equal(S[0], S[3]) and S[0, 0] == 1.0
  gaps = _gaps_numpy(S)
  assert gaps[0] == 0.0 and np.all(gaps[1:] > 0.4)
  assert score == pytest.approx(np.mean(gaps), abs=1e-12)


# ----------------------------------------------------------------------------- FactorVAE


def test_majority_vote_by_hand():
  # votes[k, j]: how often dim j won while factor k was fixed (3 factors, 4 dims).
  votes = np.array([[5, 0, 2, 1], [1, 7, 2, 0], [0, 1, 3, 0]])
  classifier = dis.majority_vote_classifier(votes)
  assert classifier.tolist() == [0, 1, 2, 0]  # per dim, the factor with most votes
  assert dis.majority_vote_accuracy(votes, classifier) == pytest.approx((5 + 7 + 3 + 1) / 22)
  # Evaluated on other votes with the training classifier (not refit on them).
  eval_votes = np.array([[3, 1, 0, 2], [0, 4, 1, 0], [1, 0, 2, 1]])
  assert dis.majority_vote_accuracy(eval_votes, classifier) == pytest.approx((3 + 4 + 2 + 2) / 15)
  # Ties go to the lowest factor; no votes at all score 0.
  assert dis.majority_vote_classifier(np.array([[2, 0], [2, 1]])).tolist() == [0, 1]
  assert dis.majority_vote_accuracy(np.zeros((2, 3), dtype=int), np.zeros(3, dtype=int)) == 0.0


def test_majority_vote_train_accuracy_is_sum_of_column_maxima():
  votes = np.random.default_rng(0).integers(0, 50, size=(4, 6))
  acc = dis.majority_vote_accuracy(votes, dis.majority_vote_classifier(votes))
  assert acc == pytest.approx(votes.max(axis=0).sum() / votes.sum(), abs=1e-15)


def test_factor_vae_copies_known_answer(copies, grid):
  r = dis.factor_vae_score(copies, grid, seed=0, num_train=2000, num_eval=1000, return_details=True)
  assert r["eval_accuracy"] == 1.0 and r["train_accuracy"] == 1.0
  assert r["active_dims"].tolist() == [0, 1, 2]  # the constant dim is pruned
  assert r["factor_columns"].tolist() == [0, 1, 2]
  votes = r["votes"]
  assert votes.shape == (3, 3) and votes.sum() == 2000
  # Fixing factor k always makes dim PERM^-1[k] the (only) zero-variance dim.
  assert np.array_equal(votes > 0, _perm_matrix(3, 3).T > 0)
  assert dis.majority_vote_classifier(votes).tolist() == list(PERM)
  assert dis.factor_vae_score(copies, grid, seed=0, num_train=2000, num_eval=1000) == 1.0


def test_factor_vae_train_accuracy_matches_votes(grid):
  rng = np.random.default_rng(2)
  codes = grid @ rng.normal(size=(3, 4)) + rng.normal(size=(len(grid), 4))
  r = dis.factor_vae_score(codes, grid, seed=5, num_train=1500, num_eval=500, return_details=True)
  v = r["votes"]
  assert v.sum() == 1500
  assert r["train_accuracy"] == pytest.approx(v.max(axis=0).sum() / v.sum(), abs=1e-15)
  assert 0.3 < r["eval_accuracy"] < 1.0  # informative but not disentangled


def test_factor_vae_eval_uses_the_training_classifier(grid, monkeypatch):
  """The score is the accuracy on fresh votes of the classifier fit on the training votes
  (refitting it on the evaluation votes would inflate the score)."""
  calls = []
  real = disentangle_factor_vae.majority_vote_accuracy

  def spy(votes, classifier):
    calls.append((np.array(votes), np.array(classifier)))
    return real(votes, classifier)

  monkeypatch.setattr(disentangle_factor_vae, "majority_vote_accuracy", spy)
  codes = np.random.default_rng(3).normal(size=(len(grid), 5))  # uninformative code
  r = dis.factor_vae_score(codes, grid, seed=1, num_train=300, num_eval=40, return_details=True)
  (train_votes, c_train), (eval_votes, c_eval) = calls
  assert np.array_equal(train_votes, r["votes"]) and eval_votes.sum() == 40
  assert np.array_equal(c_train, np.argmax(r["votes"], axis=0))
  assert np.array_equal(c_eval, c_train)
  cols = np.arange(eval_votes.shape[1])
  assert r["eval_accuracy"] == pytest.approx(eval_votes[c_train, cols].sum() / 40, abs=1e-15)
