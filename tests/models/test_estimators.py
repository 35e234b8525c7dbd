"""Known-answer tests for dcvae_jax.models.estimators (every test asserts numbers)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from scipy.special import logsumexp as np_logsumexp

from dcvae_jax.models import estimators as est

# Jitted entry points (one compilation per shape instead of one per primitive); the plain,
# un-jitted calls are compared with these in test_jit_and_vmap_match_plain_calls.
_lqz = jax.jit(est.log_qz_estimates, static_argnames=("method",))
_dec = jax.jit(est.elbo_decomposition, static_argnames=("method",))
_tc = jax.jit(est.total_correlation, static_argnames=("method",))

D = 4
# A correlated covariance for the means; with posterior variance S2 the aggregate posterior is
# exactly N(0, C + S2 I) in the large-data limit.
C = np.array([[1.0, 0.9, 0.5, 0.2], [0.9, 1.0, 0.5, 0.2], [0.5, 0.5, 1.0, 0.3], [0.2, 0.2, 0.3, 1.0]])


def _codes(rng, b, mean_cov, s2, mean=0.0):
  """mu ~ N(mean, mean_cov), z = mu + sqrt(s2) eps; float32 (z, mu, logvar)."""
  mu = mean + rng.multivariate_normal(np.zeros(mean_cov.shape[0]), mean_cov, size=b)
  z = mu + math.sqrt(s2) * rng.normal(size=mu.shape)
  logvar = np.full(mu.shape, math.log(s2))
  return tuple(a.astype(np.float32) for a in (z, mu, logvar))


def _np_closed_tc(cov):
  return 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])


def _released_weight_matrix(b, n):
  """Chen et al.'s released `_log_importance_weight_matrix`, rebuilt in numpy (not log)."""
  m = b - 1
  strat = (n - m) / (n * m)
  w = np.full((b, b), 1.0 / m)
  w.flat[:: m + 1] = 1.0 / n  # stride M+1 = B: column 0 of every row, not the diagonal
  w.flat[1 :: m + 1] = strat  # column 1 of every row
  w[m - 1, 0] = strat
  return w


def _paper_weight_matrix(b, n):
  """Chen et al. 2018 MSS weights written out entry by entry (anchor = row)."""
  w = np.zeros((b, b))
  for i in range(b):
    for j in range(b):
      if j == i:
        w[i, j] = 1.0 / n
      elif j == (i + 1) % b:
        w[i, j] = (n - b + 1) / (n * (b - 1))
      else:
        w[i, j] = 1.0 / (b - 1)
  return w


def _np_log_qz(z, mu, logvar, w):
  pair = scipy.stats.norm.logpdf(z[:, None, :], mu[None], np.exp(0.5 * logvar[None]))
  lw = np.log(w)
  return (np_logsumexp(lw + pair.sum(2), axis=1), np_logsumexp(lw[:, :, None] + pair, axis=1))


# --------------------------------------------------------------------------- densities and KL


def test_gaussian_log_density_matches_scipy():
  rng = np.random.default_rng(0)
  x, mu = rng.normal(size=(2, 7, 3)) * 2
  logvar = rng.normal(size=(7, 3))
  got = est.gaussian_log_density(jnp.asarray(x), jnp.asarray(mu), jnp.asarray(logvar))
  want = scipy.stats.norm.logpdf(x, mu, np.exp(0.5 * logvar))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  # log N(0; 0, 1) = -0.5 log(2 pi)
  assert float(est.gaussian_log_density(0.0, 0.0, 0.0)) == pytest.approx(-0.9189385, abs=1e-6)


def test_kl_zero_for_identical_and_matches_monte_carlo():
  assert np.all(np.asarray(est.kl_diag_gaussians(jnp.zeros((3, 5)), jnp.zeros((3, 5)))) == 0.0)
  rng = np.random.default_rng(1)
  mu_q = np.array([0.5, -1.0, 2.0])
  lv_q = np.array([-1.0, 0.3, 0.0])
  mu_p = np.array([0.0, 0.5, 1.0])
  lv_p = np.array([0.0, -0.5, 1.0])
  got = np.asarray(est.kl_diag_gaussians(mu_q, lv_q, mu_p, lv_p))
  # independent Monte Carlo in numpy: E_q[log q - log p]
  n = 400_000
  x = mu_q + np.exp(0.5 * lv_q) * rng.normal(size=(n, 3))
  ratio = scipy.stats.norm.logpdf(x, mu_q, np.exp(0.5 * lv_q)) - scipy.stats.norm.logpdf(x, mu_p, np.exp(0.5 * lv_p))
  se = ratio.std(0) / math.sqrt(n)
  assert np.all(np.abs(got - ratio.mean(0)) < 5 * se + 1e-4)
  # the closed forms by hand for dimension 0: 0.5 (0 + 1 + e^-1 + 0.25 - 1) - (-1) ...
  assert got[0] == pytest.approx(0.5 * (0.0 - (-1.0) + math.exp(-1.0) + 0.25 - 1.0), rel=1e-6)
  # broadcasting against the default N(0, 1) prior: shape (B, d)
  assert est.kl_diag_gaussians(jnp.zeros((2, 1)), jnp.zeros((1, 3))).shape == (2, 3)


