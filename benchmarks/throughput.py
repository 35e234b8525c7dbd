"""Images per second of the compiled train step, FLOPs per image, and the fraction of matmul peak.

  python benchmarks/throughput.py --model=dcvae --batch_size=64 --json=benchmarks/results/throughput_dcvae_b64.json

The step timed is exactly the pipeline's (train.compile_train_fn): MLP 512-256, latent 10, 10 conditions,
MSS, ``steps_per_call`` steps fused per call, one device.
"""

import argparse
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import CompiledTrainer, bench_config, machine, matmul_peak_gflops, write_json  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="dcvae")
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--steps_per_call", type=int, default=50)
  p.add_argument("--num_models", type=int, default=1)
  p.add_argument("--arch", default="mlp")
  p.add_argument("--hidden", default="512,256")
  p.add_argument("--latent_dim", type=int, default=10)
  p.add_argument("--estimator", default="mss")
  p.add_argument("--seconds", type=float, default=5.0)
  p.add_argument("--json", default=None)
  a = p.parse_args()
  config = bench_config(a.model, a.batch_size, hidden=[int(h) for h in a.hidden.split(",")],
                        latent_dim=a.latent_dim, estimator=a.estimator, arch=a.arch, steps_per_call=a.steps_per_call)
  trainer = CompiledTrainer(config, num_models=a.num_models)
  flops_per_image = trainer.flops_per_image()
  per_call, compile_s = trainer.time_calls(a.steps_per_call, min_seconds=a.seconds)
  images = a.num_models * a.steps_per_call * a.batch_size
  peak = matmul_peak_gflops()
  achieved = flops_per_image * images / per_call / 1e9
  write_json(a.json, {
      "benchmark": "throughput", "model": a.model, "batch_size": a.batch_size, "arch": a.arch,
      "hidden": a.hidden, "latent_dim": a.latent_dim, "estimator": a.estimator, "num_models": a.num_models,
      "steps_per_call": a.steps_per_call, "images_per_second": images / per_call,
      "seconds_per_step": per_call / a.steps_per_call, "compile_seconds": compile_s,
      "flops_per_image": flops_per_image, "achieved_gflops": achieved, "matmul_peak_gflops": peak,
      "fraction_of_peak": achieved / peak, "machine": machine()})


if __name__ == "__main__":
  main()
