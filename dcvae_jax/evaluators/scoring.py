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

``eval.scores`` picks which of them a job computes; the compiled program holds only the device scores they
need (``device_scores``: complexity needs iwae, sap_complexity iwae and rapp_sap), so leaving out iwae,
the dearest (K decoder passes per image and condition), leaves out its cost.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
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

# The device scores each score is computed from (complexity and sap_complexity are combined on the host).
SCORE_INPUTS = {
  "recon": ("recon",),
  "nelbo": ("nelbo",),
  "iwae": ("iwae",),
  "complexity": ("iwae",),
  "rapp": ("rapp",),
  "rapp_sap": ("rapp_sap",),
  "sap_complexity": ("iwae", "rapp_sap"),
}

LOG_DENSITY_SCORES = ("nelbo", "iwae")


def score_names(config) -> tuple[str, ...]:
  """The scores a job computes and reports: ``eval.scores`` in SCORES order (() = all of them)."""
  wanted = tuple(config.eval.scores or SCORES)
  return tuple(n for n in SCORES if n in wanted)


def device_scores(names) -> tuple[str, ...]:
  """The device scores (in DEVICE_SCORES order) that the scores ``names`` are computed from."""
  need = {d for n in names for d in SCORE_INPUTS[n]}
  return tuple(d for d in DEVICE_SCORES if d in need)


