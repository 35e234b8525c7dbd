"""Anomaly scores of a test set under every stacked model (compiled), and their reduction over conditions
(docs/design.md "Anomaly scores").

Scores of a test image x (larger = more anomalous):
  recon       A(x) = ||x - mean of p(x | z = mu(x)[, c])||^2    (the paper's score; encoder mean, no sampling)
  nelbo       E(x) = E_q[-log p(x|z[,c])] + KL(q(z|x[,c]) || p(z[|c]))  (K fixed-key samples for the expectation)
  iwae        -log p_K(x), the importance-weighted bound with K = eval.iwae_samples (anomaly_scores.iwae_nll)
  complexity  iwae in bits (+ D log2 256 for a density on [0, 1]) - L(x), the bits of x under eval.complexity_compressor (Serra et al. 2020)
  rapp        RaPP's NAP: normalised hidden-reconstruction differences (Kim et al. 2020); rapp_sap: its SAP
  sap_complexity  rapp_sap and complexity, each robustly standardised on normal training images, summed
  latent_knn  distance from mu(x[, c]) to the nearest code of a normal training image (evaluators/latent_knn.py)
  sap_knn, sap_complexity_knn  rapp_sap + latent_knn (+ complexity), standardised and summed as sap_complexity
A conditional model scores x under every normal condition c; ``score_condition`` reduces them:
  min       min_c score_c (default)
  marginal  recon / rapp: sum_c pi_c S_c;  nelbo / iwae: -log sum_c pi_c exp(-S_c)   (pi_c = training frequency)
  given     the image's own class as condition; anomalies (whose class is not a condition) get the all-zero
            condition vector. It uses the test label, so it leaks: only for reproducing the paper's code.
complexity is computed from the reduced iwae, so it follows iwae's reduction.

``eval.scores`` picks which of them a job computes; the compiled program holds only the device scores they
need (``device_scores``: complexity needs iwae, sap_complexity iwae and rapp_sap), so leaving out iwae,
the dearest (K decoder passes per image and condition), leaves out its cost.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import time
from typing import TYPE_CHECKING, Any

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
from dcvae_jax.validation import check_score_condition

if TYPE_CHECKING:  # the training program's types, for annotations only
  from dcvae_jax.train.train_step import ModelSetup

DEVICE_SCORES = ("recon", "nelbo", "iwae", "rapp", "rapp_sap")  # complexity is derived from iwae on the host
HOST_SCORES = ("latent_knn",)  # per-condition scores computed on the host from the codes (evaluators/latent_knn.py)
PER_CONDITION_SCORES = DEVICE_SCORES + HOST_SCORES  # (N, C') before the reduction over conditions

# The device scores each score is computed from (complexity and sap_complexity are combined on the host).
SCORE_INPUTS = {
  "recon": ("recon",),
  "nelbo": ("nelbo",),
  "iwae": ("iwae",),
  "complexity": ("iwae",),
  "rapp": ("rapp",),
  "rapp_sap": ("rapp_sap",),
  "sap_complexity": ("iwae", "rapp_sap"),
  "latent_knn": ("latent_knn",),
  "sap_knn": ("rapp_sap", "latent_knn"),
  "sap_complexity_knn": ("iwae", "rapp_sap", "latent_knn"),
}
STANDARDISED_SUMS = anomaly_scores.STANDARDISED_SUMS  # name -> the reduced scores it sums (standardised)
# The reduced scores of the reference images: every part of a standardised sum, in first-use order
# (scoring_state.REFERENCE_KEYS, kept numpy-only, names the same ones; a test pins the two together).
REFERENCE_SCORES = tuple(dict.fromkeys(p for parts in STANDARDISED_SUMS.values() for p in parts))

LOG_DENSITY_SCORES = ("nelbo", "iwae")


def score_names(config) -> tuple[str, ...]:
  """The scores a job computes and reports: ``eval.scores`` in SCORES order (() = all of them)."""
  wanted = tuple(config.eval.scores or SCORES)
  return tuple(n for n in SCORES if n in wanted)


def needs_knn(names) -> bool:
  """Whether the scores ``names`` need latent_knn's banks of training codes."""
  return any("latent_knn" in SCORE_INPUTS[n] for n in names)


def needs_reference(names) -> bool:
  """Whether the scores ``names`` include a standardised sum (its reference images must be scored)."""
  return any(n in STANDARDISED_SUMS for n in names)


