"""Gaussian densities, KL, FactorVAE dimension permutation, and minibatch estimators of q(z) (docs/design.md
"Estimators").

Everything here is a pure function of arrays: jit-able, vmap-able over a leading model axis,
float32-safe (all mixtures go through a max-shifted ``logsumexp``).

Notation (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs"): a batch of B codes
z_i ~ q(z|x_i) = N(mu_i, diag exp(logvar_i)), dimension d, drawn from a training set of N examples.
The aggregate posterior q(z) = 1/N sum_n q(z|x_n) is estimated on the batch as a weighted mixture

    log q(z_i)   ~= logsumexp_j [ log w_ij + sum_k log q(z_ik | x_j) ]
    log q(z_ik)  ~= logsumexp_j [ log w_ij +       log q(z_ik | x_j) ]

with weights w_ij given by MWS or MSS (see ``log_mixture_weights``). Reductions follow the project
rule: sums over latent dimensions, means over the batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dcvae_jax.options import ESTIMATORS

_LOG_2PI = math.log(2.0 * math.pi)

__all__ = [
  "gaussian_log_density",
  "kl_diag_gaussians",
  "permute_dims",
  "log_mixture_weights",
  "log_qz_estimates",
  "elbo_decomposition",
  "total_correlation",
  "gaussian_total_correlation",
  "own_sample_log_density",
]


METHODS = ESTIMATORS  # minibatch stratified / weighted sampling (Chen et al. 2018)
_MIN_LOGVAR = -80.0  # exp(80) < float32 max
_MASKED = -1e30  # a log weight that removes a component: exp(-1e30) = 0, but its gradient stays finite


def gaussian_log_density(x, mu, logvar):
  """Elementwise log N(x; mu, exp(logvar)) = -0.5 [log 2pi + logvar + ((x - mu) exp(-logvar / 2))^2].

  The standardised difference is squared (not (x - mu)^2 times exp(-logvar)), so a tiny variance gives a
  very negative (or -inf) density, never 0 * inf = NaN."""
  return -0.5 * (_LOG_2PI + logvar + jnp.square((x - mu) * jnp.exp(-0.5 * logvar)))


def own_sample_log_density(eps, logvar):
  """log N(z; mu, exp(logvar)) at the sample's own z = mu + exp(logvar / 2) eps: -0.5 [log 2pi + logvar + eps^2].

  Exact for any variance; recomputing (z - mu) from z cancels catastrophically when exp(logvar / 2) |eps| is
  below the rounding of mu."""
  return -0.5 * (_LOG_2PI + logvar + jnp.square(eps))


def kl_diag_gaussians(mu_q, logvar_q, mu_p=0.0, logvar_p=0.0):
  """Elementwise KL(N(mu_q, var_q) || N(mu_p, var_p)), broadcasting:

  0.5 [logvar_p - logvar_q + (var_q + (mu_q - mu_p)^2) / var_p - 1].
  """
  return 0.5 * (logvar_p - logvar_q + (jnp.exp(logvar_q) + jnp.square(mu_q - mu_p)) * jnp.exp(-logvar_p) - 1.0)


def permute_dims(z, rng):
  """Permute EACH column of z (B, d) independently across the batch (Kim & Mnih 2018).

  out[i, k] = z[pi_k(i), k] with d independent uniform permutations pi_k, so every column keeps
  its multiset of values (its marginal) while dependence between columns is destroyed: samples of
  prod_k q(z_k). A row permutation (one pi for all k) would not change the joint at all.
  """
  b, d = z.shape
  keys = jax.random.split(rng, d)
  perms = jax.vmap(lambda k: jax.random.permutation(k, b))(keys)  # (d, B)
  return jnp.take_along_axis(z, perms.T, axis=0)


def _group_sizes_and_counts(batch_size, dataset_size, conditions):
  """Per-anchor group membership `same` (B,B), group size M_i (B,), dataset count N_i (B,)."""
  if conditions is None:
    conditions = jnp.zeros((batch_size,), jnp.int32)
    n = jnp.reshape(jnp.asarray(dataset_size, jnp.float32), ())
  else:
    conditions = jnp.asarray(conditions)
    n = jnp.asarray(dataset_size, jnp.float32)
  same = conditions[:, None] == conditions[None, :]
  m = jnp.sum(same, axis=1).astype(jnp.float32)
  n_i = jnp.broadcast_to(n, (batch_size,)) if n.ndim == 0 else n[conditions]
  # A batch is drawn from the data set, so N_c >= M_c; guard against inconsistent counts (which
  # would give negative MSS weights) by using max(N_c, M_c).
  n_i = jnp.maximum(n_i, m)
  return same, m, n_i


def log_mixture_weights(batch_size, dataset_size, *, method="mss", conditions=None):
  """Log weights log w_ij (B, B) of the minibatch mixture for anchor i (row) over examples j.

  With ``conditions`` the mixture of anchor i is restricted to its group G_i = {j: c_j = c_i}
  (w_ij = 0 outside), and M = |G_i|, N = N_{c_i}; without, G_i is the whole batch, M = B, N =
  ``dataset_size``.

  * "mws" (minibatch weighted sampling, Chen et al. eq. for MWS): w_ij = 1 / (N M) for j in G_i.
    The weights sum to 1/N, not 1, so every log q is shifted by -log N against a normalised
    mixture and TC by +(d - 1) log N (with N = M = B: (d - 1) log B). Constants leave gradients
    unchanged; report TC values from MSS.
  * "mss" (minibatch stratified sampling, Chen et al. 2018, appendix: with n* the anchor and the
    other M-1 batch members drawn without replacement, f = 1/N q(z|n*) + 1/(M-1) sum_{m<M-1}
    q(z|n_m) + (N-M+1)/(N(M-1)) q(z|n_{M-1}), an unbiased estimate of q(z)). Here:
        w_ii       = 1/N
        w_i,s(i)   = (N - M + 1) / (N (M - 1))   s(i): next member of G_i after i, cyclically
        w_ij       = 1/(M - 1)                   the other M - 2 members of G_i
    Rows sum to 1. (The released code of Chen et al. writes these entries with a flat stride
    of M+1 = B where B+1 was meant, which puts 1/N in column 0 of every row instead of on the
    diagonal; this function follows the paper.) Special cases: M = 2 gives 1/N and (N-1)/N.
    M = 1 (a group with a single member in the batch): no other example is available, so the
    mixture is the anchor's own posterior, w_ii = 1; then log q(z_i) = log q(z_i|x_i), and the
    anchor contributes MI = TC = 0 and dimension-wise KL = log q(z_i|x_i) - log p(z_i).
  N is used as max(N, M) (a batch cannot exceed its data set).
  """
  same, m, n = _group_sizes_and_counts(batch_size, dataset_size, conditions)
  m_col, n_col = m[:, None], n[:, None]
  if method == "mws":
    logw = jnp.broadcast_to(-jnp.log(n_col * m_col), same.shape)
  elif method == "mss":
    b = batch_size
    idx = jnp.arange(b)
    eye = idx[:, None] == idx[None, :]
    # Cyclic offset (j - i) mod B in 1..B-1 for j != i; the designated member s(i) is the
    # group member with the smallest offset.
    offset = jnp.where(same & ~eye, (idx[None, :] - idx[:, None]) % b, b)
    designated = idx[None, :] == jnp.argmin(offset, axis=1)[:, None]
    m1 = jnp.maximum(m_col - 1.0, 1.0)
    log_self = jnp.where(m_col > 1.0, -jnp.log(n_col), 0.0)
    log_strat = jnp.log(n_col - m_col + 1.0) - jnp.log(n_col) - jnp.log(m1)
    log_rest = -jnp.log(m1)
    logw = jnp.where(eye, log_self, jnp.where(designated, log_strat, log_rest))
  else:
    raise ValueError(f"unknown method {method!r}; expected 'mss' or 'mws'")
  return jnp.where(same, logw, -jnp.inf)


def log_qz_estimates(z, mu, logvar, *, dataset_size, method="mss", conditions=None, eps=None):
  """Minibatch estimates (log q(z_i) (B,), log q(z_ik) (B, d)) of the aggregate posterior.

      log q(z_i)  = logsumexp_j [ log w_ij + sum_k log N(z_ik; mu_jk, var_jk) ]
      log q(z_ik) = logsumexp_j [ log w_ij +       log N(z_ik; mu_jk, var_jk) ]

  with w from ``log_mixture_weights`` ("mss" or "mws"; see there for the formulas, the
  ``conditions`` masking, and the group-of-one rule). ``dataset_size``: N, a Python number or a
  traced scalar; with ``conditions`` (int (B,)) either a scalar or per-condition counts (C,).
  ``eps`` (B, d): the noise of z = mu + sigma eps; then the anchor's own term (j = i) is
  ``own_sample_log_density`` (exact at any variance), and the others' mixture is added to it with logaddexp.
  """
  b = z.shape[0]
  logw = log_mixture_weights(b, dataset_size, method=method, conditions=conditions)
  # log q(z_ik | x_j): (anchor i, component j, dim k)
  if eps is None:
    pair = gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])
    return (jax.nn.logsumexp(logw + jnp.sum(pair, axis=2), axis=1), jax.nn.logsumexp(logw[:, :, None] + pair, axis=1))
  # The other components: the plain form (one pass fewer than the standardised one over (B, B, d)); the
  # precision's floor e^80 keeps it finite where the density is 0 in float32 anyway (|z_i - mu_j| > 1e-17).
  prec = jnp.exp(-jnp.maximum(logvar, _MIN_LOGVAR))
  pair = -0.5 * (_LOG_2PI + logvar[None, :, :] + jnp.square(z[:, None, :] - mu[None, :, :]) * prec[None, :, :])
  # The anchor's own component (j = i) from eps, added to the mixture of the others: (B, B) and (B, d) work only.
  # A finite mask (not -inf) keeps the gradient of a group of one finite.
  own = own_sample_log_density(eps, logvar)
  diag = jnp.diagonal(logw)
  others = jnp.where(jnp.eye(b, dtype=bool), _MASKED, logw)
  log_qz = jnp.logaddexp(jax.nn.logsumexp(others + jnp.sum(pair, axis=2), axis=1), diag + jnp.sum(own, axis=1))
  log_qzj = jnp.logaddexp(jax.nn.logsumexp(others[:, :, None] + pair, axis=1), diag[:, None] + own)
  return log_qz, log_qzj


def elbo_decomposition(
  z, mu, logvar, *, dataset_size, method="mss", conditions=None, prior_mu=0.0, prior_logvar=0.0, eps=None
):
  """Batch-mean terms of E KL(q(z|x) || p(z)) = MI + TC + DWKL (Chen et al. 2018), dict of scalars:

      mi   = mean_i [ log q(z_i|x_i) - log q(z_i) ]                  index-code MI
      tc   = mean_i [ log q(z_i) - sum_k log q(z_ik) ]                total correlation
      dwkl = mean_i sum_k [ log q(z_ik) - log p(z_ik) ]               dimension-wise KL

  p = N(prior_mu, exp(prior_logvar)) diagonal, broadcastable to (B, d) (per-example priors, e.g.
  a conditional prior r(z|c)). With ``conditions`` every q is the within-condition q(z|c), so the
  terms are I(x;z|c), TC(q(z|c)) and sum_k KL(q(z_k|c) || p(z_k|c)). The three terms telescope:
  mi + tc + dwkl = mean_i [log q(z_i|x_i) - log p(z_i)] exactly. ``eps``: see ``log_qz_estimates``.
  """
  log_qz, log_qzj = log_qz_estimates(
    z, mu, logvar, dataset_size=dataset_size, method=method, conditions=conditions, eps=eps
  )
  own = gaussian_log_density(z, mu, logvar) if eps is None else own_sample_log_density(eps, logvar)
  log_qz_x = jnp.sum(own, axis=-1)
  log_pz = gaussian_log_density(z, prior_mu, prior_logvar)
  return {
    "mi": jnp.mean(log_qz_x - log_qz),
    "tc": jnp.mean(log_qz - jnp.sum(log_qzj, axis=-1)),
    "dwkl": jnp.mean(jnp.sum(log_qzj - log_pz, axis=-1)),
  }


def total_correlation(z, mu, logvar, *, dataset_size, method="mss", conditions=None):
  """Batch-mean TC estimate mean_i [log q(z_i) - sum_k log q(z_ik)] (see ``log_qz_estimates``)."""
  log_qz, log_qzj = log_qz_estimates(z, mu, logvar, dataset_size=dataset_size, method=method, conditions=conditions)
  return jnp.mean(log_qz - jnp.sum(log_qzj, axis=-1))


def gaussian_total_correlation(cov):
  """Closed-form TC of N(0, cov): KL(N(0, cov) || prod_k N(0, cov_kk))
  = 0.5 [sum_k log cov_kk - log det cov]."""
  cov = jnp.asarray(cov)
  _, logdet = jnp.linalg.slogdet(cov)
  return 0.5 * (jnp.sum(jnp.log(jnp.diagonal(cov, axis1=-2, axis2=-1)), axis=-1) - logdet)
