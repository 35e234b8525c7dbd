"""Images per second of the pipeline's compiled train step for every model, XLA's FLOPs per image and the
fraction of the machine's measured matmul peak; one JSON per model and batch size.

The peak is the step-shapes probe (common.StepMatmuls): one jitted function running exactly the matrix products of
one step (each Dense layer's forward, dX and dW at the step's shapes; FLOPs counted by hand, equal to XLA's cost
analysis of the probe and to the matrix products in the step's own optimised HLO). A square 1024 matmul is
reported beside it. Step and both probes are timed interleaved in one process (``--reps`` repetitions; medians
of per-repetition ratios), so load on this shared machine falls on them alike.

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
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

MODELS = ("vae", "cvae", "beta_vae", "factor_vae", "rf_vae", "beta_tcvae", "dcvae")
STEP_OPTIONS = ("steps_per_call", "num_models", "arch", "hidden", "latent_dim", "estimator", "seconds", "reps")


def measure(a, model: str, batch_size: int) -> dict:
  """One configuration, timed in this process, interleaved with the two matmul probes.

  Each of ``a.reps`` repetitions times the step (``a.seconds``), the step-shapes probe and the square probe
  (``a.seconds / 2`` each) in rotating order, so that other processes' load falls on all three alike; the
  fractions are medians of per-repetition ratios. fraction_of_peak = (XLA's FLOPs of one step x images/s) /
  the step-shapes probe's GFLOP/s; matmul_time_share = the probe's time for one step's products / the step's
  time (the share of the step that its matrix products would take at the probe's rate)."""
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
  per_call, compile_s = trainer.time_calls(a.steps_per_call, min_seconds=1.0, min_calls=1)
  images = a.num_models * a.steps_per_call * batch_size
  products = common.step_products(trainer.setup, batch_size)
  probe = common.StepMatmuls(products)
  square = common.StepMatmuls(common.square_product(1024))
  matmul_flops_per_image = probe.flops / batch_size
  rates = common.interleave(
    {
      "step_images_per_second": lambda: common.call_rate(
        trainer, a.steps_per_call, a.num_models * batch_size, a.seconds
      ),
      "step_shapes_probe_gflops": lambda: probe.gflops(a.seconds / 2),
      "square_probe_gflops": lambda: square.gflops(a.seconds / 2),
    },
    a.reps,
    max_discards=0,
  )
  ips = np.asarray(rates["step_images_per_second"])
  achieved = flops_per_image * ips / 1e9
  step_peak = np.asarray(rates["step_shapes_probe_gflops"])
  square_peak = np.asarray(rates["square_probe_gflops"])
  by_kind = probe.seconds_by_kind(a.seconds / 4)
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
    "reps": a.reps,
    "images_per_second": float(np.median(ips)),
    "seconds_per_step": float(np.median(images / a.steps_per_call / ips)),
    "compile_seconds": compile_s,
    "flops_per_image": flops_per_image,
    "achieved_gflops": float(np.median(achieved)),
    "peak_probe": (
      "step_shapes: one jitted function running every matrix product of one training step (each Dense layer's "
      "forward, dX and dW with the step's shapes and dimension numbers, in sequence; common.step_products), "
      "timed interleaved with the step in this process"
    ),
    "matmul_peak_gflops": float(np.median(step_peak)),
    "fraction_of_peak": common.median_ratio(achieved, step_peak),
    "matmul_flops_per_image": matmul_flops_per_image,
    "matmul_flops_per_image_xla_probe": probe.xla_flops() / batch_size,
    "matmul_time_share": common.median_ratio(matmul_flops_per_image * ips / 1e9, step_peak),
    "matmul_peak_gflops_square": float(np.median(square_peak)),
    "fraction_of_peak_square": common.median_ratio(achieved, square_peak),
    "step_shapes_probe_seconds_by_kind": by_kind,
    "step_shapes_probe_products": [dataclasses.asdict(p) for p in products],
    "rates": common.summary(rates),
    "load_in_process": common.load_info(rates),
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
  p.add_argument("--seconds", type=float, default=4.0, help="timed calls of the step per repetition, at least")
  p.add_argument("--reps", type=int, default=5, help="interleaved repetitions of step and probes per process")
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
        f"{res['fraction_of_peak']:.1%} of the step-shapes matmul peak ({res['achieved_gflops']:.1f} / "
        f"{res['matmul_peak_gflops']:.1f} GFLOP/s), {res['fraction_of_peak_square']:.1%} of the square one "
        f"({res['matmul_peak_gflops_square']:.1f}), other processes "
        f"{res['load']['foreign_cpu_fraction_during']:.0%}",
        flush=True,
      )
  for (model, batch), runs in results.items():
    ips = [r["images_per_second"] for r in runs]
    med = runs[int(np.argsort(ips)[len(ips) // 2])]
    med["images_per_second_runs"] = ips
    med["fraction_of_peak_runs"] = [r["fraction_of_peak"] for r in runs]
    med["fraction_of_peak_square_runs"] = [r["fraction_of_peak_square"] for r in runs]
    med["kept"] = "the median run (by images/s) of images_per_second_runs"
    common.write_json(os.path.join(a.out, f"throughput_{model}_b{batch}.json"), med, echo=False)
    print(
      f"{model} b{batch}: median {med['images_per_second']:.0f} images/s "
      f"({med['fraction_of_peak']:.1%} of peak), runs {[round(x) for x in ips]}",
      flush=True,
    )


if __name__ == "__main__":
  main()
