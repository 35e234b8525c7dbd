"""Use the detector on your own images, end to end, on generated ones: a folder of normal images, a folder of new
images (some anomalous), train, predict, and the detection rate and false-positive rate on the new images.

  python examples/own_images.py [--out DIR] [--epochs 10] [--normal square,ellipse,heart] [--anomalous outlines]

Normal images: dSprites-like shapes (dcvae_jax/data/shapes.py: filled squares, ellipses and hearts at any scale,
rotation and position; 28 x 28 grey PNGs) of the --normal kinds. New images: more of them, and as many anomalous
ones: outlines of other shapes (crosses, rings, triangles) drawn with Pillow, or dSprites shapes of the
--anomalous kinds (a far harder task: one filled blob against another). The detector is configs/folder.py's (a
VAE, MLP 512-256, with a per-pixel Gaussian likelihood on dequantised grey levels, scored by sap_complexity_knn),
trained for --epochs; its threshold flags at most 5% of held-out normal validation images (eval.threshold_fpr).
The same job on the command line:

  python -m dcvae_jax.main --config=configs/folder.py --config.data.data_dir=DIR --workdir=DIR/detector \\
      --config.train.num_epochs=10
  python -m dcvae_jax.main --mode=predict --workdir=DIR/detector --input=DIR/new

What it printed and how long it took: README.md, "Use it on your own images".
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's dcvae_jax

from dcvae_jax import Detector, predict  # noqa: E402
from dcvae_jax.data import shapes  # noqa: E402


def shapes_of(kinds: list, n: int, seed: int) -> np.ndarray:
  """n images (uint8 28 x 28) of the given shape kinds, every other factor uniform at random."""
  ids = [shapes.SHAPE_NAMES.index(k) for k in kinds]
  rng = np.random.default_rng(seed)
  factors = shapes.sample_factors(n, rng)
  factors[:, 0] = rng.choice(ids, n)
  return shapes.render_shapes(factors, image_size=28)


def drawn_shapes(n: int, seed: int) -> np.ndarray:
  """n images (uint8 28 x 28) of shapes the normal set never holds: crosses, rings and triangles (outlines)
  drawn with Pillow at a random place and size."""
  from PIL import ImageDraw

  rng = np.random.default_rng(seed)
  out = np.zeros((n, 28, 28), np.uint8)
  for i in range(n):
    img = Image.new("L", (28, 28))
    draw = ImageDraw.Draw(img)
    r = rng.uniform(4, 8)
    cx, cy = rng.uniform(r + 2, 26 - r, 2)
    kind = i % 3
    if kind == 0:
      draw.line([(cx - r, cy - r), (cx + r, cy + r)], fill=255, width=2)
      draw.line([(cx - r, cy + r), (cx + r, cy - r)], fill=255, width=2)
    elif kind == 1:
      draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=2)
    else:
      draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], outline=255, width=2)
    out[i] = np.asarray(img)
  return out


def write_pngs(folder: str, images, names) -> None:
  os.makedirs(folder, exist_ok=True)
  for a, name in zip(images, names, strict=True):
    Image.fromarray(a).save(os.path.join(folder, name))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="", help="folder for the images and the detector (default: a temporary one)")
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--normal", default="square,ellipse,heart", help="dSprites shape kinds that are normal")
  parser.add_argument(
    "--anomalous", default="outlines", help="'outlines' (crosses, rings, triangles) or dSprites shape kinds"
  )
  parser.add_argument("--train", type=int, default=1500, help="normal training images")
  parser.add_argument("--new", type=int, default=200, help="new images of each kind (normal and anomalous)")
  args = parser.parse_args()
  start = time.time()
  out = args.out or tempfile.mkdtemp(prefix="own_images_")
  normal, anomalous = args.normal.split(","), args.anomalous.split(",")
  if set(normal) & set(anomalous):
    parser.error(f"--normal and --anomalous share {', '.join(sorted(set(normal) & set(anomalous)))}")

  # 1. Your images: a folder of normal ones, and a folder of new ones to judge.
  train = shapes_of(normal, args.train, seed=1)
  write_pngs(os.path.join(out, "train"), train, [f"{i:05d}.png" for i in range(len(train))])
  odd = drawn_shapes(args.new, seed=3) if anomalous == ["outlines"] else shapes_of(anomalous, args.new, seed=3)
  new = np.concatenate([shapes_of(normal, args.new, seed=2), odd])
  truth = np.repeat([0, 1], args.new)  # what the detector does not see
  order = np.random.default_rng(4).permutation(len(new))
  names = [f"{i:05d}.png" for i in range(len(new))]
  write_pngs(os.path.join(out, "new"), new[order], names)
  truth = dict(zip(names, truth[order], strict=True))
  print(f"{len(train)} normal training images ({args.normal}) in {out}/train, {len(new)} new ones in {out}/new")

  # 2. Train on the normal folder (the same job as --config=configs/folder.py --config.data.data_dir=...).
  workdir = os.path.join(out, "detector")
  det = Detector(workdir=workdir, train__num_epochs=args.epochs).fit_dir(os.path.join(out, "train"))
  print(f"trained: {det}")

  # 3. Predict the new folder (what --mode=predict --workdir=... --input=... does): a CSV and a summary.
  for line in predict.predict(workdir, os.path.join(out, "new")):
    print(line)
  with open(os.path.join(workdir, "predictions.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
  flagged = np.array([int(r["anomalous"]) for r in rows])
  is_anomaly = np.array([truth[r["image"]] for r in rows], bool)
  print(
    f"detection rate (anomalous new images flagged): {flagged[is_anomaly].mean():.3f}   "
    f"false-positive rate (normal new images flagged): {flagged[~is_anomaly].mean():.3f} "
    f"(target {det.threshold_method_[1]:g})   {time.time() - start:.0f} s"
  )


if __name__ == "__main__":
  main()