def rapp_differences_batch(setup: ModelSetup, params, x, cond_ids):
  """RaPP's stacked differences d(x) of one model on a float batch under integer conditions: (B, D)."""
  module, model_cfg = setup.module, setup.model_cfg
  c = objectives.one_hot_condition(setup.spec, cond_ids, setup.num_conditions)
  hidden_x = module.apply(params, x, c, method=networks.VAE.encode_hidden)
  x_hat = objectives.mean_image(objectives.decode(module, params, hidden_x[-1], c), model_cfg.likelihood)
  hidden_r = module.apply(params, x_hat, c, method=networks.VAE.encode_hidden)
  return anomaly_scores.rapp_differences(hidden_x, hidden_r, x, x_hat)


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
  device scores ``scores`` (only those are built into the program; ``nap_stats`` is read only for rapp).

  C' = 1 for unconditional models; C + 1 for conditional ones (the last column: the all-zero condition).
  The conditions are visited one after another (lax.map) to bound memory.
  """
  spec, module = setup.spec, setup.module
  model_cfg = setup.model_cfg
  n_cols = setup.num_conditions + 1 if spec.conditional else 1
  b = x.shape[0]
  obs_logvar = objectives.likelihood_logvar(model_cfg, module.apply(params, method=networks.VAE.obs_logvar))

  def nll_of(z, c):
    return objectives.recon_nll(objectives.decode(module, params, z, c), x, model_cfg.likelihood, obs_logvar)

  def under(cid):
    ids = jnp.full((b,), cid, jnp.int32)
    c = objectives.one_hot_condition(spec, ids, setup.num_conditions)
    mu, logvar = objectives.encode(module, params, x, c)
    out = {}
    if "recon" in scores:
      mean = objectives.mean_image(objectives.decode(module, params, mu, c), model_cfg.likelihood)
      out["recon"] = jnp.square(x - mean).reshape((b, -1)).sum(-1)
    pmu, plogvar = module.apply(params, ids, method=networks.VAE.prior)  # the zero condition: N(0, I)
    if "nelbo" in scores:
      kl = estimators.kl_diag_gaussians(mu, logvar, pmu, plogvar).sum(-1)

      def nll(k):
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k, mu.shape)
        return nll_of(z, c)

      rec = jnp.mean(jax.vmap(nll)(jax.random.split(key, num_samples)), axis=0)
      out["nelbo"] = rec + kl

    if "iwae" in scores:

      def log_w(z, log_q):  # (S, B, d) -> log p(x|z) + log p(z) - log q(z|x): (S, B)
        log_px = -jax.lax.map(lambda zs: nll_of(zs, c), z)
        return log_px + estimators.gaussian_log_density(z, pmu, plogvar).sum(-1) - log_q

      out["iwae"] = anomaly_scores.iwae_nll(
        log_w, jax.random.fold_in(key, 0x1AE), mu, logvar, num_samples=iwae_samples, chunk=iwae_chunk
      )
    if "rapp" in scores or "rapp_sap" in scores:
      d = rapp_differences_batch(setup, params, x, ids)
      if "rapp" in scores:
        out["rapp"] = anomaly_scores.nap(d, nap_stats)
      if "rapp_sap" in scores:
        out["rapp_sap"] = anomaly_scores.sap(d)
    return out

  return {k: v.T for k, v in jax.lax.map(under, jnp.arange(n_cols)).items()}


@functools.lru_cache(maxsize=4)
def compile_score_fn(
  setup: ModelSetup,
  mesh,
  num_samples: int,
  iwae_samples: int = 64,
  iwae_chunk: int = 16,
  *,
  scores: tuple = DEVICE_SCORES,
  per_model_images: bool = False,
):
  """jit(map over models) of score_batch, the batch sharded over the mesh: one batch (B, H, W) that every
  model scores, or with ``per_model_images`` a batch (M, B, H, W) of each model's own images. One per setting
  (cached), so the test, validation and reference images of a group of runs share one compiled program."""
  one = functools.partial(
    score_batch,
    setup,
    num_samples=num_samples,
    iwae_samples=iwae_samples,
    iwae_chunk=min(iwae_chunk, iwae_samples),
    scores=tuple(scores),
  )

  def wrapped(params, nap_stats, x_uint8, key):
    x = preprocess(x_uint8, setup.binarize, setup.dequantize, image_shape=setup.module.image_shape)
    if per_model_images:
      return jax.lax.map(lambda a: one(a[0], a[1], a[2], key), (params, nap_stats, x))
    return jax.lax.map(lambda a: one(a[0], a[1], x, key), (params, nap_stats))

  rep = NamedSharding(mesh, P())
  batch = NamedSharding(mesh, P(None, "data") if per_model_images else P("data"))
  return jax.jit(wrapped, in_shardings=(rep, rep, batch, rep), out_shardings=rep)


def fit_rapp(
  setup: ModelSetup, params, x_fit: np.ndarray, cond_fit: np.ndarray, mesh, *, batch_size: int, progress=None
) -> dict:
  """NAP statistics of every stacked model from its own normal training images.

  x_fit uint8 (M, n, H, W), cond_fit int (M, n) (each image's condition in its run). Returns stacked numpy
  dict(mean (M, D), basis (M, D, k), inv_scale (M, k)). ``progress``: called with 1 after each model's fit."""
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
  progress=None,
):
  """Scores of every test image under every stacked model: dict name -> (M, N_test, C'), for the device scores
  ``scores``. Each image is scored exactly once: the last batch is padded to the batch size (a multiple of the
  device count) and cut back. ``nap_stats`` from :func:`fit_rapp` (None: an identity normalisation, so rapp
  equals rapp_sap). ``per_model_images``: x_test is (M, N, H, W), model m scores only its own x_test[m].
  ``progress``: called with 1 after each batch."""
  scores = tuple(s for s in DEVICE_SCORES if s in scores)
  if "rapp" not in scores:
    nap_stats = {}  # nothing reads it
  elif nap_stats is None:
    nap_stats = _identity_nap(setup, params)
  fn = compile_score_fn(
    setup, mesh, num_samples, iwae_samples, iwae_chunk, scores=scores, per_model_images=per_model_images
  )
  stats = distributed.replicated(nap_stats, NamedSharding(mesh, P()))

  def call(i, xb):
    key = distributed.replicated(jax.random.fold_in(jax.random.PRNGKey(seed), i), NamedSharding(mesh, P()))
    out = {k: v for k, v in fn(params, stats, xb, key).items() if k in DEVICE_SCORES}
    if progress is not None:  # after the batch is done, not when it is dispatched
      jax.block_until_ready(out)
      progress(1)
    return out

  axis = 1 if per_model_images else 0
  return inference.map_batches(call, [(x_test, axis)], mesh=mesh, batch_size=batch_size)


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