def test_gaussian_total_correlation_closed_form():
  assert float(est.gaussian_total_correlation(np.diag([1.0, 4.0, 0.5]))) == pytest.approx(0.0, abs=1e-6)
  rho = 0.8  # bivariate: TC = -0.5 log(1 - rho^2)
  cov = np.array([[2.0, rho * 2.0], [rho * 2.0, 2.0]])
  assert float(est.gaussian_total_correlation(cov)) == pytest.approx(-0.5 * math.log(1 - rho**2), rel=1e-5)
  assert float(est.gaussian_total_correlation(C)) == pytest.approx(_np_closed_tc(C), rel=1e-5)
  # a stack of covariances (..., d, d) gives one TC each
  stack = np.stack([C, np.diag([1.0, 2.0, 3.0, 4.0]), 2.0 * C])
  np.testing.assert_allclose(est.gaussian_total_correlation(stack), [_np_closed_tc(m) for m in stack], rtol=1e-5)


# --------------------------------------------------------------------------- permute_dims


def test_permute_dims_permutes_each_column_independently():
  rng = np.random.default_rng(2)
  cov = np.full((D, D), 0.95) + 0.05 * np.eye(D)
  z = rng.multivariate_normal(np.zeros(D), cov, size=4096).astype(np.float32)
  zp = np.asarray(est.permute_dims(jnp.asarray(z), jax.random.PRNGKey(0)))
  # each column keeps its multiset of values
  np.testing.assert_array_equal(np.sort(zp, axis=0), np.sort(z, axis=0))
  # cross-column correlation is removed (input has 0.95)
  r = np.corrcoef(zp.T)[~np.eye(D, dtype=bool)]
  assert np.corrcoef(z.T)[0, 1] > 0.9
  assert np.max(np.abs(r)) < 0.06
  # not a row permutation: almost no permuted row is a row of the input
  rows = {tuple(row) for row in z}
  assert sum(tuple(row) in rows for row in zp) < 10

  # each column used its own permutation
  def source_rows(k):
    order = np.argsort(z[:, k])
    return order[np.searchsorted(z[order, k], zp[:, k])]

  assert np.mean(source_rows(0) == source_rows(1)) < 0.01


# --------------------------------------------------------------------------- MSS weights


def test_mss_weight_matrix_entries_follow_the_paper():
  b, n = 6, 100
  w = np.exp(np.asarray(est.log_mixture_weights(b, n)))
  np.testing.assert_allclose(w, _paper_weight_matrix(b, n), rtol=1e-6)
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
  assert w[2, 2] == pytest.approx(1 / 100)  # self: 1/N
  assert w[2, 3] == pytest.approx(95 / (100 * 5))  # designated: (N-M+1)/(N(M-1))
  assert w[5, 0] == pytest.approx(95 / (100 * 5))  # ... cyclically for the last row
  assert w[2, 0] == pytest.approx(1 / 5)  # the remaining M-2: 1/(M-1)
  # MWS: every entry 1/(N M), rows sum to 1/N (the documented shift)
  wm = np.exp(np.asarray(est.log_mixture_weights(b, n, method="mws")))
  np.testing.assert_allclose(wm, 1 / (n * b), rtol=1e-6)


