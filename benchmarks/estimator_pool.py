"""Does a larger estimation pool help? Known-answer measurement (a measurement for docs/results/estimator_pool.md, not a feature).

  python benchmarks/estimator_pool.py --out=docs/results/estimator_pool      # writes .md and .json (~1 min)

A group of M current codes of one condition (the anchors) is joined by a pool of P codes of the same
condition from earlier batches, used only as mixture components (with stop_gradient in training): q(z_i) of
each anchor is the MSS mixture over the M + P members, N = N_c, and the MI / TC / DWKL estimates are averaged
over the M anchors (``dcvae_jax.models.estimators.log_qz_estimates`` on the concatenation, unchanged). The pool's
codes are stale in training: the encoder has moved since they were computed. Two models of that move, of
size `drift` (0: the encoder did not move):
* "noise": each pooled posterior mean moves independently, by drift x N(0, Sigma - s^2 I);
* "shift": all pooled means move together, by drift x (a random +-1 vector) x sqrt(diag Sigma), i.e. the
  pool's aggregate posterior is translated by `drift` of its standard deviation in every dimension.
Codes and the exact values of the data set: as in benchmarks/estimator_bias.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # estimator_bias.py beside this file
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import estimator_bias as eb  # noqa: E402

from dcvae_jax.models import estimators  # noqa: E402


@jax.jit
def _anchor_terms(z, mu, logvar, n, m_anchor):
  log_qz, log_qzj = estimators.log_qz_estimates(z, mu, logvar, dataset_size=n, method="mss")
  log_qzx = jnp.sum(estimators.gaussian_log_density(z, mu, logvar), -1)
  log_pz = jnp.sum(estimators.gaussian_log_density(z, 0.0, 0.0), -1)
  anchor = jnp.arange(z.shape[0]) < m_anchor
  mean = lambda v: jnp.sum(jnp.where(anchor, v, 0.0)) / m_anchor  # noqa: E731
  return dict(
    mi=mean(log_qzx - log_qz), tc=mean(log_qz - jnp.sum(log_qzj, -1)), dwkl=mean(jnp.sum(log_qzj, -1) - log_pz)
  )


def measure(mu_all, sigma, s2, m, pool, drift, draws, seed, kind="noise"):
  n, d = mu_all.shape
  rng = np.random.default_rng(seed)
  chol = np.linalg.cholesky(sigma - s2 * np.eye(d))
  vals = {t: [] for t in eb.TERMS}
  for _ in range(draws):
    idx = rng.choice(n, m + pool, replace=False)
    mu = mu_all[idx].copy()
    z = mu + math.sqrt(s2) * rng.normal(size=mu.shape)
    if kind == "noise":  # stale components: the encoder moved since
      mu[m:] += drift * rng.normal(size=(pool, d)) @ chol.T
    else:
      mu[m:] += drift * rng.choice([-1.0, 1.0], size=d) * np.sqrt(np.diag(sigma))
    out = _anchor_terms(
      z.astype(np.float32), mu.astype(np.float32), np.full(mu.shape, math.log(s2), np.float32), np.float32(n), m
    )
    for t in eb.TERMS:
      vals[t].append(float(out[t]))
  return {t: dict(mean=float(np.mean(v)), std=float(np.std(v, ddof=1))) for t, v in vals.items()}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--groups", default="7,16")
  p.add_argument("--pools", default="0,32,64,128,256")
  p.add_argument("--drifts", default="noise:0.3,shift:0.1,shift:0.3", help="KIND:SIZE, ...")
  p.add_argument("--draws", type=int, default=30)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="docs/results/estimator_pool")
  args = p.parse_args()
  groups = [int(v) for v in args.groups.split(",")]
  pools = [int(v) for v in args.pools.split(",")]
  drifts = [(v.split(":")[0], float(v.split(":")[1])) for v in args.drifts.split(",") if v]
  t0 = time.time()
  res = dict(command="python benchmarks/estimator_pool.py " + " ".join(sys.argv[1:]), draws=args.draws, codes={})
  lines = [
    "# A larger estimation pool: known-answer measurement",
    "",
    "Made by",
    "",
    "```bash",
    res["command"],
    "```",
    "",
    "Method: the script's docstring. MSS; mean ± std over "
    f"{args.draws} draws of the anchors' mean; bias = mean - the data set's exact value. Report only: no "
    "default changed.",
  ]
  for k, (name, kind, d, s2, n) in enumerate(
    [("independent", "independent", 10, 0.1, 6000), ("correlated, smooth", "correlated", 4, 0.2, 2000)]
  ):
    sigma = eb.covariance(kind, d)
    mu_all = eb.make_codes(sigma, s2, n, seed=args.seed + (0 if k == 0 else 2))  # the bias table's data sets
    exact = eb.exact_terms(mu_all, s2, seed=args.seed + (100 if k == 0 else 102))
    entry = dict(d=d, s2=s2, n=n, exact=exact, rows=[])
    lines += [
      "",
      f"## {name.capitalize()} codes (d = {d}, s^2 = {s2}, N = {n}; exact TC {exact['tc']:.2f}, "
      f"MI {exact['mi']:.2f}, DWKL {exact['dwkl']:.2f})",
      "",
      "| M | pool P | drift (kind: size) | TC | TC bias | MI bias | DWKL bias |",
      "|---|---|---|---|---|---|---|",
    ]
    for m in groups:
      for pool in pools:
        for j, (dkind, drift) in enumerate([("noise", 0.0)] + (drifts if pool else [])):
          r = measure(mu_all, sigma, s2, m, pool, drift, args.draws, seed=args.seed + 1000 * m + pool + j, kind=dkind)
          entry["rows"].append(dict(m=m, pool=pool, drift_kind=dkind, drift=drift, **r))
          b = {t: r[t]["mean"] - exact[t] for t in eb.TERMS}
          label = f"{dkind}: {drift}" if drift else "0"
          lines.append(
            f"| {m} | {pool} | {label} | {r['tc']['mean']:.2f} ± {r['tc']['std']:.2f} | {b['tc']:+.2f} | "
            f"{b['mi']:+.2f} | {b['dwkl']:+.2f} |"
          )
      print(f"{name} M={m} ({time.time() - t0:.0f} s)", flush=True)
    res["codes"][name] = entry
  res["seconds"] = time.time() - t0
  text = "\n".join(lines) + "\n"
  if os.path.exists(args.out + ".md"):
    with open(args.out + ".md") as f:
      old = f.read()
    if eb.FINDINGS in old:
      text += "\n" + old[old.index(eb.FINDINGS) :]
  with open(args.out + ".json", "w") as f:
    json.dump(res, f, indent=1)
  with open(args.out + ".md", "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