def device_scores(names) -> tuple[str, ...]:
  """The device scores (in DEVICE_SCORES order) that the scores ``names`` are computed from."""
  need = {d for n in names for d in SCORE_INPUTS[n]}
  return tuple(d for d in DEVICE_SCORES if d in need)


@dataclasses.dataclass(frozen=True)
class ScoringSetup:
  """The pieces of a ``train_step.ModelSetup`` that scoring reads. Two setups of one config are equal here (their
  optimizers are not), so the compiled programs cached on it serve every group of runs of a job."""

  spec: Any
  module: Any
  model_cfg: Any
  num_conditions: int
  binarize: bool
  dequantize: bool

  @classmethod
  def of(cls, setup) -> ScoringSetup:
    return cls(setup.spec, setup.module, setup.model_cfg, setup.num_conditions, setup.binarize, setup.dequantize)


def rapp_differences_batch(setup: ModelSetup | ScoringSetup, params, x, cond_ids):
  """RaPP's stacked differences d(x) of one model on a float batch under integer conditions: (B, D)."""
  c = objectives.one_hot_condition(setup.spec, cond_ids, setup.num_conditions)
  return _rapp_pass(setup, params, x, c)["d"]


def _encode_hidden(module, params, x, c):
  """(mu, logvar, hidden) of the encoder in one pass: hidden = its hidden activations (each (B, width)), then mu
  (RaPP's layers, ``networks.VAE.encode_hidden``)."""
  mu, logvar, hidden = module.apply(params, x, c, method=lambda m, x, c: m.encoder(x, c, return_hidden=True))
  return mu, logvar, [*hidden, mu]


def _rapp_pass(setup: ModelSetup | ScoringSetup, params, x, c) -> dict:
  """One encoder pass of x, the decoder's mean x_hat = E[x | z = mu(x)] and one encoder pass of x_hat: mu, logvar,
  x_hat and RaPP's differences d (B, D). The recon score and RaPP read the same x_hat."""
  module, model_cfg = setup.module, setup.model_cfg
  mu, logvar, hidden_x = _encode_hidden(module, params, x, c)
  x_hat = objectives.mean_image(objectives.decode(module, params, mu, c), model_cfg.likelihood)
  _, _, hidden_r = _encode_hidden(module, params, x_hat, c)
  return {
    "mu": mu,
    "logvar": logvar,
    "x_hat": x_hat,
    "d": anomaly_scores.rapp_differences(hidden_x, hidden_r, x, x_hat),
  }


def draw_noise(key, rows: int, latent_dim: int, num_samples: int, iwae_samples: int, iwae_chunk: int, scores):
  """The standard normal noise a batch of ``rows`` images is scored with, from the batch's key: dict of
  nelbo (S, rows, d): sample s is normal(split(key, S)[s], (rows, d));
  iwae (K, rows, d): anomaly_scores.iwae_noise(fold_in(key, 0x1AE), (rows, d)), chunks of ``iwae_chunk``.
  Every model and every condition of the batch reads the same noise (only the scores ``scores`` need it)."""
  out = {}
  if "nelbo" in scores:
    draw = functools.partial(anomaly_scores.normal_flat, shape=(rows, latent_dim))
    out["nelbo"] = jax.vmap(draw)(jax.random.split(key, num_samples))
  if "iwae" in scores:
    out["iwae"] = anomaly_scores.iwae_noise(
      jax.random.fold_in(key, 0x1AE), (rows, latent_dim), num_samples=iwae_samples, chunk=iwae_chunk
    )
  return out


