"""Anomaly scores, AUROC / AUPR, and the results table.

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

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from sklearn.metrics import average_precision_score, roc_auc_score

from dcvae_jax import anomaly_scores, distributed, estimators, networks, objectives
from dcvae_jax.train import Setup, preprocess

SCORES = ("recon", "nelbo", "iwae", "complexity", "rapp", "rapp_sap", "sap_complexity")
DEVICE_SCORES = ("recon", "nelbo", "iwae", "rapp", "rapp_sap")   # complexity is derived from iwae on the host
LOG_DENSITY_SCORES = ("nelbo", "iwae")
SCORE_CONDITIONS = ("min", "marginal", "given")


def _condition(setup: Setup, ids):
  return jax.nn.one_hot(ids, setup.num_conditions) if setup.spec.conditional else None


def rapp_differences_batch(setup: Setup, params, x, cond_ids):
  """RaPP's stacked differences d(x) of one model on a float batch under integer conditions: (B, D)."""
  module, hp = setup.module, setup.hp
  c = _condition(setup, cond_ids)
  hidden_x = module.apply(params, x, c, method=networks.VAE.encode_hidden)
  x_hat = objectives.mean_image(module.apply(params, hidden_x[-1], c, method=networks.VAE.decode), hp.likelihood)
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
    return objectives.recon_nll(module.apply(params, z, c, method=networks.VAE.decode), x, hp.likelihood,
                                obs_logvar)

  def under(cid):
    ids = jnp.full((b,), cid, jnp.int32)
    c = jax.nn.one_hot(ids, setup.num_conditions) if spec.conditional else None
    mu, logvar = module.apply(params, x, c, method=networks.VAE.encode)
    mean = objectives.mean_image(module.apply(params, mu, c, method=networks.VAE.decode), hp.likelihood)
    recon = jnp.square(x - mean).reshape((b, -1)).sum(-1)
    pmu, plogvar = module.apply(params, jnp.minimum(ids, setup.num_conditions - 1 if spec.conditional else 0),
                                method=networks.VAE.prior)
    kl = estimators.kl_diag_gaussians(mu, logvar, pmu, plogvar).sum(-1)

    def nll(k):
      z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(k, mu.shape)
      return nll_of(z, c)
    rec = jnp.mean(jax.vmap(nll)(jax.random.split(key, num_samples)), axis=0)

    def log_w(z, log_q):  # (S, B, d) -> log p(x|z) + log p(z) - log q(z|x): (S, B)
      log_px = -jax.lax.map(lambda zs: nll_of(zs, c), z)
      return log_px + estimators.gaussian_log_density(z, pmu, plogvar).sum(-1) - log_q
    iwae = anomaly_scores.iwae_nll(log_w, jax.random.fold_in(key, 0x1AE), mu, logvar,
                                   num_samples=iwae_samples, chunk=iwae_chunk)
    d = rapp_differences_batch(setup, params, x, ids)
    return recon, rec + kl, iwae, anomaly_scores.nap(d, nap_stats), anomaly_scores.sap(d)

  recon, nelbo, iwae, rapp, rapp_sap = jax.lax.map(under, jnp.arange(n_cols))
  return {"recon": recon.T, "nelbo": nelbo.T, "iwae": iwae.T, "rapp": rapp.T, "rapp_sap": rapp_sap.T}


def compile_score_fn(setup: Setup, mesh, num_samples: int, iwae_samples: int = 64, iwae_chunk: int = 16):
  """jit(map over models) of score_batch, the test batch sharded over the mesh."""
  one = functools.partial(score_batch, setup, num_samples=num_samples, iwae_samples=iwae_samples,
                          iwae_chunk=min(iwae_chunk, iwae_samples))

  def wrapped(params, nap_stats, x_uint8, key):
    x = preprocess(x_uint8, setup.binarize, setup.dequantize)
    return jax.lax.map(lambda a: one(a[0], a[1], x, key), (params, nap_stats))
  rep = NamedSharding(mesh, P())
  return jax.jit(wrapped, in_shardings=(rep, rep, NamedSharding(mesh, P("data")), rep), out_shardings=rep)