def test_released_code_stride_bug_regression():
  """The released matrix puts 1/N in column 0, not on the diagonal; ours does not, and ours is
  unbiased (E over batches of the mixture = q(z)) while the released one is not."""
  b, n = 4, 7
  ours = np.exp(np.asarray(est.log_mixture_weights(b, n)))
  rel = _released_weight_matrix(b, n)
  assert np.allclose(np.diag(rel)[2:], 1 / (b - 1))  # released: anchor weighted 1/M
  assert np.allclose(rel[:, 0][[0, 1, 3]], 1 / n)  # ... and 1/N lands in column 0
  assert np.allclose(np.diag(ours), 1 / n)
  assert np.abs(ours - rel).max() > 0.15
  assert rel[b - 2].sum() == pytest.approx(1 - 1 / n + (n - 3) / (3 * n))  # a row not summing to 1

  # Exact expectation by enumeration: a data set of n 1-d Gaussians, the anchor x_a at batch
  # position i, the other positions an ordered sample without replacement of the rest.
  rng = np.random.default_rng(3)
  mus, sds = rng.normal(size=n), np.exp(rng.normal(size=n) * 0.3)
  zq = 0.3
  dens = scipy.stats.norm.pdf(zq, mus, sds)
  q_true = dens.mean()
  for w, name in ((ours, "ours"), (rel, "released")):
    worst = 0.0
    for a in range(n):
      for i in range(b):
        others = [k for k in range(n) if k != a]
        vals = []
        for perm in itertools.permutations(others, b - 1):
          batch = list(perm[:i]) + [a] + list(perm[i:])
          vals.append(np.dot(w[i], dens[batch]))
        worst = max(worst, abs(np.mean(vals) - q_true) / q_true)
    if name == "ours":
      assert worst < 1e-6  # float32 weights
    else:
      assert worst > 0.05

  # On codes: our estimator equals an independent numpy computation with the paper's matrix,
  # and differs from the released matrix's result.
  bb, nn = 64, 5000
  z, mu, lv = _codes(np.random.default_rng(4), bb, C, 0.1)
  lq, lqj = _lqz(z, mu, lv, dataset_size=nn)
  lq_np, lqj_np = _np_log_qz(z.astype(np.float64), mu, lv, _paper_weight_matrix(bb, nn))
  np.testing.assert_allclose(np.asarray(lq), lq_np, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(lqj), lqj_np, rtol=1e-4, atol=1e-4)
  lq_rel, _ = _np_log_qz(z.astype(np.float64), mu, lv, _released_weight_matrix(bb, nn))
  assert np.mean(np.abs(lq_rel - lq_np)) > 0.5


# --------------------------------------------------------------------------- TC known answers


@pytest.fixture(scope="module")
def correlated_codes():
  s2 = 0.2
  z, mu, lv = _codes(np.random.default_rng(5), 2048, C, s2)
  return z, mu, lv, _np_closed_tc(C + s2 * np.eye(D))


def test_mss_tc_approaches_closed_form(correlated_codes):
  z, mu, lv, closed = correlated_codes
  b = z.shape[0]
  assert closed == pytest.approx(0.559, abs=1e-3)
  tc = float(_tc(z, mu, lv, dataset_size=b))
  assert abs(tc - closed) < 0.1, (tc, closed)
  # MWS reads TC + (d - 1) log(N) against a normalised mixture (here N = M = B).
  tc_mws = float(_tc(z, mu, lv, dataset_size=b, method="mws"))
  assert tc_mws > 20.0
  assert abs(tc_mws - (D - 1) * math.log(b) - closed) < 0.1
  assert abs(tc_mws - (D - 1) * math.log(b) - tc) < 0.02


def test_mws_shift_is_constant_and_leaves_gradients_unchanged():
  z, mu, lv = _codes(np.random.default_rng(6), 128, C, 0.2)

  def tc(mu, n):  # gradient with respect to the posterior means, codes held fixed
    return _tc(z, mu, lv, dataset_size=n, method="mws")

  v1, g1 = jax.value_and_grad(tc)(jnp.asarray(mu), 1000.0)
  v2, g2 = jax.value_and_grad(tc)(jnp.asarray(mu), 60000.0)
  assert float(v2 - v1) == pytest.approx((D - 1) * math.log(60.0), abs=1e-3)
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-4, atol=1e-5)
  assert np.abs(np.asarray(g1)).max() > 1e-3  # a real gradient, not zeros


def test_independent_codes_decomposition():
  """mu ~ N(0, (1-s2) I), z = mu + sqrt(s2) eps: q(z) = N(0, I) = p(z), so TC = DWKL = 0 and
  MI = 0.5 d log(1/s2) (Gaussian channel)."""
  s2, b = 0.5, 2048
  z, mu, lv = _codes(np.random.default_rng(7), b, (1 - s2) * np.eye(D), s2)
  dec = {k: float(v) for k, v in _dec(z, mu, lv, dataset_size=b).items()}
  assert abs(dec["tc"]) < 0.03
  assert abs(dec["dwkl"]) < 0.03
  assert dec["mi"] == pytest.approx(0.5 * D * math.log(1 / s2), abs=0.1)
  # telescoping: mi + tc + dwkl == mean [log q(z|x) - log p(z)], exactly
  lq_x = scipy.stats.norm.logpdf(z, mu, np.exp(0.5 * lv)).sum(1)
  lp = scipy.stats.norm.logpdf(z).sum(1)
  assert sum(dec.values()) == pytest.approx(np.mean(lq_x - lp), abs=2e-4)
  for method in ("mss", "mws"):  # also with a per-example prior of shape (B, d)
    pm = np.linspace(-1, 1, b * D, dtype=np.float32).reshape(b, D)
    d2 = _dec(z, mu, lv, dataset_size=b, method=method, prior_mu=pm, prior_logvar=0.3)
    lp2 = scipy.stats.norm.logpdf(z, pm, math.exp(0.15)).sum(1)
    assert float(sum(d2.values())) == pytest.approx(np.mean(lq_x - lp2), abs=5e-4)


