"""Anomaly scores of a test set under every stacked model (compiled), and their reduction over conditions
(docs/design.md "Anomaly scores").

Scores of a test image x (larger = more anomalous):
  recon       A(x) = ||x - mean of p(x | z = mu(x)[, c])||^2    (the paper's score; encoder mean, no sampling)
  nelbo       E(x) = E_q[-log p(x|z[,c])] + KL(q(z|x[,c]) || p(z[|c]))  (K fixed-key samples for the expectation)
  iwae        -log p_K(x), the importance-weighted bound with K = eval.iwae_samples (anomaly_scores.iwae_nll)
  complexity  iwae in bits (+ D log2 256 for a density on [0, 1]) - PNG bits of x (Serra et al. 2020)
  rapp        RaPP's NAP: normalised hidden-reconstruction differences (Kim et al. 2020); rapp_sap: its SAP
  sap_complexity  rapp_sap and complexity, each robustly standardised on normal training images, summed
A conditional model scores x under every normal condition c; ``score_condition`` reduces them:
  min       min_c score_c (default)
  marginal  recon / rapp: sum_c pi_c S_c;  nelbo / iwae: -log sum_c pi_c exp(-S_c)   (pi_c = training frequency)
  given     the image's own class as condition; anomalies (whose class is not a condition) get the all-zero
            condition vector. It uses the test label, so it leaks: only for reproducing the paper's code.
complexity is computed from the reduced iwae, so it follows iwae's reduction.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dcvae_jax import distributed
from dcvae_jax.data.input_pipeline import preprocess
from dcvae_jax.data.protocols import condition_ids
from dcvae_jax.evaluators import anomaly_scores
from dcvae_jax.models import estimators, inference, networks, objectives
from dcvae_jax.options import SCORE_CONDITIONS, SCORES  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # the training program's types, for annotations only
  from dcvae_jax.train.train_step import Setup

DEVICE_SCORES = ("recon", "nelbo", "iwae", "rapp", "rapp_sap")  # complexity is derived from iwae on the host

LOG_DENSITY_SCORES = ("nelbo", "iwae")


def rapp_differences_batch(setup: Setup, params, x, cond_ids):
  """RaPP's stacked differences d(x) of one model on a float batch under integer conditions: (B, D)."""
  module, hp = setup.module, setup.hp
  c = objectives.one_hot_condition(setup.spec, cond_ids, setup.num_conditions)
  hidden_x = module.apply(params, x, c, method=networks.VAE.encode_hidden)
  x_hat = objectives.mean_image(objectives.decode(module, params, hidden_x[-1], c), hp.likelihood)
  hidden_r = module.apply(params, x_hat, c, method=networks.VAE.encode_hidden)
  return anomaly_scores.rapp_differences(hidden_x, hidden_r, x, x_hat)


def score_batch(setup: Setup, params, nap_stats, x, key, num_samples: int, iwae_samples: int, iwae_chunk: int):
  """Scores of one model on a float batch x (B,H,W,1) under each condition: dict name -> (B, C').

  C' = 1 for unconditional models; C + 1 for conditional ones (the last column: the all-zero condition).
  The conditions are visited one after another (lax.map) to bound memory.
  """
  spec, module = setup.spec, setup.module
  hp = setup.hp
  n_cols = setup.num_conditions + 1 if spec.conditional else 1
  b = x.shape[0]
  obs_logvar = objectives.likelihood_logvar(hp, module.apply(params, method=networks.VAE.obs_logvar))

  def nll_of(z, c):
    return objectives.recon_nll(objectives.decode(module, params, z, c), x, hp.likelihood, obs_logvar)

  def under(cid):
    ids = jnp.full((b,), cid, jnp.int32)
    c = objectives.one_hot_condition(spec, ids, setup.num_conditions)
    mu, logvar = objectives.encode(module, params, x, c)
    mean = objectives.mean_image(objectives.decode(module, params, mu, c), hp.likelihood)
    recon = jnp.square(x - mean).reshape((b, -1)).sum(-1)
    pmu, plogvar = module.apply(
      params, jnp.minimum(ids, setup.num_conditions - 1 if spec.conditional else 0), method=networks.VAE.prior
    )
    kl = estimators.kl_diag_gaussians(mu, logvar, pmu, plogvar).sum(-1)

    def nll(k):
      z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k, mu.shape)
      return nll_of(z, c)

    rec = jnp.mean(jax.vmap(nll)(jax.random.split(key, num_samples)), axis=0)

    def log_w(z, log_q):  # (S, B, d) -> log p(x|z) + log p(z) - log q(z|x): (S, B)
      log_px = -jax.lax.map(lambda zs: nll_of(zs, c), z)
      return log_px + estimators.gaussian_log_density(z, pmu, plogvar).sum(-1) - log_q

    iwae = anomaly_scores.iwae_nll(
      log_w, jax.random.fold_in(key, 0x1AE), mu, logvar, num_samples=iwae_samples, chunk=iwae_chunk
    )
    d = rapp_differences_batch(setup, params, x, ids)
    return recon, rec + kl, iwae, anomaly_scores.nap(d, nap_stats), anomaly_scores.sap(d)

  recon, nelbo, iwae, rapp, rapp_sap = jax.lax.map(under, jnp.arange(n_cols))
  return {"recon": recon.T, "nelbo": nelbo.T, "iwae": iwae.T, "rapp": rapp.T, "rapp_sap": rapp_sap.T}


