"""Score new images with a trained workdir and nothing else: ``--mode=predict`` and ``dcvae_jax.Detector``.

  python -m dcvae_jax.main --mode=predict --workdir=W --input=PATH [--output=FILE] [--run=NAME]

What it reads, all from the workdir W (not the training data, not a config file):
  config.json              the model, likelihood, preprocessing (data.binarize / data.dequantize) and eval settings
  scoring/input.json       the image shape (H, W, C) the models take, and the classes that rebuild the runs
  scoring/<run>.npz        RaPP's NAP statistics, the standardised sums' reference scores, the condition counts,
                           latent_knn's bank of training codes (when it was scored)
  checkpoints/             the trained parameters (the newest good checkpoint)
  results.json             the chosen score (protocol.score, or the one chosen on validation for "auto")
  thresholds.json          the run's decision threshold of that score, set on its validation images
(evaluators/scoring_state.py; the detection evaluator writes them when it scores a run; a workdir scored before they
existed gets them from ``--mode=rescore``).

Input PATH: a folder (its PNG / JPEG / BMP files at any depth, sorted by path, then its .npz files, sorted), one
.npz (its array ``x``, or its only array: uint8 (N, H, W) or (N, H, W, C)) or one image file. Every image gets
exactly the training preprocessing: resized to the training (H, W) and converted to its channel count as the
folder dataset does (data/images.py), then scaled, binarised or dequantised inside the same compiled scoring
program as training's evaluation (evaluators/detection.py -> evaluators/scoring.py), with the same eval settings
and seed (config.seed, as the test images) and the run's saved NAP statistics and references; the scores are
reduced over conditions (protocol.score_condition; "given" needs labels and is refused) and complexity /
sap_complexity are derived exactly as for the test set (scoring.reduce_scores).

Monte Carlo scores: nelbo, iwae, and so complexity and sap_complexity, average over random codes drawn per batch
of eval.batch_size images from (config.seed, batch index), so an image's value carries the estimator's noise for
its position in the input: the same images in the same order give the scores the detection evaluator saved
in scores/<run>.npz (tested); recon, rapp and rapp_sap are deterministic.

Output: a CSV (default W/predictions.csv) with one row per scored image: ``image`` (its path relative to the
input folder, the file name, or ``file.npz[i]``), every score (larger = more anomalous), ``score`` (the chosen
score's value again) and ``anomalous`` (1 iff score > the run's threshold, non-finite scores included; empty when
the workdir has no threshold). A summary goes to stdout; one ``skipped NAME: reason`` line per image that could
not be read (corrupt, or an npz of the wrong shape or dtype) to stderr. The exit status is 0 when at least one
image was scored, else one ``error:`` line and 1.

Runs: a workdir with several runs (leave_one_out, one_vs_rest, seeds) needs ``--run=NAME``
(``class3_seed0``); a single-run workdir (folder, split, ood) does not.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from dcvae_jax import distributed
from dcvae_jax.data import images as images_lib
from dcvae_jax.data import protocols
from dcvae_jax.errors import ConfigError, DataError, WorkdirError
from dcvae_jax.evaluators import detection, scoring, scoring_state, threshold
from dcvae_jax.models import registry as models
from dcvae_jax.train import restore


def workdir_runs(workdir: str, config=None, info=None) -> list:
  """The protocol's runs of a trained workdir, rebuilt from config.json and scoring/input.json."""
  config = config if config is not None else restore.load_config(workdir)
  info = info if info is not None else scoring_state.read_input(workdir)
  return protocols.make_runs(
    config.protocol, info["num_classes"], config.seed, config.num_seeds, fixed=info["protocol_classes"]
  )


def choose_run(workdir: str, runs: list, name: str | None):
  """The run named ``name``; without one, the only run (a workdir with several needs a name)."""
  names = [r.name for r in runs]
  if name:
    if name not in names:
      raise ConfigError(f"{workdir} has no run {name!r}; its runs: {', '.join(names)}")
    return runs[names.index(name)]
  if len(runs) > 1:
    raise ConfigError(
      f"{workdir} holds {len(runs)} runs: choose one with --run=NAME (run= in Python): {', '.join(names)}"
    )
  return runs[0]


def _read_json(path: str, missing: str) -> dict:
  if not os.path.exists(path):
    raise WorkdirError(missing)
  with open(path) as f:
    return json.load(f)