# --------------------------------------------------------------------------- conditions


def test_single_condition_equals_unconditioned():
  z, mu, lv = _codes(np.random.default_rng(8), 96, C, 0.2)
  for method in ("mss", "mws"):
    base = _lqz(z, mu, lv, dataset_size=1000, method=method)
    for cond, ds in ((np.zeros(96, np.int32), 1000), (np.full(96, 2, np.int32), np.array([5.0, 7.0, 1000.0]))):
      got = _lqz(z, mu, lv, dataset_size=ds, method=method, conditions=cond)
      for g, w in zip(got, base, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)


def _two_group_codes(rng, b, s2=0.25):
  """Condition c in {0, 1} (interleaved); given c, mu ~ N(m_c, (1 - s2) I), m_c = +-1.5."""
  c = rng.integers(0, 2, size=b).astype(np.int32)
  means = (np.where(c[:, None] == 0, 1.5, -1.5) * np.ones((1, D))).astype(np.float32)
  mu = (means + math.sqrt(1 - s2) * rng.normal(size=(b, D))).astype(np.float32)
  z = (mu + math.sqrt(s2) * rng.normal(size=(b, D))).astype(np.float32)
  return z, mu, np.full((b, D), math.log(s2), np.float32), c, means


def test_two_conditions_match_separate_groups():
  z, mu, lv, c, _ = _two_group_codes(np.random.default_rng(9), 256)
  n_c = np.array([30000.0, 20000.0])
  for method in ("mss", "mws"):
    lq, lqj = _lqz(z, mu, lv, dataset_size=n_c, method=method, conditions=c)
    sep_lq, sep_lqj = np.zeros(len(c)), np.zeros(z.shape)
    for k in (0, 1):  # each group alone, unconditioned, with its own N_c
      g = c == k
      lq_k, lqj_k = _lqz(z[g], mu[g], lv[g], dataset_size=n_c[k], method=method)
      sep_lq[g], sep_lqj[g] = lq_k, lqj_k
    np.testing.assert_allclose(np.asarray(lq), sep_lq, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(lqj), sep_lqj, rtol=1e-5, atol=1e-4)
    # batch means = the per-group means weighted by group size
    dec = _dec(z, mu, lv, dataset_size=n_c, method=method, conditions=c)
    lq_x = scipy.stats.norm.logpdf(z, mu, np.exp(0.5 * lv)).sum(1)
    lp = scipy.stats.norm.logpdf(z).sum(1)
    frac = np.mean(c == 0)
    for key, per_example in (("mi", lq_x - sep_lq), ("tc", sep_lq - sep_lqj.sum(1)), ("dwkl", sep_lqj.sum(1) - lp)):
      want = frac * per_example[c == 0].mean() + (1 - frac) * per_example[c == 1].mean()
      assert float(dec[key]) == pytest.approx(want, abs=1e-4)


def test_total_correlation_is_the_decompositions_tc_with_or_without_conditions():
  z, mu, lv, c, _ = _two_group_codes(np.random.default_rng(13), 128)
  n_c = np.array([3000.0, 2000.0])
  for method in ("mss", "mws"):
    cond = float(_tc(z, mu, lv, dataset_size=n_c, method=method, conditions=c))
    assert cond == pytest.approx(float(_dec(z, mu, lv, dataset_size=n_c, method=method, conditions=c)["tc"]), rel=1e-6)
    unc = float(_tc(z, mu, lv, dataset_size=5000.0, method=method))
    assert unc == pytest.approx(float(_dec(z, mu, lv, dataset_size=5000.0, method=method)["tc"]), rel=1e-6)
    assert unc - cond > 1.0  # pooling the two groups creates the dependence that conditioning removes