def score_with_noise(
  setup: ModelSetup | ScoringSetup,
  params,
  nap_stats,
  x,
  noise: dict,
  *,
  iwae_chunk: int,
  scores: tuple = DEVICE_SCORES,
  zero_condition: bool = True,
  pass_rows: int = 0,
):
  """Scores of one model on a float batch x (B,H,W,C) under each condition, given the noise of
  :func:`draw_noise` (its rows those of x): dict name -> (B, C'), for the device scores ``scores``.

  C' = 1 for unconditional models; C + 1 for conditional ones (the last column: the all-zero condition; with
  ``zero_condition`` False it is not computed and holds NaN, for the reductions that do not read it). The
  conditions are visited one after another (lax.map). Under each: one encoder pass of x gives mu, logvar and
  RaPP's hidden layers; one decoder pass of mu gives x_hat (recon and RaPP); one encoder pass of x_hat; and the
  log-likelihoods of the nelbo and iwae codes z = mu + sigma eps in decoder passes of about ``pass_rows`` rows
  (0: every code of the batch in one pass).
  """
  spec, module, model_cfg = setup.spec, setup.module, setup.model_cfg
  b = x.shape[0]
  n_cols = setup.num_conditions + 1 if spec.conditional else 1
  visit = n_cols if zero_condition or not spec.conditional else n_cols - 1
  obs_logvar = objectives.likelihood_logvar(model_cfg, module.apply(params, method=networks.VAE.obs_logvar))
  eps_parts = [noise[k] for k in ("nelbo", "iwae") if k in scores]
  n_eps = sum(e.shape[0] for e in eps_parts)
  per_pass = n_eps if pass_rows <= 0 else max(1, min(n_eps, pass_rows // max(b, 1)))

  def under(cid):
    ids = jnp.full((b,), cid, jnp.int32)
    c = objectives.one_hot_condition(spec, ids, setup.num_conditions)
    out = {}
    if any(s in scores for s in ("recon", "rapp", "rapp_sap")):
      r = _rapp_pass(setup, params, x, c)
      mu, logvar = r["mu"], r["logvar"]
      if "recon" in scores:
        out["recon"] = jnp.square(x - r["x_hat"]).reshape((b, -1)).sum(-1)
      if "rapp" in scores:
        out["rapp"] = anomaly_scores.nap(r["d"], nap_stats)
      if "rapp_sap" in scores:
        out["rapp_sap"] = anomaly_scores.sap(r["d"])
    else:
      mu, logvar = objectives.encode(module, params, x, c)
    if n_eps:
      eps = jnp.concatenate(eps_parts, axis=0)  # (S + K, B, d)
      z = mu + jnp.exp(0.5 * logvar) * eps
      nll = jax.lax.map(
        lambda zs: objectives.recon_nll(objectives.decode(module, params, zs, c), x, model_cfg.likelihood, obs_logvar),
        z,
        batch_size=per_pass,
      )  # (S + K, B)
      pmu, plogvar = module.apply(params, ids, method=networks.VAE.prior)  # the zero condition: N(0, I)
      start = 0
      if "nelbo" in scores:
        s = noise["nelbo"].shape[0]
        kl = estimators.kl_diag_gaussians(mu, logvar, pmu, plogvar).sum(-1)
        out["nelbo"] = jnp.mean(nll[:s], axis=0) + kl
        start = s
      if "iwae" in scores:
        e, zk = eps[start:], z[start:]
        log_q = estimators.own_sample_log_density(e, logvar).sum(-1)
        log_w = -nll[start:] + estimators.gaussian_log_density(zk, pmu, plogvar).sum(-1) - log_q
        out["iwae"] = anomaly_scores.iwae_combine(log_w, chunk=iwae_chunk)
    return out

  cols = {k: v.T for k, v in jax.lax.map(under, jnp.arange(visit)).items()}
  if visit < n_cols:
    cols = {k: jnp.concatenate([v, jnp.full((b, 1), jnp.nan, v.dtype)], axis=1) for k, v in cols.items()}
  return cols


def score_batch(
  setup: ModelSetup,
  params,
  nap_stats,
  x,
  key,
  num_samples: int,
  iwae_samples: int,
  iwae_chunk: int,
  scores: tuple = DEVICE_SCORES,
):
  """Scores of one model on a float batch x (B,H,W,1) under each condition: dict name -> (B, C'), for the
  device scores ``scores`` (only those are built into the program; ``nap_stats`` is read only for rapp), with
  the noise :func:`draw_noise` draws from ``key`` for B rows (:func:`score_with_noise`)."""
  iwae_chunk = min(iwae_chunk, iwae_samples)
  noise = draw_noise(key, x.shape[0], int(setup.model_cfg.latent_dim), num_samples, iwae_samples, iwae_chunk, scores)
  return score_with_noise(setup, params, nap_stats, x, noise, iwae_chunk=iwae_chunk, scores=tuple(scores))


# Scoring's compiled program takes SCORE_ROWS images at a time (rounded to the device count): any number of
# images is scored with the same program, with at most SCORE_ROWS - 1 padded rows (none for the default job's
# 1,000 test, 400 validation and 200 reference images), and its decoder passes take about PASS_ROWS codes: matrix
# products of a few thousand rows, which XLA:CPU runs near its matmul rate (benchmarks/README.md, "Scoring").
SCORE_ROWS = 200
PASS_ROWS = 4000


@functools.lru_cache(maxsize=8)
def compile_score_fn(
  setup: ScoringSetup,
  mesh,
  iwae_chunk: int,
  *,
  scores: tuple = DEVICE_SCORES,
  zero_condition: bool = True,
  pass_rows: int = PASS_ROWS,
):
  """jit(map over models) of :func:`score_with_noise` on ``rows`` images: (params, nap_stats, x uint8, noise)
  -> dict name -> (M, rows, C'), where x (M, rows, H, W) holds each model's images (the same batch repeated when
  every model scores the same images) and noise those rows' noise (replicated); rows are sharded over the mesh.
  One program per setting (cached): every batch of every image set (reference, validation, test, new images) and
  every group of runs goes through it."""
  one = functools.partial(
    score_with_noise,
    setup,
    iwae_chunk=iwae_chunk,
    scores=tuple(scores),
    zero_condition=zero_condition,
    pass_rows=pass_rows,
  )

  def wrapped(params, nap_stats, x_uint8, noise):
    x = preprocess(x_uint8, setup.binarize, setup.dequantize, image_shape=setup.module.image_shape)
    return jax.lax.map(lambda a: one(a[0], a[1], a[2], noise), (params, nap_stats, x))

  rep = NamedSharding(mesh, P())
  return jax.jit(wrapped, in_shardings=(rep, rep, NamedSharding(mesh, P(None, "data")), rep), out_shardings=rep)


@functools.partial(jax.jit, static_argnums=2)
def _noise_rows(noise: dict, offset, rows: int) -> dict:
  """Rows offset..offset+rows of a batch's noise (each (S, batch rows, d)): the score program's input, so its shape
  depends on ``rows`` only, not on the batch size."""
  return {k: jax.lax.dynamic_slice_in_dim(v, offset, rows, axis=1) for k, v in noise.items()}


@functools.lru_cache(maxsize=8)
def compile_noise_fn(mesh, rows: int, padded_rows: int, latent_dim: int, num_samples, iwae_samples, iwae_chunk, scores):
  """jit of :func:`draw_noise` for a batch of ``rows`` images, padded with zero rows to ``padded_rows``."""

  def fn(key):
    noise = draw_noise(key, rows, latent_dim, num_samples, iwae_samples, iwae_chunk, scores)
    return {k: jnp.pad(v, ((0, 0), (0, padded_rows - rows), (0, 0))) for k, v in noise.items()}

  return jax.jit(fn, in_shardings=NamedSharding(mesh, P()), out_shardings=NamedSharding(mesh, P()))


@functools.lru_cache(maxsize=4)
def _compile_differences_fn(setup: ScoringSetup, mesh):
  """jit(map over models) of rapp_differences_batch on each model's own images and conditions."""
  rep = NamedSharding(mesh, P())
  one = functools.partial(rapp_differences_batch, setup)

  def diffs(params, x_uint8, cond):
    x = preprocess(x_uint8, setup.binarize, setup.dequantize, image_shape=setup.module.image_shape)
    return jax.lax.map(lambda a: one(a[0], a[1], a[2]), (params, x, cond))

  sharded = NamedSharding(mesh, P(None, "data"))
  return jax.jit(diffs, in_shardings=(rep, sharded, sharded), out_shardings=rep)


def fit_rapp(
  setup: ModelSetup, params, x_fit: np.ndarray, cond_fit: np.ndarray, mesh, *, batch_size: int, progress=None
) -> dict:
  """NAP statistics of every stacked model from its own normal training images.

  x_fit uint8 (M, n, H, W), cond_fit int (M, n) (each image's condition in its run). Returns stacked numpy
  dict(mean (M, D), basis (M, D, k), inv_scale (M, k)). ``progress``: called with 1 after each model's fit."""
  diffs = _compile_differences_fn(ScoringSetup.of(setup), mesh)
  d = inference.map_batches(
    lambda i, xb, cb: diffs(params, xb, cb),
    [(x_fit, 1), (np.asarray(cond_fit, np.int32), 1)],
    mesh=mesh,
    batch_size=batch_size,
  )
  fits = fit_nap_all(d, progress)
  return {k: np.stack([f[k] for f in fits]) for k in fits[0]}


def fit_nap_all(d: np.ndarray, progress=None) -> list[dict]:
  """anomaly_scores.fit_nap of each model's differences d (M, n, D): the models in parallel threads, one per
  core, each with a single-threaded BLAS (LAPACK releases the GIL). A multi-threaded BLAS spins while it waits
  for its threads, and on a busy 2-core machine that made each fit 5-10 times slower (benchmarks/README.md)."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    cores = os.cpu_count() or 1
  try:
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    one_thread = threadpool_limits(limits=1, user_api="blas")
  except ImportError:
    one_thread = contextlib.nullcontext()
  with one_thread, concurrent.futures.ThreadPoolExecutor(max(1, min(cores, d.shape[0]))) as pool:
    futures = [pool.submit(anomaly_scores.fit_nap, d[m]) for m in range(d.shape[0])]
    fits = []
    for f in futures:
      fits.append(f.result())
      if progress is not None:
        progress(1)
  return fits


def score_test_set(
  setup: ModelSetup,
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
  scores: tuple = DEVICE_SCORES,
  per_model_images: bool = False,
  zero_condition: bool = True,
  progress=None,
  score_rows: int | None = None,
  pass_rows: int | None = None,
):
  """Scores of every test image under every stacked model: dict name -> (M, N_test, C'), for the device scores
  ``scores``. ``nap_stats`` from :func:`fit_rapp` (None: an identity normalisation, so rapp equals rapp_sap).
  ``per_model_images``: x_test is (M, N, H, W), model m scores only its own x_test[m]. ``zero_condition``
  False: a conditional model's last column (the all-zero condition, read only by score_condition "given") is
  NaN, not computed. ``progress``: called with 1 after each batch.

  The images are cut into batches of ``batch_size`` (eval.batch_size, a multiple of the device count), and batch
  i is scored with the noise :func:`draw_noise` draws from fold_in(PRNGKey(seed), i) for batch_size rows, so an
  image's scores depend on its place in the set and on batch_size only. Each batch goes through the compiled
  program ``score_rows`` images at a time (default SCORE_ROWS), only as many times as it has images: a short
  batch (a validation set smaller than batch_size, the last batch) costs its own size, rounded up to
  ``score_rows``; each image is scored exactly once."""
  scores = tuple(s for s in DEVICE_SCORES if s in scores)
  if "rapp" not in scores:
    nap_stats = {}  # nothing reads it
  elif nap_stats is None:
    nap_stats = _identity_nap(setup, params)
  iwae_chunk = min(iwae_chunk, iwae_samples)
  ndev = mesh.devices.size
  batch_size = max(ndev, (int(batch_size) // ndev) * ndev)
  rows = max(ndev, -(-min(int(score_rows or SCORE_ROWS), batch_size) // ndev) * ndev)
  padded = -(-batch_size // rows) * rows
  fn = compile_score_fn(
    ScoringSetup.of(setup),
    mesh,
    iwae_chunk,
    scores=scores,
    zero_condition=zero_condition,
    pass_rows=PASS_ROWS if pass_rows is None else int(pass_rows),
  )
  draw = compile_noise_fn(
    mesh, batch_size, padded, int(setup.model_cfg.latent_dim), num_samples, iwae_samples, iwae_chunk, scores
  )
  rep = NamedSharding(mesh, P())
  stats = distributed.replicated(nap_stats, rep)
  axis = 1 if per_model_images else 0
  n = x_test.shape[axis]
  m = jax.tree.leaves(params)[0].shape[0]
  sharding = NamedSharding(mesh, P(None, "data"))
  parts = []
  for i, (start, stop, _) in enumerate(inference.batch_bounds(n, batch_size, ndev)):
    key = distributed.replicated(jax.random.fold_in(jax.random.PRNGKey(seed), i), rep)
    noise = draw(key)
    for offset, offset_stop, pad in inference.batch_bounds(stop - start, rows, ndev):
      xb = inference.pad_batch(np.take(x_test, np.arange(start + offset, start + offset_stop), axis=axis), pad, axis)
      if not per_model_images:  # every model scores the same images: the program takes them once per model
        xb = np.broadcast_to(xb[None], (m, *xb.shape))
      xb = distributed.batch_sharded(np.ascontiguousarray(xb), sharding, 1)
      noise_rows = _noise_rows(noise, distributed.replicated(np.int32(offset), rep), rows)
      parts.append((fn(params, stats, xb, noise_rows), offset_stop - offset))
    if progress is not None:  # after the batch is done, not when it is dispatched
      jax.block_until_ready(parts[-1][0])
      progress(1)
  host = [jax.tree.map(lambda o, k=k: np.asarray(o)[:, :k], distributed.to_host(out)) for out, k in parts]
  return jax.tree.map(lambda *o: np.concatenate(o, axis=1), *host)


def _identity_nap(setup: ModelSetup, params):
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
  check_score_condition(how)
  if how == "min":
    return per_cond.min(axis=1)
  if how == "marginal":
    w = np.asarray(weights, np.float64) / np.sum(weights)
    if name in LOG_DENSITY_SCORES:
      neg = -per_cond.astype(np.float64) + np.log(w)[None]
      top = neg.max(axis=1, keepdims=True)
      return -(top[:, 0] + np.log(np.exp(neg - top).sum(axis=1)))
    return per_cond @ w
  col = np.where(cond_of_example >= 0, cond_of_example, scores.shape[1] - 1)  # "given"
  return scores[np.arange(scores.shape[0]), col]


def reduce_scores(
  run,
  scores: dict,
  y: np.ndarray | None,
  *,
  conditional: bool,
  condition_counts,
  protocol,
  length_bits=None,
  offset_bits: float = 0.0,
  reference: dict | None = None,
) -> dict:
  """Per-condition scores (name -> (N, C')) of images with labels ``y`` -> name -> (N,), with complexity
  from the reduced iwae and ``length_bits`` (N,) when both are there, and each standardised sum
  (STANDARDISED_SUMS: sap_complexity, sap_knn, sap_complexity_knn) whose parts are there and in ``reference``
  (dict rapp_sap, complexity, latent_knn: the reduced scores of normal training images). ``y`` None: the labels are unknown (new images), which only score_condition "given" needs."""
  if y is None and conditional and protocol.score_condition == "given":
    raise ValueError("score_condition 'given' needs each image's class, and these images have none")
  cond_of_example = None if y is None else condition_ids(run, y, missing=-1)
  reduced = {}
  for name in PER_CONDITION_SCORES:
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
  for name, parts in STANDARDISED_SUMS.items():
    if reference is not None and all(p in reduced and p in reference for p in parts):
      reduced[name] = anomaly_scores.standardised_sum(*((reduced[p], reference[p]) for p in parts))
  return reduced


def chosen_condition(per_cond: np.ndarray, how: str, *, conditional: bool, cond_of_example=None) -> np.ndarray:
  """The condition id under which each image is pictured (figures, TensorBoard): (N, C') scores -> (N,) ids; the
  best-scoring normal condition (min / marginal), the image's own (``given``; anomalies: the all-zero condition,
  id C), 0 if unconditional."""
  if not conditional:
    return np.zeros(per_cond.shape[0], np.int32)
  if how == "given":
    return np.where(cond_of_example >= 0, cond_of_example, per_cond.shape[1] - 1).astype(np.int32)
  return np.argmin(per_cond[:, :-1], axis=1).astype(np.int32)


class ScoreProgress:
  """Scoring's progress: a tqdm bar ``score N run(s)`` over its ``total`` steps (a NAP fit per run, the batches,
  the metrics of each run) when ``show``, its postfix the current stage; and the seconds of each stage, which
  :meth:`close` returns as one line for the log."""

  def __init__(self, n_runs: int, total: int, show: bool):
    self.n_runs = n_runs
    self.seconds: dict[str, float] = {}
    self.start = self._t = time.perf_counter()
    self._stage: str | None = None
    self.bar: Any = None
    if show:
      from tqdm.auto import tqdm

      self.bar = tqdm(total=total, desc=f"score {n_runs} run(s)", unit="step", leave=False)

  def stage(self, name: str | None):
    """Start stage ``name`` (None: the end of the last one)."""
    now = time.perf_counter()
    if self._stage is not None:
      self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._t
    self._stage, self._t = name, now
    if self.bar is not None and name is not None:
      self.bar.set_postfix_str(name)

  def __call__(self, n: int = 1):
    if self.bar is not None:
      self.bar.update(n)

  def close(self) -> str:
    self.stage(None)
    if self.bar is not None:
      self.bar.close()
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
    return f"scored {self.n_runs} run(s) in {time.perf_counter() - self.start:.1f} s ({parts})"