@dataclasses.dataclass(eq=False)
class Predictor:
  """One trained run of a workdir, ready to score new uint8 images (see the module docstring).

  ``threshold``: dict(threshold, val_fpr, n_val_normal, method, target) of the chosen score, or None when the
  workdir has none (data.validation_fraction=0, or no normal validation image for the run)."""

  workdir: str
  config: Any
  run: protocols.Run
  setup: Any
  params: Any  # the run's parameters with a model axis of 1 (the stacked layout scoring takes)
  nap_stats: dict  # with a model axis of 1
  reference: dict | None
  bank: dict | None  # latent_knn's bank (codes, cond) of the run's normal training images, or None
  condition_counts: np.ndarray
  mesh: Any
  image_shape: tuple  # (H, W, C)
  grey_arrays: bool  # the training arrays were (N, H, W)
  score_name: str
  threshold: dict | None

  @property
  def score_names(self) -> tuple:
    ref = self.reference or {}
    names = [
      n
      for n in scoring.score_names(self.config)
      if (self.bank is not None or not scoring.needs_knn((n,)))
      and all(p in ref for p in scoring.STANDARDISED_SUMS.get(n, ()))
    ]
    return tuple(names)

  def convert(self, x, *, where: str = "images") -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, C), any size and channel count, in the training layout: resized to
    the training (H, W) and converted to its channels (data/images.py, as the folder dataset converts)."""
    x = images_lib.convert_array(x, self.image_shape[:2], self.image_shape[2], where=where)
    return x[..., 0] if self.grey_arrays else x

  def load(self, source) -> tuple:
    """(images in the training layout, names, skipped (name, reason) pairs) of a folder, .npz or image file."""
    images, names, skipped = load_input(source, self.image_shape[:2], self.image_shape[2])
    return (images[..., 0] if self.grey_arrays else images), names, skipped

  def scores(self, x) -> dict:
    """Every score (name -> float64 (N,)) of uint8 images ``x`` already in the training layout (``convert``)."""
    x = np.asarray(x)
    if x.shape[0] == 0:
      return {name: np.zeros((0,), np.float64) for name in self.score_names}
    banks = None if self.bank is None or not scoring.needs_knn(self.score_names) else [self.bank]
    raw = detection.score_images(
      self.config, self.setup, self.params, x, self.mesh, self.nap_stats, seed=self.seed, banks=banks
    )
    bits = detection.image_bits(self.config, x)
    reduced = scoring.reduce_scores(
      self.run,
      {k: v[0] for k, v in raw.items()},
      None,
      conditional=self.setup.spec.conditional,
      condition_counts=self.condition_counts,
      protocol=self.config.protocol,
      length_bits=bits,
      offset_bits=detection.complexity_offset_bits(self.config, self.image_shape),
      reference=self.reference,
    )
    return {name: np.asarray(reduced[name], np.float64) for name in self.score_names if name in reduced}

  @property
  def seed(self) -> int:
    return int(self.config.seed)

  def flagged(self, chosen) -> np.ndarray:
    """int (N,): 1 where the chosen score is above the threshold (non-finite scores always are)."""
    if self.threshold is None:
      raise WorkdirError(
        f"{self.workdir} has no decision threshold for run {self.run.name} (trained with "
        "data.validation_fraction=0, or without normal validation images)"
      )
    return threshold.flagged(chosen, self.threshold["threshold"]).astype(np.int64)


def load_predictor(workdir: str, run: str | None = None) -> Predictor:
  """The run ``run`` of a trained workdir (the only one when None), from the workdir alone."""
  config = restore.load_config(workdir)
  results = _read_json(
    os.path.join(workdir, "results.json"), f"{workdir} has no results.json: its training has not finished"
  )
  if "score" not in results:
    raise WorkdirError(
      f"{workdir} was evaluated without the detection evaluator (eval.evaluators): score it first with "
      f"--mode=rescore --workdir={workdir} (the default eval.evaluators include it)"
    )
  info = scoring_state.read_input(workdir)
  runs = workdir_runs(workdir, config, info)
  chosen = choose_run(workdir, runs, run)
  spec = models.get_model(config.model.name)
  if spec.conditional and config.protocol.score_condition == "given":
    raise ConfigError(
      "protocol.score_condition='given' scores an image under its own class, which new images do not have: "
      "rescore the workdir with --config.protocol.score_condition=min (or marginal) first"
    )
  state = scoring_state.read_run(workdir, chosen.name)
  mesh = distributed.make_mesh()
  setup, params = restore.load_params(workdir, config, runs, info["image_shape"], mesh, only={chosen.name})
  score_name = results["score"]
  t = None
  path = os.path.join(workdir, "thresholds.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved["score"] == score_name and chosen.name in saved["runs"]:
      t = {**saved["runs"][chosen.name], "method": saved["method"], "target": saved["target"]}
  return Predictor(
    workdir=workdir,
    config=config,
    run=chosen,
    setup=setup,
    params=jax.tree.map(lambda a: np.asarray(a)[None], params[chosen.name]),
    nap_stats={k: np.asarray(v)[None] for k, v in state["nap_stats"].items()},
    reference=state["reference"],
    bank=state["bank"],
    condition_counts=state["condition_counts"],
    mesh=mesh,
    image_shape=tuple(info["image_shape"]),
    grey_arrays=bool(info["grey_arrays"]),
    score_name=score_name,
    threshold=t,
  )


def _relative(path: str, root: str) -> str:
  return os.path.relpath(path, root) if root else os.path.basename(path)


def load_input(source: str, image_size: tuple, channels: int) -> tuple:
  """(uint8 (N, H, W, C), names, skipped) of a folder, an .npz or one image file (module docstring), every
  image converted to ``image_size`` / ``channels``; ``skipped`` lists (name, one-line reason) of what could not
  be read. Raises DataError when ``source`` does not exist or is an empty folder."""
  source = os.fspath(source)
  if not os.path.exists(source):
    raise DataError(f"input {source} does not exist")
  empty = np.zeros((0, *image_size, channels), np.uint8)
  parts, names, skipped = [], [], []
  root = source if os.path.isdir(source) else ""
  if root:
    files, others = images_lib.find_images(source)
    npz = [p for p in others if p.lower().endswith(".npz")]
    skipped += [(_relative(p, root), "not an image (png/jpg/jpeg/bmp) or .npz") for p in others if p not in npz]
    if not files and not npz:
      raise DataError(f"input folder {source} holds no images (png/jpg/jpeg/bmp) and no .npz")
  else:
    files, npz = ([], [source]) if source.lower().endswith(".npz") else ([source], [])
  if files:
    loaded = images_lib.load_images(files, image_size, channels)
    parts.append(loaded.images)
    names += [_relative(p, root) for p in loaded.names]
    skipped += [(_relative(p, root), reason) for p, reason in loaded.errors]
  for path in npz:
    try:
      loaded = images_lib.load_images(path, image_size, channels)
    except DataError as e:  # wrong dtype or shape: this file is skipped, the others are scored
      skipped.append((_relative(path, root), str(e).removeprefix(f"{path}: ")))
      continue
    parts.append(loaded.images)
    rel = _relative(path, root)
    names += [f"{rel}[{i}]" for i in range(loaded.images.shape[0])]
    skipped += [(_relative(p, root), reason) for p, reason in loaded.errors]
  images = np.concatenate(parts) if parts else empty
  return images, names, skipped


def write_csv(path: str, names: list, scores: dict, chosen: str, flags) -> None:
  """The predictions CSV (module docstring); floats in Python's shortest round-trip form."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image", *scores, "score", "anomalous"])
    for i, name in enumerate(names):
      row = [repr(float(scores[k][i])) for k in scores]
      w.writerow([name, *row, repr(float(scores[chosen][i])), "" if flags is None else int(flags[i])])
  os.replace(tmp, path)


