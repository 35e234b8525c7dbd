"""Anomaly scores, AUROC / AUPR, and the results table (DESIGN.md §4).

Scores of a test image x (larger = more anomalous):
  recon  A(x) = ||x - mean of p(x | z = mu(x)[, c])||^2        (the paper's score; encoder mean, no sampling)
  nelbo  E(x) = E_q[-log p(x|z[,c])] + KL(q(z|x[,c]) || p(z[|c]))  (K fixed-key samples for the expectation)
A conditional model scores x under every normal condition c; ``score_condition`` reduces them:
  min       min_c score_c (default)
  marginal  recon: sum_c pi_c A_c;  nelbo: -log sum_c pi_c exp(-E_c)   (pi_c = training frequency of c)
  given     the image's own class as condition; anomalies (whose class is not a condition) get the all-zero
            condition vector. It uses the test label, so it leaks: only for reproducing the paper's code.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from sklearn.metrics import average_precision_score, roc_auc_score

from dcvae_jax import distributed, estimators, networks, objectives
from dcvae_jax.train import Setup, preprocess

SCORES = ("recon", "nelbo")
SCORE_CONDITIONS = ("min", "marginal", "given")


def score_batch(setup: Setup, params, x, key, num_samples: int):
  """Scores of one model on a float batch x (B,H,W,1) under each condition: dict name -> (B, C').

  C' = 1 for unconditional models; C + 1 for conditional ones (the last column: the all-zero condition).
  """
  spec, module = setup.spec, setup.module
  hp = setup.hp
  n_cols = setup.num_conditions + 1 if spec.conditional else 1
  b = x.shape[0]

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
      return objectives.recon_nll(module.apply(params, z, c, method=networks.VAE.decode), x, hp.likelihood)
    rec = jnp.mean(jax.vmap(nll)(jax.random.split(key, num_samples)), axis=0)
    return recon, rec + kl

  recon, nelbo = jax.vmap(under)(jnp.arange(n_cols))
  return {"recon": recon.T, "nelbo": nelbo.T}


def compile_score_fn(setup: Setup, mesh, num_samples: int):
  """jit(vmap over models) of score_batch, the test batch sharded over the mesh."""
  fn = jax.vmap(functools.partial(score_batch, setup, num_samples=num_samples), in_axes=(0, None, None))

  def wrapped(params, x_uint8, key):
    return fn(params, preprocess(x_uint8, setup.binarize), key)
  return jax.jit(wrapped, in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data")),
                                        NamedSharding(mesh, P())),
                 out_shardings=NamedSharding(mesh, P()))


def score_test_set(setup: Setup, params, x_test: np.ndarray, mesh, *, batch_size: int, num_samples: int,
                   seed: int = 0):
  """Scores of every test image under every stacked model: dict name -> (M, N_test, C'). Each image is scored
  exactly once: the last batch is padded to the batch size (a multiple of the device count) and cut back."""
  ndev = mesh.devices.size
  batch_size = max(ndev, (int(batch_size) // ndev) * ndev)
  n = x_test.shape[0]
  fn = compile_score_fn(setup, mesh, num_samples)
  out = {k: [] for k in SCORES}
  for i, start in enumerate(range(0, n, batch_size)):
    chunk = x_test[start:start + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    key = distributed.replicated(jax.random.fold_in(jax.random.PRNGKey(seed), i), NamedSharding(mesh, P()))
    res = distributed.to_host(fn(params, distributed.batch_sharded(chunk, NamedSharding(mesh, P("data")), 0),
                                 key))
    for k in SCORES:
      out[k].append(res[k][:, :batch_size - pad])
  return {k: np.concatenate(v, axis=1) for k, v in out.items()}


def reduce_conditions(scores: np.ndarray, name: str, how: str, *, conditional: bool, cond_of_example=None,
                      weights=None) -> np.ndarray:
  """(N, C') per-condition scores -> (N,) per DESIGN.md §4 (see module docstring)."""
  if not conditional:
    return scores[:, 0]
  per_cond = scores[:, :-1]
  if how == "min":
    return per_cond.min(axis=1)
  if how == "marginal":
    w = np.asarray(weights, np.float64) / np.sum(weights)
    if name == "nelbo":
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


def evaluate_run(run, scores: dict, y_test: np.ndarray, *, conditional: bool, condition_counts, protocol) -> dict:
  """All metrics of one run from its scores (name -> (N_test, C')). The headline score is protocol.score."""
  keep = np.isin(y_test, run.normal + run.anomalous)
  y = y_test[keep]
  is_anomaly = np.isin(y, run.anomalous)
  lookup = np.full(int(max(y_test.max(), *run.normal)) + 1, -1)
  lookup[list(run.normal)] = np.arange(len(run.normal))
  result = {"run": run.name, "label": run.label, "seed": run.seed, "normal": list(run.normal),
            "anomalous": list(run.anomalous), "num_test_normal": int((~is_anomaly).sum()),
            "num_test_anomalous": int(is_anomaly.sum())}
  for name in SCORES:
    reduced = reduce_conditions(scores[name][keep], name, protocol.score_condition, conditional=conditional,
                                cond_of_example=lookup[y], weights=condition_counts)
    m = detection_metrics(reduced, is_anomaly)
    result.update({f"{name}_{k}": v for k, v in m.items()})
  result["auroc"] = result[f"{protocol.score}_auroc"]
  result["aupr"] = result[f"{protocol.score}_aupr"]
  # The paper's A (reconstruction error) and E (negative ELBO) for normal and anomalous test images.
  result["A_normal"], result["A_anomalous"] = result["recon_mean_normal"], result["recon_mean_anomalous"]
  result["E_normal"], result["E_anomalous"] = result["nelbo_mean_normal"], result["nelbo_mean_anomalous"]
  return result


def summarize(per_run: list[dict], *, model: str, dataset: str, protocol, train_seconds: float) -> dict:
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
  return "\n".join(lines)
