"""The speed-up of fusing many train steps into one compiled call (lax.scan, train.steps_per_call).

  python benchmarks/scan.py --json=benchmarks/results/scan.json

dcvae, MLP 512-256, one model, batch 64 (and 256): the pipeline's call (CompiledTrainer) with steps_per_call =
1, 10, 50, 200, interleaved over several repetitions; images/s includes the host's per-call work (drawing the batch
indices, dispatch, reading the terms back is not included: CompiledTrainer keeps them on the device). The speed-up
is the median of the per-repetition ratios against steps_per_call = 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import benchutil  # noqa: E402
from common import CompiledTrainer, bench_config, call_rate, machine, write_json  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="dcvae")
  p.add_argument("--batch_sizes", default="64,256")
  p.add_argument("--steps", default="1,10,50,200")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--seconds", type=float, default=2.0)
  p.add_argument("--no_wait", action="store_true")
  p.add_argument("--json", default=None)
  a = p.parse_args()
  steps = [int(s) for s in a.steps.split(",")]
  quiet = None if a.no_wait else benchutil.wait_for_quiet()
  results = {}
  for b in [int(x) for x in a.batch_sizes.split(",")]:
    trainers = {s: CompiledTrainer(bench_config(a.model, b, steps_per_call=s)) for s in steps}
    compile_s = {}
    for s, t in trainers.items():
      t0 = time.perf_counter()
      jax.block_until_ready(t.call(s))
      jax.block_until_ready(t.call(s))  # CompiledTrainer's second call compiles again (state now on the mesh)
      compile_s[s] = time.perf_counter() - t0
    rates = benchutil.interleave({f"spc{s}": (lambda s=s, t=t: call_rate(t, s, t.config.train.batch_size, a.seconds)) for s, t in trainers.items()},
                                 a.reps, log=lambda x, b=b: print(f"b={b} {x}", flush=True))
    results[str(b)] = {
        "images_per_second": benchutil.summary(rates),
        "speedup_over_spc1": {f"spc{s}": benchutil.median_ratio(rates[f"spc{s}"], rates[f"spc{steps[0]}"])
                              for s in steps},
        "first_two_calls_seconds": {f"spc{s}": v for s, v in compile_s.items()},
        "load": benchutil.load_info(rates)}
  write_json(a.json, {"benchmark": "scan", "model": a.model, "hidden": "512,256", "steps_per_call": steps,
                      "reps": a.reps, "results": results, "wait_for_quiet": quiet,
                      "xla_flags": os.environ.get("XLA_FLAGS", ""), "machine": machine()})


if __name__ == "__main__":
  main()
