"""Our compiled dcvae train step against the straightforward PyTorch eager step (torch_reference.py).

  pip install torch==2.13.0    # torch is not a dcvae_jax dependency
  python benchmarks/vs_torch.py --json=benchmarks/results/vs_torch.json

1. Check: the PyTorch step computes the same thing. Our Flax params (after a few training steps, prior params
   perturbed so the learned prior is exercised) are copied into the torch model; on the same batch and the same
   reparameterisation noise every loss term and every gradient must agree to ~1e-4 relative. Two batches: a
   pipeline batch, and one with a condition seen once (MSS group of one) and one seen twice (M = 2).
2. Timing, per batch size (64, 256), interleaved, several repetitions, medians: torch (default threads), torch
   (1 thread), ours with steps_per_call = 50 and = 1. torch and ours each run in their own warm worker process,
   driven alternately from this one (in a single process torch's OpenMP threads slow XLA's down by ~30% on this
   2-core machine). Ratios are the medians of the per-repetition ratios.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: puts the repository root on sys.path)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch_reference as tr  # noqa: E402
from common import CompiledTrainer, bench_config  # noqa: E402

from dcvae_jax.data import input_pipeline  # noqa: E402
from dcvae_jax.models import objectives
from dcvae_jax.train import train_step

TERMS = ("loss", "recon", "kl", "elbo", "mi", "tc", "dwkl")


def check_same_loss(batch_size=64, rtol=1e-4) -> dict:
  """Flax params -> torch; same batch, same eps; compare loss terms and gradients."""
  trainer = CompiledTrainer(bench_config("dcvae", batch_size, steps_per_call=1))
  for _ in range(5):
    trainer.call(1)
  setup = trainer.setup
  params = train_step.unstack(trainer.state.params, 0)
  rng = np.random.default_rng(1)
  p = params["params"]
  p = {
    **p,
    "prior_mu": p["prior_mu"] + jnp.asarray(rng.normal(0, 0.5, p["prior_mu"].shape), jnp.float32),
    "prior_logvar": p["prior_logvar"] + jnp.asarray(rng.normal(0, 0.3, p["prior_logvar"].shape), jnp.float32),
  }
  params = {"params": p}
  data = trainer.datas[0]
  counts = np.asarray(data.condition_counts)
  idx = data.batch_indices(123, batch_size)
  cond_natural = data.cond_all[idx]
  cond_edge = cond_natural.copy()
  cond_edge[cond_edge == 9] = 0
  cond_edge[cond_edge == 8] = 1
  cond_edge[5], cond_edge[17], cond_edge[40] = 9, 8, 8  # a group of one, a group of two

  model = tr.DCVAE(hidden=tuple(setup.model_cfg.hidden), num_conditions=setup.num_conditions)
  tr.copy_flax_params(model, params)
  out = {"batch_size": batch_size, "rtol": rtol, "cases": {}}
  ok = True
  for name, cond in (("pipeline_batch", cond_natural), ("group_of_one_and_two", cond_edge)):
    x = input_pipeline.preprocess(trainer.x[idx], True)
    key = jax.random.PRNGKey(7)
    eps = jax.random.normal(key, (batch_size, setup.model_cfg.latent_dim), jnp.float32)

    def loss_fn(prm, cond=cond, x=x, key=key):
      return objectives.model_loss(
        setup,
        prm,
        objectives.Batch(x, jnp.asarray(cond)),
        objectives.DataStats(float(data.indices.size), jnp.asarray(counts)),
        rng=key,
      )

    (_, (terms, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    model.zero_grad(set_to_none=True)
    xt = torch.from_numpy(np.asarray(x).reshape(batch_size, -1).copy())
    loss_t, terms_t = model.loss(
      xt,
      torch.from_numpy(cond.astype(np.int64)),
      torch.from_numpy(counts),
      eps=torch.from_numpy(np.asarray(eps).copy()),
    )
    loss_t.backward()
    term_rel = {}
    for k in TERMS:
      a, b = float(terms[k]), float(terms_t[k].detach())
      # relative to the term, or to the loss for terms near zero (TC, MI can be small differences)
      term_rel[k] = {"jax": a, "torch": b, "rel_err": abs(a - b) / max(abs(a), 1e-3 * abs(float(terms["loss"])))}
    g_t = tr.torch_grads_as_flax(model)
    grad_rel = {}
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
      gt = g_t
      for k in path:
        gt = gt[k.key]
      g = np.asarray(g)
      grad_rel[jax.tree_util.keystr(path)] = float(np.linalg.norm(gt - g) / max(np.linalg.norm(g), 1e-12))
    max_term = max(v["rel_err"] for v in term_rel.values())
    max_grad = max(grad_rel.values())
    case_ok = max_term < rtol and max_grad < 10 * rtol
    ok &= case_ok
    out["cases"][name] = {
      "terms": term_rel,
      "grad_rel_err": grad_rel,
      "max_term_rel_err": max_term,
      "max_grad_rel_err": max_grad,
      "ok": bool(case_ok),
    }
  out["ok"] = bool(ok)
  return out


def jax_rate(trainer: CompiledTrainer, spc: int, seconds: float) -> float:
  return common.call_rate(trainer, spc, trainer.config.train.batch_size, seconds)


def torch_rate(trainer: tr.TorchTrainer, threads: int, seconds: float) -> float:
  torch.set_num_threads(threads)
  return tr.time_torch(trainer, seconds)


def _worker(kind, batch_size, seconds, conn):
  """A warm measuring process: builds its trainers, then answers each variant name with an images/s figure."""
  if kind == "torch":
    threads = torch.get_num_threads()
    t = tr.TorchTrainer(batch_size)
    t.run(30)
    fns = {
      "torch_default_threads": lambda: torch_rate(t, threads, seconds),
      "torch_1_thread": lambda: torch_rate(t, 1, seconds),
    }
    for f in fns.values():
      f()
    info = {"torch_default_threads": threads}
  else:
    jt = {spc: CompiledTrainer(bench_config("dcvae", batch_size, steps_per_call=spc)) for spc in (50, 1)}
    for spc, t in jt.items():  # compile, warm up
      jax.block_until_ready(t.call(spc))
      jax_rate(t, spc, 0.5)
    fns = {f"jax_spc{spc}": (lambda t=t, spc=spc: jax_rate(t, spc, seconds)) for spc, t in jt.items()}
    info = {}
  conn.send(("ready", info))
  while True:
    name = conn.recv()
    if name is None:
      return
    conn.send(fns[name]())


class Worker:
  def __init__(self, kind, batch_size, seconds):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_worker, args=(kind, batch_size, seconds, child), daemon=True)
    self.proc.start()
    msg, self.info = self.conn.recv()
    assert msg == "ready"

  def rate(self, name):
    self.conn.send(name)
    return self.conn.recv()

  def close(self):
    self.conn.send(None)
    self.proc.join(timeout=30)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_sizes", default="64,256")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--seconds", type=float, default=2.0, help="per variant and repetition")
  p.add_argument(
    "--no_wait", action="store_true", help="measure at once: no waiting for a quiet machine, busy repetitions kept"
  )
  p.add_argument("--json", default=None)
  a = p.parse_args()
  default_threads = torch.get_num_threads()
  check = check_same_loss()
  print(
    f"torch/jax agreement: ok={check['ok']}",
    {k: v["max_term_rel_err"] for k, v in check["cases"].items()},
    {k: v["max_grad_rel_err"] for k, v in check["cases"].items()},
    flush=True,
  )
  results = {}
  quiet = None if a.no_wait else common.wait_for_quiet()
  for b in [int(s) for s in a.batch_sizes.split(",")]:
    # torch and JAX each in their own warm process, driven alternately: in one process torch's OpenMP threads
    # and XLA's thread pool slow each other down (see README)
    wt, wj = Worker("torch", b, a.seconds), Worker("jax", b, a.seconds)
    default_threads = wt.info["torch_default_threads"]
    fns = {
      n: (lambda n=n, w=w: w.rate(n))
      for w, names in ((wt, ("torch_default_threads", "torch_1_thread")), (wj, ("jax_spc50", "jax_spc1")))
      for n in names
    }
    rates = common.interleave(
      fns,
      a.reps,
      log=lambda s, b=b: print(f"b={b} {s}", flush=True),
      pids=(wt.proc.pid, wj.proc.pid),
      max_discards=0 if a.no_wait else None,
    )
    wt.close()
    wj.close()
    best_torch = np.maximum(rates["torch_default_threads"], rates["torch_1_thread"])
    results[str(b)] = {
      "images_per_second": common.summary(rates),
      "ratio_jax_spc50_over_torch_default": common.median_ratio(rates["jax_spc50"], rates["torch_default_threads"]),
      "ratio_jax_spc1_over_torch_default": common.median_ratio(rates["jax_spc1"], rates["torch_default_threads"]),
      "ratio_jax_spc50_over_best_torch": common.median_ratio(rates["jax_spc50"], best_torch),
      "ratio_jax_spc1_over_best_torch": common.median_ratio(rates["jax_spc1"], best_torch),
      "load": common.load_info(rates),
    }
  common.write_json(
    a.json,
    {
      "benchmark": "vs_torch",
      "model": "dcvae",
      "hidden": "512,256",
      "latent_dim": 10,
      "estimator": "mss",
      "torch": torch.__version__,
      "torch_default_threads": default_threads,
      "reps": a.reps,
      "seconds_per_measurement": a.seconds,
      "same_loss_check": check,
      "results": results,
      "wait_for_quiet": quiet,
      "machine": common.machine(),
    },
  )


if __name__ == "__main__":
  main()