def _batches(n: int, batch_size: int, ndev: int):
  """(start, stop, pad) of fixed-size batches covering n items; the batch is a multiple of the device count."""
  batch_size = max(ndev, (int(batch_size) // ndev) * ndev)
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    yield start, stop, batch_size - (stop - start)


def _pad(a: np.ndarray, pad: int, axis: int = 0) -> np.ndarray:
  if not pad:
    return a
  shape = list(a.shape)
  shape[axis] = pad
  return np.concatenate([a, np.zeros(shape, a.dtype)], axis=axis)


def fit_rapp(setup: Setup, params, x_fit: np.ndarray, cond_fit: np.ndarray, mesh, *, batch_size: int) -> dict:
  """NAP statistics of every stacked model from its own normal training images.

  x_fit uint8 (M, n, H, W), cond_fit int (M, n) (each image's condition in its run). Returns stacked numpy
  dict(mean (M, D), basis (M, D, k), inv_scale (M, k))."""
  rep = NamedSharding(mesh, P())
  one = functools.partial(rapp_differences_batch, setup)

  @functools.partial(jax.jit, in_shardings=(rep, NamedSharding(mesh, P(None, "data")),
                                            NamedSharding(mesh, P(None, "data"))), out_shardings=rep)
  def diffs(params, x_uint8, cond):
    x = preprocess(x_uint8, setup.binarize, setup.dequantize)
    return jax.lax.map(lambda a: one(a[0], a[1], a[2]), (params, x, cond))

  parts = []
  for start, stop, pad in _batches(x_fit.shape[1], batch_size, mesh.devices.size):
    xb = distributed.batch_sharded(_pad(x_fit[:, start:stop], pad, 1), NamedSharding(mesh, P(None, "data")), 1)
    cb = distributed.batch_sharded(_pad(np.asarray(cond_fit[:, start:stop], np.int32), pad, 1),
                                   NamedSharding(mesh, P(None, "data")), 1)
    parts.append(distributed.to_host(diffs(params, xb, cb))[:, :stop - start])
  d = np.concatenate(parts, axis=1)
  fits = [anomaly_scores.fit_nap(d[m]) for m in range(d.shape[0])]
  return {k: np.stack([f[k] for f in fits]) for k in fits[0]}


def score_test_set(setup: Setup, params, x_test: np.ndarray, mesh, *, batch_size: int, num_samples: int,
                   seed: int = 0, nap_stats=None, iwae_samples: int = 64, iwae_chunk: int = 16):
  """Scores of every test image under every stacked model: dict name -> (M, N_test, C'). Each image is scored
  exactly once: the last batch is padded to the batch size (a multiple of the device count) and cut back.
  ``nap_stats`` from :func:`fit_rapp` (None: an identity normalisation, so rapp equals rapp_sap)."""
  n = x_test.shape[0]
  if nap_stats is None:
    nap_stats = _identity_nap(setup, params, x_test.shape[1:])
  fn = compile_score_fn(setup, mesh, num_samples, iwae_samples, iwae_chunk)
  out = {k: [] for k in DEVICE_SCORES}
  stats = distributed.replicated(nap_stats, NamedSharding(mesh, P()))
  for i, (start, stop, pad) in enumerate(_batches(n, batch_size, mesh.devices.size)):
    chunk = _pad(x_test[start:stop], pad)
    key = distributed.replicated(jax.random.fold_in(jax.random.PRNGKey(seed), i), NamedSharding(mesh, P()))
    res = distributed.to_host(fn(params, stats, distributed.batch_sharded(chunk, NamedSharding(mesh, P("data")), 0),
                                 key))
    for k in DEVICE_SCORES:
      out[k].append(res[k][:, :stop - start])
  return {k: np.concatenate(v, axis=1) for k, v in out.items()}


def _identity_nap(setup: Setup, params, image_shape):
  """NAP statistics that make NAP equal SAP: zero mean, identity basis, unit scales."""
  m = jax.tree.leaves(params)[0].shape[0]
  x = jnp.zeros((1, *image_shape, 1), jnp.float32)
  first = jax.tree.map(lambda a: a[0], params)
  dim = jax.eval_shape(lambda p: rapp_differences_batch(setup, p, x, jnp.zeros((1,), jnp.int32)), first).shape[-1]
  eye = np.eye(dim, dtype=np.float32)
  return {"mean": np.zeros((m, dim), np.float32), "basis": np.broadcast_to(eye, (m, dim, dim)),
          "inv_scale": np.ones((m, dim), np.float32)}


def reduce_conditions(scores: np.ndarray, name: str, how: str, *, conditional: bool, cond_of_example=None,
                      weights=None) -> np.ndarray:
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


def detection_metrics(score: np.ndarray, is_anomaly: np.ndarray) -> dict:
  """AUROC and AUPR with anomalies as the positive class, and mean score of each group.

  A non-finite score (a diverged model) ranks as the most anomalous; how many there were is reported."""
  is_anomaly = np.asarray(is_anomaly, bool)
  bad = ~np.isfinite(score)
  if bad.any():
    top = np.max(score[~bad]) + 1.0 if (~bad).any() else 0.0
    score = np.where(bad, top, score)
  return {"nonfinite": int(bad.sum()),"auroc": float(roc_auc_score(is_anomaly, score)),
          "aupr": float(average_precision_score(is_anomaly, score)),
          "mean_normal": float(np.mean(score[~is_anomaly])),
          "mean_anomalous": float(np.mean(score[is_anomaly]))}


def reduce_scores(run, scores: dict, y: np.ndarray, *, conditional: bool, condition_counts, protocol,
                  length_bits=None, offset_bits: float = 0.0) -> dict:
  """Per-condition scores (name -> (N, C')) of images with labels ``y`` -> name -> (N,), with complexity
  from the reduced iwae and ``length_bits`` (N,) when both are there."""
  lookup = np.full(int(max(y.max(), *run.normal)) + 1, -1)
  lookup[list(run.normal)] = np.arange(len(run.normal))
  reduced = {}
  for name in DEVICE_SCORES:
    if name in scores:
      reduced[name] = reduce_conditions(scores[name], name, protocol.score_condition, conditional=conditional,
                                        cond_of_example=lookup[y], weights=condition_counts)
  if "iwae" in reduced and length_bits is not None:
    reduced["complexity"] = anomaly_scores.complexity(reduced["iwae"], np.asarray(length_bits), offset_bits)
  return reduced


def evaluate_run(run, scores: dict, y_test: np.ndarray, *, conditional: bool, condition_counts, protocol,
                 length_bits=None, offset_bits: float = 0.0, reference: dict | None = None) -> dict:
  """All metrics of one run from its scores (name -> (N_test, C')). The headline score is protocol.score.

  ``length_bits`` (N_test,): L(x) of every test image for the complexity score (computed from the reduced iwae
  plus ``offset_bits``); without it, or without an iwae score, complexity is not reported. ``reference``: the
  reduced rapp_sap and complexity of normal training images (see :func:`sap_complexity`)."""
  keep = np.isin(y_test, run.normal + run.anomalous)
  y = y_test[keep]
  is_anomaly = np.isin(y, run.anomalous)
  result = {"run": run.name, "label": run.label, "seed": run.seed, "normal": list(run.normal),
            "anomalous": list(run.anomalous), "num_test_normal": int((~is_anomaly).sum()),
            "num_test_anomalous": int(is_anomaly.sum())}
  reduced = reduce_scores(run, {k: v[keep] for k, v in scores.items() if k in DEVICE_SCORES}, y,
                          conditional=conditional, condition_counts=condition_counts, protocol=protocol,
                          length_bits=None if length_bits is None else np.asarray(length_bits)[keep],
                          offset_bits=offset_bits)
  if reference is not None and "complexity" in reduced:
    reduced["sap_complexity"] = anomaly_scores.sap_complexity(reduced["rapp_sap"], reduced["complexity"],
                                                              reference["rapp_sap"], reference["complexity"])
  if protocol.score not in reduced:
    raise ValueError(f"score {protocol.score!r} was not computed for run {run.name}")
  for name, values in reduced.items():
    m = detection_metrics(values, is_anomaly)
    result.update({f"{name}_{k}": v for k, v in m.items()})
  result["auroc"] = result[f"{protocol.score}_auroc"]
  result["aupr"] = result[f"{protocol.score}_aupr"]
  # The paper's A (reconstruction error) and E (negative ELBO) for normal and anomalous test images.
  result["A_normal"], result["A_anomalous"] = result["recon_mean_normal"], result["recon_mean_anomalous"]
  result["E_normal"], result["E_anomalous"] = result["nelbo_mean_normal"], result["nelbo_mean_anomalous"]
  return result


def summarize(per_run: list[dict], *, model: str, dataset: str, protocol, train_seconds: float,
              complexity_likelihood: str | None = None) -> dict:
  """results.json: per-class AUROC (mean over seeds), mean and std over classes and seeds."""
  def mean_std(key):
    v = np.array([r[key] for r in per_run], np.float64)
    return float(v.mean()), float(v.std())
  by_label: dict[str, list] = {}
  for r in per_run:
    by_label.setdefault(r["label"], []).append(r)
  out = {"model": model, "dataset": dataset, "protocol": protocol.name, "score": protocol.score,
         "score_condition": protocol.score_condition, "num_runs": len(per_run),
         "train_seconds": float(train_seconds)}
  if protocol.score_condition == "given":
    out["warning"] = "score_condition='given' uses the test label (leaks the anomaly label)"
  for key in ("auroc", "aupr", "recon_auroc", "nelbo_auroc", "recon_aupr", "nelbo_aupr",
              "A_normal", "A_anomalous", "E_normal", "E_anomalous"):
    out[f"{key}_mean"], out[f"{key}_std"] = mean_std(key)
  out["auroc_per_class"] = {k: float(np.mean([r["auroc"] for r in v])) for k, v in by_label.items()}
  out["aupr_per_class"] = {k: float(np.mean([r["aupr"] for r in v])) for k, v in by_label.items()}
  computed = [n for n in SCORES if all(f"{n}_auroc" in r for r in per_run)]
  out["auroc_by_score"] = {n: mean_std(f"{n}_auroc")[0] for n in computed}
  out["auroc_std_by_score"] = {n: mean_std(f"{n}_auroc")[1] for n in computed}
  out["aupr_by_score"] = {n: mean_std(f"{n}_aupr")[0] for n in computed}
  out["auroc_per_class_by_score"] = {
      n: {k: float(np.mean([r[f"{n}_auroc"] for r in v])) for k, v in by_label.items()} for n in computed}
  if complexity_likelihood is not None and "complexity" in computed:
    out["complexity_likelihood"] = complexity_likelihood
  out["runs"] = per_run
  return out


def format_table(results: dict) -> str:
  """A short text table: one row per class, then the mean +- std."""
  lines = [f"{results['model']} on {results['dataset']} ({results['protocol']}, score={results['score']})",
           f"{'class':>8} {'AUROC':>7} {'AUPR':>7}"]
  for k in sorted(results["auroc_per_class"], key=lambda s: (len(s), s)):
    lines.append(f"{k:>8} {results['auroc_per_class'][k]:7.3f} {results['aupr_per_class'][k]:7.3f}")
  lines.append(f"{'mean':>8} {results['auroc_mean']:7.3f} {results['aupr_mean']:7.3f}   "
               f"(AUROC std {results['auroc_std']:.3f}; train {results['train_seconds']:.1f} s)")
  lines.append(f"A normal/anomalous {results['A_normal_mean']:.2f}/{results['A_anomalous_mean']:.2f}   "
               f"E normal/anomalous {results['E_normal_mean']:.2f}/{results['E_anomalous_mean']:.2f}")
  if results.get("auroc_by_score"):
    lines.append("mean AUROC by score: " + "  ".join(f"{k} {v:.3f}" for k, v in results["auroc_by_score"].items()))
  return "\n".join(lines)