@functools.lru_cache(maxsize=4)
def compile_score_fn(setup: Setup, mesh, num_samples: int, iwae_samples: int = 64, iwae_chunk: int = 16):
  """jit(map over models) of score_batch, the test batch sharded over the mesh. One per setting (cached), so the
  test, validation and reference images of a group of runs share one compiled program (batches of one size)."""
  one = functools.partial(
    score_batch, setup, num_samples=num_samples, iwae_samples=iwae_samples, iwae_chunk=min(iwae_chunk, iwae_samples)
  )

  def wrapped(params, nap_stats, x_uint8, key):
    x = preprocess(x_uint8, setup.binarize, setup.dequantize, image_shape=setup.module.image_shape)
    return jax.lax.map(lambda a: one(a[0], a[1], x, key), (params, nap_stats))

  rep = NamedSharding(mesh, P())
  return jax.jit(wrapped, in_shardings=(rep, rep, NamedSharding(mesh, P("data")), rep), out_shardings=rep)


def fit_rapp(setup: Setup, params, x_fit: np.ndarray, cond_fit: np.ndarray, mesh, *, batch_size: int) -> dict:
  """NAP statistics of every stacked model from its own normal training images.

  x_fit uint8 (M, n, H, W), cond_fit int (M, n) (each image's condition in its run). Returns stacked numpy
  dict(mean (M, D), basis (M, D, k), inv_scale (M, k))."""
  rep = NamedSharding(mesh, P())
  one = functools.partial(rapp_differences_batch, setup)

  @functools.partial(
    jax.jit,
    in_shardings=(rep, NamedSharding(mesh, P(None, "data")), NamedSharding(mesh, P(None, "data"))),
    out_shardings=rep,
  )
  def diffs(params, x_uint8, cond):
    x = preprocess(x_uint8, setup.binarize, setup.dequantize, image_shape=setup.module.image_shape)
    return jax.lax.map(lambda a: one(a[0], a[1], a[2]), (params, x, cond))

  d = inference.map_batches(
    lambda i, xb, cb: diffs(params, xb, cb),
    [(x_fit, 1), (np.asarray(cond_fit, np.int32), 1)],
    mesh=mesh,
    batch_size=batch_size,
  )
  fits = [anomaly_scores.fit_nap(d[m]) for m in range(d.shape[0])]
  return {k: np.stack([f[k] for f in fits]) for k in fits[0]}


