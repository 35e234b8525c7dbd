"""K runs trained in ONE program (vmapped, or mapped with lax.map) against K single-run programs in sequence.

  python benchmarks/ensemble.py --json=benchmarks/results/ensemble.json

For each model (dcvae, vae) and network (MLP 512-256 ... 64-32), batch 64, steps_per_call 50, K = 10 runs of
leave_one_out (10 conditions each):
  vmapped     CompiledTrainer(num_models=K, ensemble="vmap"): one call trains the K runs, batched, for
              steps_per_call steps
  mapped      CompiledTrainer(num_models=K, ensemble="map"): one call trains the K runs one after another
              inside the program (lax.map)
  sequential  CompiledTrainer(num_models=1) called K times (the same compiled single-run program each time;
              the work per call does not depend on which run's state it is given)
All do K * steps_per_call steps per round; rounds interleaved over several repetitions; a speed-up is the median
of the per-repetition ratios against sequential (images/s, images counted over all runs). ``auto`` says which of
vmap and map train.ensemble="auto" picks on this backend.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: puts the repository root on sys.path)
import jax  # noqa: E402

from dcvae_jax.train import train_step  # noqa: E402


def round_rate(trainer, calls, spc, seconds):
  """images/s over rounds of ``calls`` calls (>= ``seconds``)."""
  b, m = trainer.config.train.batch_size, len(trainer.runs)
  rounds = 0
  t0 = time.perf_counter()
  while rounds < 1 or time.perf_counter() - t0 < seconds:
    for _ in range(calls):
      jax.block_until_ready(trainer.call(spc))
    rounds += 1
  return rounds * calls * m * spc * b / (time.perf_counter() - t0)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="dcvae,vae")
  p.add_argument("--hiddens", default="512,256;256,128;128,64;64,32")
  p.add_argument("--num_models", type=int, default=10)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--steps_per_call", type=int, default=50)
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--seconds", type=float, default=2.0)
  p.add_argument(
    "--no_wait", action="store_true", help="measure at once: no waiting for a quiet machine, busy repetitions kept"
  )
  p.add_argument("--json", default=None)
  a = p.parse_args()
  k, spc = a.num_models, a.steps_per_call
  quiet = None if a.no_wait else common.wait_for_quiet()
  results = []
  for model in a.models.split(","):
    for hidden in a.hiddens.split(";"):
      h = [int(x) for x in hidden.split(",")]
      cfg = functools.partial(common.bench_config, model, a.batch_size, hidden=h, steps_per_call=spc)
      vm = common.CompiledTrainer(cfg(), num_models=k, ensemble="vmap")
      mp = common.CompiledTrainer(cfg(), num_models=k, ensemble="map")
      seq = common.CompiledTrainer(cfg(), num_models=1)
      for t in (vm, mp, seq):  # compile
        jax.block_until_ready(t.call(spc))
      params = sum(int(x.size) for x in jax.tree.leaves(seq.state.params))
      rates = common.interleave(
        {
          "vmapped": functools.partial(round_rate, vm, 1, spc, a.seconds),
          "mapped": functools.partial(round_rate, mp, 1, spc, a.seconds),
          "sequential": functools.partial(round_rate, seq, k, spc, a.seconds),
        },
        a.reps,
        log=lambda s, m=model, h=hidden: print(f"{m} {h} {s}", flush=True),
        max_discards=0 if a.no_wait else None,
      )
      results.append(
        {
          "model": model,
          "hidden": hidden,
          "params_per_model": params,
          "auto": train_step.resolve_ensemble("auto"),
          "images_per_second": common.summary(rates),
          "speedup_vmapped_over_sequential": common.median_ratio(rates["vmapped"], rates["sequential"]),
          "speedup_mapped_over_sequential": common.median_ratio(rates["mapped"], rates["sequential"]),
          "load": common.load_info(rates),
        }
      )
  common.write_json(
    a.json,
    {
      "benchmark": "ensemble",
      "num_models": k,
      "batch_size": a.batch_size,
      "steps_per_call": spc,
      "protocol": "leave_one_out",
      "reps": a.reps,
      "results": results,
      "wait_for_quiet": quiet,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "machine": common.machine(),
    },
  )


if __name__ == "__main__":
  main()
