"""Wall time of a full training run: dcvae, 50 epochs over all 60,000 MNIST training images (every class a
condition), batch 64, MLP 512-256, the pipeline's own train_runs (data on device, lax.scan, checkpoints).

  python benchmarks/full_run.py --data_dir=../shared/data --json=benchmarks/results/full_run.json

Reports the wall time of train_runs (compilation, checkpoint saves and all) and the images per second over the
whole run. The paper reports 95-102 minutes per model on a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (first: puts the repository root on sys.path)

from dcvae_jax.config import dataset_config  # noqa: E402
from dcvae_jax.data import datasets as data  # noqa: E402
from dcvae_jax.data import protocols
from dcvae_jax.train import trainer


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir", default="../shared/data")
  p.add_argument("--dataset", default="mnist")
  p.add_argument("--model", default="dcvae")
  p.add_argument("--num_epochs", type=int, default=50)
  p.add_argument("--no_wait", action="store_true", help="do not wait for a quiet machine first")
  p.add_argument("--json", default=None)
  a = p.parse_args()
  ds = data.load_dataset(a.dataset, a.data_dir)
  config = dataset_config("", dataset=a.dataset, model=a.model, num_epochs=a.num_epochs)
  config.train.progress = False
  classes = tuple(range(ds.num_classes))
  run = protocols.Run(name="all_classes", label="all", seed=config.seed, normal=classes, anomalous=(), uid=0)
  quiet = None if a.no_wait else common.wait_for_quiet()
  with tempfile.TemporaryDirectory() as ckpt, common.ForeignLoad() as load:
    t0 = time.perf_counter()
    state, train_seconds, steps = trainer.train_runs(
      config,
      ds.x_train,
      ds.y_train,
      [run],
      ckpt,
      image_shape=(*ds.x_train.shape[1:], 1),
      num_conditions=len(classes),
      log=lambda *_: None,
    )
    wall = time.perf_counter() - t0
  images = steps * config.train.batch_size
  out = {
    "benchmark": "full_run",
    "dataset": ds.name,
    "source": ds.source,
    "model": a.model,
    "train_images": int(ds.x_train.shape[0]),
    "num_epochs": a.num_epochs,
    "steps": int(steps),
    "batch_size": int(config.train.batch_size),
    "hidden": list(config.model.hidden),
    "wall_seconds": wall,
    "train_seconds": train_seconds,
    "images_per_second": images / wall,
    "target_seconds": 600.0,
    "meets_target": wall < 600.0,
    "foreign_cpu_fraction": load.fraction,
    "wait_for_quiet": quiet,
    "machine": common.machine(),
  }
  print(
    f"{a.model} on {ds.x_train.shape[0]} {ds.name} images, {a.num_epochs} epochs ({steps} steps): "
    f"{wall:.1f} s wall ({images / wall:.0f} images/s), other processes {load.fraction:.0%}",
    flush=True,
  )
  del state
  common.write_json(a.json, out)


if __name__ == "__main__":
  main()
