"""What an architecture costs to train here: images/s of the pipeline's compiled train step (VAE, batch 64, one run)
for the MLP of every study row and for conv encoders/decoders, timed interleaved in one process (medians of
per-repetition ratios to the MLP), and what that makes of the study's rows' training time.

Why: the conv architecture is the validation study's next candidate (docs/results/validation.md), and the issue's
budgets are 15 minutes for a one-vs-rest `:best` job and 40 for leave-one-out on 2 cores. The row estimates scale
the MLP rows' measured training seconds (MLP_ROWS below, copied from the study's results.json) by the ratio.

  python benchmarks/arch_cost.py                                   # -> benchmarks/results/arch_cost.json
  python benchmarks/arch_cost.py --variants=mlp:512,256 conv:16,32,256 --reps=3 --out=/tmp/arch_cost.json
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

# Training seconds of the MLP rows these estimates scale (the study's results.json train_seconds, alone on 2 cores):
# Fashion-MNIST one-vs-rest gpp+l16, 50 epochs (10 runs); MNIST leave-one-out paper+s2, 50 epochs (10 runs).
MLP_ROWS = {"one_vs_rest_50ep_s": 162.3, "leave_one_out_50ep_s": 1350.0}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--variants", nargs="+", default=["mlp:512,256", "conv:16,32,256", "conv:32,64,256"])
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--steps_per_call", type=int, default=10)
  p.add_argument("--seconds", type=float, default=3.0)
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--out", default=os.path.join(HERE, "results", "arch_cost.json"))
  a = p.parse_args()
  quiet = common.wait_for_quiet()
  trainers = {}
  for v in a.variants:
    arch, hidden = v.split(":")
    config = common.bench_config(
      "vae", a.batch_size, hidden=tuple(int(h) for h in hidden.split(",")), arch=arch, steps_per_call=a.steps_per_call
    )
    trainers[v] = common.CompiledTrainer(config, num_models=1)
    trainers[v].time_calls(a.steps_per_call, min_seconds=0.5, min_calls=1)  # compile and warm up
  rates = common.interleave(
    {v: (lambda t=t: common.call_rate(t, a.steps_per_call, a.batch_size, a.seconds)) for v, t in trainers.items()},
    a.reps,
  )
  base = a.variants[0]
  results = {}
  for v in a.variants:
    slowdown = common.median_ratio(rates[base], rates[v])  # median over repetitions of mlp rate / this rate
    results[v] = {
      "images_per_second": float(np.median(rates[v])),
      f"step_time_vs_{base}": slowdown,
      "estimated_train_seconds": {k: s * slowdown for k, s in MLP_ROWS.items()},
    }
    print(f"{v}: {np.median(rates[v]):.0f} images/s, {slowdown:.1f}x the step time of {base}", flush=True)
  common.write_json(
    a.out,
    {
      "benchmark": "arch_cost",
      "model": "vae",
      "batch_size": a.batch_size,
      "variants": results,
      "mlp_rows_scaled": MLP_ROWS,
      "budgets_s": {"one_vs_rest": 15 * 60, "leave_one_out": 40 * 60},
      "rates": common.summary(rates),
      "load_in_process": common.load_info(rates, quiet),
      "machine": common.machine(),
    },
  )


if __name__ == "__main__":
  main()
