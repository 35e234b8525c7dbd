"""Images per second of the pipeline's compiled train step for every model, XLA's FLOPs per image and the
fraction of the machine's measured matmul peak; one JSON per model and batch size.

  python benchmarks/throughput.py       # every model at batch 64, dcvae at 256 -> benchmarks/results/
  python benchmarks/throughput.py --runs=dcvae:64 --repeats=1 --out=/tmp/bench      # one figure

The step timed is exactly the pipeline's (train_step.compile_train_fn): MLP 512-256, latent 10, 10 conditions, MSS,
``steps_per_call`` steps fused per call, one device. Every measurement is a fresh process (this script with
--one=MODEL:BATCH), started after waiting for a quiet machine and repeated (at most twice) when other processes
used more than 15% of the CPUs meanwhile. The configurations are measured round-robin, ``--repeats`` times
each; throughput_<model>_b<batch>.json is the median run (by images/s) with every run's images/s added: on
this shared 2-core machine a process now and then runs at half speed with no other process visible.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

MODELS = ("vae", "cvae", "beta_vae", "factor_vae", "rf_vae", "beta_tcvae", "dcvae")
STEP_OPTIONS = ("steps_per_call", "num_models", "arch", "hidden", "latent_dim", "estimator", "seconds")


def measure(a, model: str, batch_size: int) -> dict:
  """One configuration, timed in this process."""
  config = common.bench_config(
    model,
    batch_size,
    hidden=[int(h) for h in a.hidden.split(",")],
    latent_dim=a.latent_dim,
    estimator=a.estimator,
    arch=a.arch,
    steps_per_call=a.steps_per_call,
  )
  trainer = common.CompiledTrainer(config, num_models=a.num_models)
  flops_per_image = trainer.flops_per_image()
  per_call, compile_s = trainer.time_calls(a.steps_per_call, min_seconds=a.seconds)
  images = a.num_models * a.steps_per_call * batch_size
  peak = common.matmul_peak_gflops()
  achieved = flops_per_image * images / per_call / 1e9
  return {
    "benchmark": "throughput",
    "model": model,
    "batch_size": batch_size,
    "arch": a.arch,
    "hidden": a.hidden,
    "latent_dim": a.latent_dim,
    "estimator": a.estimator,
    "num_models": a.num_models,
    "steps_per_call": a.steps_per_call,
    "images_per_second": images / per_call,
    "seconds_per_step": per_call / a.steps_per_call,
    "compile_seconds": compile_s,
    "flops_per_image": flops_per_image,
    "achieved_gflops": achieved,
    "matmul_peak_gflops": peak,
    "fraction_of_peak": achieved / peak,
    "machine": common.machine(),
  }


def measure_in_subprocess(a, model: str, batch_size: int) -> dict:
  """measure() in a fresh process; measured again (at most twice) while other processes used > 15% of the CPUs."""
  cmd = [sys.executable, os.path.abspath(__file__), f"--one={model}:{batch_size}"]
  cmd += [f"--{k}={getattr(a, k)}" for k in STEP_OPTIONS]
  attempts = 0
  for _ in range(3):
    attempts += 1
    quiet = None if a.no_wait else common.wait_for_quiet()
    with common.ForeignLoad() as load:
      out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    if load.fraction <= 0.15 or a.no_wait:
      break
    print(f"{model} b{batch_size}: other processes used {load.fraction:.0%} of the CPUs; measuring again", flush=True)
  res = json.loads(out.strip().splitlines()[-1])
  res["load"] = {
    "foreign_cpu_fraction_during": load.fraction,
    "load_average_after": os.getloadavg(),
    "wait_for_quiet": quiet,
    "attempts": attempts,
  }
  return res


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument(
    "--runs", default=",".join(f"{m}:64" for m in MODELS) + ",dcvae:256", help="MODEL:BATCH_SIZE, comma separated"
  )
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default=os.path.join(HERE, "results"), help="folder of the JSON files")
  p.add_argument(
    "--no_wait", action="store_true", help="measure at once: no waiting for a quiet machine, busy repetitions kept"
  )
  p.add_argument("--steps_per_call", type=int, default=50)
  p.add_argument("--num_models", type=int, default=1)
  p.add_argument("--arch", default="mlp")
  p.add_argument("--hidden", default="512,256")
  p.add_argument("--latent_dim", type=int, default=10)
  p.add_argument("--estimator", default="mss")
  p.add_argument("--seconds", type=float, default=5.0, help="timed calls per measurement, at least")
  p.add_argument("--one", default=None, help="MODEL:BATCH_SIZE: time it here, print its JSON as the last line")
  a = p.parse_args()
  if a.one:
    model, batch = a.one.split(":")
    print(json.dumps(measure(a, model, int(batch))), flush=True)
    return
  configs = [(m, int(b)) for m, b in (item.split(":") for item in a.runs.split(","))]
  results = {c: [] for c in configs}
  for r in range(a.repeats):
    for model, batch in configs:
      res = measure_in_subprocess(a, model, batch)
      results[(model, batch)].append(res)
      print(
        f"[run {r}] {model} b{batch}: {res['images_per_second']:.0f} images/s, "
        f"{res['fraction_of_peak']:.1%} of matmul peak ({res['achieved_gflops']:.1f} / "
        f"{res['matmul_peak_gflops']:.1f} GFLOP/s), other processes "
        f"{res['load']['foreign_cpu_fraction_during']:.0%}",
        flush=True,
      )
  for (model, batch), runs in results.items():
    ips = [r["images_per_second"] for r in runs]
    med = runs[int(np.argsort(ips)[len(ips) // 2])]
    med["images_per_second_runs"] = ips
    med["fraction_of_peak_runs"] = [r["fraction_of_peak"] for r in runs]
    med["kept"] = "the median run (by images/s) of images_per_second_runs"
    common.write_json(os.path.join(a.out, f"throughput_{model}_b{batch}.json"), med, echo=False)
    print(
      f"{model} b{batch}: median {med['images_per_second']:.0f} images/s "
      f"({med['fraction_of_peak']:.1%} of peak), runs {[round(x) for x in ips]}",
      flush=True,
    )


if __name__ == "__main__":
  main()