def test_two_conditions_known_answers():
  """Within each condition the codes are independent with q(z|c) = N(m_c, I), so the conditional
  TC ~ 0 and the KL to the conditional prior N(m_c, I) ~ 0, while pooling the groups creates
  strong dependence; by the chain rule I(x;z) = I(x;z|c) + I(c;z), and with well separated
  groups I(c;z) = H(c) ~ log 2."""
  b = 2048
  z, mu, lv, c, means = _two_group_codes(np.random.default_rng(12), b)
  cond = _dec(z, mu, lv, dataset_size=np.bincount(c), conditions=c, prior_mu=means)
  unc = _dec(z, mu, lv, dataset_size=b)
  assert abs(float(cond["tc"])) < 0.08
  assert abs(float(cond["dwkl"])) < 0.03
  assert float(cond["mi"]) == pytest.approx(0.5 * D * math.log(1 / 0.25), abs=0.1)
  assert float(unc["tc"]) > 1.2
  assert float(unc["mi"] - cond["mi"]) == pytest.approx(math.log(2), abs=0.02)


def test_mss_designated_member_within_group_and_singleton_group():
  c = np.array([0, 1, 0, 2, 1, 0], np.int32)
  n_c = np.array([10.0, 20.0, 30.0])
  w = np.exp(np.asarray(est.log_mixture_weights(6, n_c, conditions=c)))
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
  assert np.all(w[c[:, None] != c[None, :]] == 0.0)
  # group 0 = {0, 2, 5}: M = 3, N = 10; designated s(0) = 2, s(2) = 5, s(5) = 0 (cyclic)
  assert w[0, 0] == pytest.approx(0.1) and w[0, 2] == pytest.approx(8 / 20) and w[0, 5] == pytest.approx(0.5)
  assert w[5, 0] == pytest.approx(8 / 20) and w[5, 2] == pytest.approx(0.5)
  # group 1 = {1, 4}: M = 2: 1/N and (N-1)/N
  assert w[1, 1] == pytest.approx(1 / 20) and w[1, 4] == pytest.approx(19 / 20)
  # group 2 = {3}: a single member, weight 1 on itself
  assert w[3, 3] == pytest.approx(1.0)

  z, mu, lv = _codes(np.random.default_rng(10), 6, C, 0.2)
  lq, lqj = _lqz(z, mu, lv, dataset_size=n_c, conditions=c)
  own = scipy.stats.norm.logpdf(z[3], mu[3], np.exp(0.5 * lv[3]))
  assert np.all(np.isfinite(lq)) and np.all(np.isfinite(lqj))
  assert float(lq[3]) == pytest.approx(own.sum(), abs=1e-5)
  np.testing.assert_allclose(np.asarray(lqj[3]), own, atol=1e-5)
  dec = _dec(z, mu, lv, dataset_size=n_c, conditions=c, method="mws")
  assert all(np.isfinite(float(v)) for v in dec.values())


# --------------------------------------------------------------------------- transformations


def test_jit_and_vmap_match_plain_calls():
  rng = np.random.default_rng(11)
  k, b = 3, 48
  codes = [_codes(rng, b, C, 0.2) for _ in range(k)]
  z, mu, lv = (np.stack(x) for x in zip(*codes, strict=True))
  conds = rng.integers(0, 3, size=(k, b)).astype(np.int32)
  ns = np.array([[500.0, 700.0, 900.0], [50.0, 60.0, 70.0], [1e4, 2e4, 3e4]], np.float32)
  n_scalar = np.array([1000.0, 64.0, 5e4], np.float32)

  def f(z, mu, lv, n, c, nc):
    out = est.elbo_decomposition(z, mu, lv, dataset_size=n)
    out_c = est.elbo_decomposition(z, mu, lv, dataset_size=nc, conditions=c, method="mws")
    return (
      out["tc"],
      out["mi"],
      out_c["tc"],
      out_c["dwkl"],
      est.total_correlation(z, mu, lv, dataset_size=n, method="mws"),
    )

  plain = np.array([[float(v) for v in f(z[i], mu[i], lv[i], float(n_scalar[i]), conds[i], ns[i])] for i in range(k)])
  jitted = np.array(
    [[float(v) for v in jax.jit(f)(z[i], mu[i], lv[i], n_scalar[i], conds[i], ns[i])] for i in range(k)]
  )
  vmapped = np.stack([np.asarray(v) for v in jax.jit(jax.vmap(f))(z, mu, lv, n_scalar, conds, ns)], 1)
  np.testing.assert_allclose(jitted, plain, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(vmapped, plain, rtol=1e-5, atol=1e-5)
  assert np.ptp(plain[:, 0]) > 0.01  # the models really differ

  zp = jax.jit(jax.vmap(est.permute_dims))(jnp.asarray(z), jax.random.split(jax.random.PRNGKey(1), k))
  np.testing.assert_array_equal(np.sort(np.asarray(zp), axis=1), np.sort(z, axis=1))
