"""Runs benchmarks/throughput.py for the models and batch sizes below, each after waiting for a quiet machine,
and adds to each JSON the CPU share other processes used meanwhile and the load average.

  python benchmarks/throughput_all.py            # -> benchmarks/results/throughput_<model>_b<batch>.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchutil  # noqa: E402

MODELS = ("vae", "cvae", "beta_vae", "factor_vae", "rf_vae", "beta_tcvae", "dcvae")


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--runs", default=",".join(f"{m}:64" for m in MODELS) + ",dcvae:256",
                 help="model:batch_size, comma separated")
  p.add_argument("--out", default=os.path.join(HERE, "results"))
  p.add_argument("--no_wait", action="store_true")
  a = p.parse_args()
  for item in a.runs.split(","):
    model, batch = item.split(":")
    path = os.path.join(a.out, f"throughput_{model}_b{batch}.json")
    for attempt in range(3):  # measured again (after a wait) when other processes used the CPUs meanwhile
      quiet = None if a.no_wait else benchutil.wait_for_quiet()
      with benchutil.ForeignLoad() as load:
        subprocess.run([sys.executable, os.path.join(HERE, "throughput.py"), f"--model={model}",
                        f"--batch_size={batch}", f"--json={path}"], check=True, stdout=subprocess.DEVNULL)
      if load.fraction <= 0.15 or a.no_wait:
        break
      print(f"{model} b{batch}: other processes used {load.fraction:.0%} of the CPUs; measuring again", flush=True)
    with open(path) as f:
      res = json.load(f)
    res["load"] = {"foreign_cpu_fraction_during": load.fraction, "load_average_after": os.getloadavg(),
                   "wait_for_quiet": quiet, "attempts": attempt + 1}
    with open(path, "w") as f:
      f.write(json.dumps(res, indent=1, sort_keys=True) + "\n")
    print(f"{model} b{batch}: {res['images_per_second']:.0f} images/s, {res['fraction_of_peak']:.1%} of matmul peak "
          f"({res['achieved_gflops']:.1f} / {res['matmul_peak_gflops']:.1f} GFLOP/s), other processes "
          f"{load.fraction:.0%}", flush=True)


if __name__ == "__main__":
  main()
