"""Runs benchmarks/throughput.py for the models and batch sizes below, ``--repeats`` times each, round-robin over the
configurations, each run after waiting for a quiet machine (a run during which other processes used more than 15%
of the CPUs is repeated, at most twice). Keeps for each configuration the JSON of its median run (by images/s) and
adds to it every run's images/s, the CPU share other processes used meanwhile, and the load average.

  python benchmarks/throughput_all.py            # -> benchmarks/results/throughput_<model>_b<batch>.json

(throughput.py times a single process's calls; on this shared 2-core machine one run now and then comes out at
half speed with no other process visible, hence the repeats.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchutil  # noqa: E402

MODELS = ("vae", "cvae", "beta_vae", "factor_vae", "rf_vae", "beta_tcvae", "dcvae")


def run_once(model, batch, path, no_wait):
  for attempt in range(3):
    quiet = None if no_wait else benchutil.wait_for_quiet()
    with benchutil.ForeignLoad() as load:
      subprocess.run([sys.executable, os.path.join(HERE, "throughput.py"), f"--model={model}",
                      f"--batch_size={batch}", f"--json={path}"], check=True, stdout=subprocess.DEVNULL)
    if load.fraction <= 0.15 or no_wait:
      break
    print(f"{model} b{batch}: other processes used {load.fraction:.0%} of the CPUs; measuring again", flush=True)
  with open(path) as f:
    res = json.load(f)
  res["load"] = {"foreign_cpu_fraction_during": load.fraction, "load_average_after": os.getloadavg(),
                 "wait_for_quiet": quiet, "attempts": attempt + 1}
  return res


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--runs", default=",".join(f"{m}:64" for m in MODELS) + ",dcvae:256",
                 help="model:batch_size, comma separated")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default=os.path.join(HERE, "results"))
  p.add_argument("--no_wait", action="store_true")
  a = p.parse_args()
  configs = [tuple(item.split(":")) for item in a.runs.split(",")]
  results = {c: [] for c in configs}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(a.repeats):
      for model, batch in configs:
        res = run_once(model, batch, os.path.join(tmp, f"{model}_{batch}_{r}.json"), a.no_wait)
        results[(model, batch)].append(res)
        print(f"[run {r}] {model} b{batch}: {res['images_per_second']:.0f} images/s, "
              f"{res['fraction_of_peak']:.1%} of matmul peak ({res['achieved_gflops']:.1f} / "
              f"{res['matmul_peak_gflops']:.1f} GFLOP/s), other processes "
              f"{res['load']['foreign_cpu_fraction_during']:.0%}", flush=True)
  os.makedirs(a.out, exist_ok=True)
  for (model, batch), runs in results.items():
    ips = [r["images_per_second"] for r in runs]
    med = runs[int(np.argsort(ips)[len(ips) // 2])]
    med["images_per_second_runs"] = ips
    med["fraction_of_peak_runs"] = [r["fraction_of_peak"] for r in runs]
    med["kept"] = "the median run (by images/s) of images_per_second_runs"
    with open(os.path.join(a.out, f"throughput_{model}_b{batch}.json"), "w") as f:
      f.write(json.dumps(med, indent=1, sort_keys=True) + "\n")
    print(f"{model} b{batch}: median {med['images_per_second']:.0f} images/s "
          f"({med['fraction_of_peak']:.1%} of peak), runs {[round(x) for x in ips]}", flush=True)


if __name__ == "__main__":
  main()