def score_test_set(
  setup: Setup,
  params,
  x_test: np.ndarray,
  mesh,
  *,
  batch_size: int,
  num_samples: int,
  seed: int = 0,
  nap_stats=None,
  iwae_samples: int = 64,
  iwae_chunk: int = 16,
):
  """Scores of every test image under every stacked model: dict name -> (M, N_test, C'). Each image is scored
  exactly once: the last batch is padded to the batch size (a multiple of the device count) and cut back.
  ``nap_stats`` from :func:`fit_rapp` (None: an identity normalisation, so rapp equals rapp_sap)."""
  if nap_stats is None:
    nap_stats = _identity_nap(setup, params)
  fn = compile_score_fn(setup, mesh, num_samples, iwae_samples, iwae_chunk)
  stats = distributed.replicated(nap_stats, NamedSharding(mesh, P()))

  def call(i, xb):
    key = distributed.replicated(jax.random.fold_in(jax.random.PRNGKey(seed), i), NamedSharding(mesh, P()))
    return {k: v for k, v in fn(params, stats, xb, key).items() if k in DEVICE_SCORES}

  return inference.map_batches(call, [(x_test, 0)], mesh=mesh, batch_size=batch_size)


def _identity_nap(setup: Setup, params):
  """NAP statistics that make NAP equal SAP: zero mean, identity basis, unit scales."""
  m = jax.tree.leaves(params)[0].shape[0]
  x = jnp.zeros((1, *setup.module.image_shape), jnp.float32)
  first = jax.tree.map(lambda a: a[0], params)
  dim = jax.eval_shape(lambda p: rapp_differences_batch(setup, p, x, jnp.zeros((1,), jnp.int32)), first).shape[-1]
  eye = np.eye(dim, dtype=np.float32)
  return {
    "mean": np.zeros((m, dim), np.float32),
    "basis": np.broadcast_to(eye, (m, dim, dim)),
    "inv_scale": np.ones((m, dim), np.float32),
  }


def reduce_conditions(
  scores: np.ndarray, name: str, how: str, *, conditional: bool, cond_of_example=None, weights=None
) -> np.ndarray:
  """(N, C') per-condition scores -> (N,) (see the module docstring)."""
  if not conditional:
    return scores[:, 0]
  per_cond = scores[:, :-1]
  if how == "min":
    return per_cond.min(axis=1)
  if how == "marginal":
    w = np.asarray(weights, np.float64) / np.sum(weights)
    if name in LOG_DENSITY_SCORES:
      neg = -per_cond.astype(np.float64) + np.log(w)[None]
      top = neg.max(axis=1, keepdims=True)
      return -(top[:, 0] + np.log(np.exp(neg - top).sum(axis=1)))
    return per_cond @ w
  if how == "given":
    col = np.where(cond_of_example >= 0, cond_of_example, scores.shape[1] - 1)
    return scores[np.arange(scores.shape[0]), col]
  raise ValueError(f"unknown score_condition {how!r}; known: {', '.join(SCORE_CONDITIONS)}")


def reduce_scores(
  run,
  scores: dict,
  y: np.ndarray,
  *,
  conditional: bool,
  condition_counts,
  protocol,
  length_bits=None,
  offset_bits: float = 0.0,
  reference: dict | None = None,
) -> dict:
  """Per-condition scores (name -> (N, C')) of images with labels ``y`` -> name -> (N,), with complexity
  from the reduced iwae and ``length_bits`` (N,) when both are there, and sap_complexity from complexity,
  rapp_sap and ``reference`` (dict rapp_sap, complexity: the reduced scores of normal training images) when
  given. ``y`` None: the labels are unknown (new images), which only score_condition "given" needs."""
  if y is None and conditional and protocol.score_condition == "given":
    raise ValueError("score_condition 'given' needs each image's class, and these images have none")
  cond_of_example = None if y is None else condition_ids(run, y, missing=-1)
  reduced = {}
  for name in DEVICE_SCORES:
    if name in scores:
      reduced[name] = reduce_conditions(
        scores[name],
        name,
        protocol.score_condition,
        conditional=conditional,
        cond_of_example=cond_of_example,
        weights=condition_counts,
      )
  if "iwae" in reduced and length_bits is not None:
    reduced["complexity"] = anomaly_scores.complexity(reduced["iwae"], np.asarray(length_bits), offset_bits)
  if reference is not None and "complexity" in reduced and "rapp_sap" in reduced:
    reduced["sap_complexity"] = anomaly_scores.sap_complexity(
      reduced["rapp_sap"], reduced["complexity"], reference["rapp_sap"], reference["complexity"]
    )
  return reduced