def threshold_text(p: Predictor) -> str:
  """How the run's threshold was set, in one line."""
  t = p.threshold
  if t is None:
    return (
      "no decision threshold in the workdir (data.validation_fraction=0, or no normal validation image): "
      "the anomalous column is empty"
    )
  if t["method"] == "fpr":
    how = (
      f"set on the run's {t['n_val_normal']} normal validation images for a false-positive rate of at most "
      f"{t['target']:g} (eval.threshold_fpr; their false-positive rate {t['val_fpr']:.3f})"
    )
  else:
    how = (
      f"set on all the run's validation images to flag a fraction {t['target']:g} of them (eval.contamination; "
      f"false-positive rate {t['val_fpr']:.3f} on its {t['n_val_normal']} normal ones)"
    )
  return f"threshold: {p.score_name} > {t['threshold']:.6g}, {how}"


def predict(workdir: str, source: str, *, output: str | None = None, run: str | None = None, warn: Callable = print):
  """Score every image of ``source`` with the run ``run`` of ``workdir``, write the CSV; returns the summary
  lines. ``warn`` gets one ``skipped NAME: reason`` line per image left out. Raises DataError when no image
  could be scored."""
  p = load_predictor(workdir, run)
  images, names, skipped = p.load(source)
  for name, reason in skipped:
    warn(f"skipped {name}: {reason}")
  if not names:
    raise DataError(f"no image of {source} could be scored ({len(skipped)} skipped, listed above)")
  scores = p.scores(images)
  flags = None if p.threshold is None else p.flagged(scores[p.score_name])
  output = output or os.path.join(workdir, "predictions.csv")
  write_csv(output, names, scores, p.score_name, flags)
  n = len(names)
  lines = [f"predict: {n} image(s) of {source} scored by run {p.run.name} of {workdir}, {len(skipped)} skipped"]
  if flags is not None:
    k = int(flags.sum())
    lines.append(f"anomalous: {k} of {n} ({100.0 * k / n:.1f}%)")
  lines.append(threshold_text(p))
  lines.append(f"predictions: {output}")
  return lines
