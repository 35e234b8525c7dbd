"""What scoring new images needs from training, saved in the workdir when a run is scored, so that a trained
workdir scores images without its training data (``--mode=predict``, ``dcvae_jax.Detector``).

  scoring/input.json   the images the models take: image_shape (H, W, C) and whether the training arrays were
                       grey (N, H, W); the dataset's num_classes and protocol_classes (they rebuild the runs,
                       ``protocols.make_runs``), its class_names, name and source
  scoring/<run>.npz    per run, what its scores take from normal training images:
                         nap_mean (D,), nap_basis (D, k), nap_inv_scale (k,)  RaPP's NAP normalisation (fit_rapp)
                         reference_rapp_sap, reference_complexity (n,)       the reduced scores of the n reference
                         [reference_latent_knn (n,)]                         images that standardise the sums
                         [knn_codes (B, d), knn_cond (B,)]                   latent_knn's bank: the codes of the run's
                                                                             normal training images and their
                                                                             conditions (when latent_knn was scored)
                         condition_counts (C,)                               training images of each normal class
                                                                             (score_condition "marginal")
Pure numpy and JSON."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from dcvae_jax import files
from dcvae_jax.errors import WorkdirError

FOLDER = "scoring"
NAP_KEYS = ("mean", "basis", "inv_scale")
REFERENCE_KEYS = ("rapp_sap", "complexity", "latent_knn")


def input_path(workdir: str) -> str:
  return os.path.join(workdir, FOLDER, "input.json")


def run_path(workdir: str, run_name: str) -> str:
  return os.path.join(workdir, FOLDER, f"{run_name}.npz")


def write_input(workdir: str, ds) -> None:
  """scoring/input.json of a dataset (``datasets.Dataset``, as the runs saw it)."""
  os.makedirs(os.path.join(workdir, FOLDER), exist_ok=True)
  files.write_json(
    input_path(workdir),
    {
      "image_shape": [int(s) for s in ds.image_shape],
      "grey_arrays": bool(np.ndim(ds.x_train) == 3),
      "num_classes": int(ds.num_classes),
      "protocol_classes": None if ds.protocol_classes is None else [list(c) for c in ds.protocol_classes],
      "class_names": None if ds.class_names is None else list(ds.class_names),
      "dataset": ds.name,
      "source": ds.source,
    },
  )


def _rerun_hint(workdir: str) -> str:
  return (
    f"{workdir} was scored before scoring state was saved: run --mode=rescore on it (with its training data) to "
    "write it"
  )


def read_input(workdir: str) -> dict:
  """scoring/input.json, with ``image_shape`` and ``protocol_classes`` as tuples."""
  path = input_path(workdir)
  if not os.path.exists(path):
    raise WorkdirError(f"{path} is missing; {_rerun_hint(workdir)}")
  with open(path) as f:
    info = json.load(f)
  info["image_shape"] = tuple(info["image_shape"])
  if info["protocol_classes"] is not None:
    info["protocol_classes"] = tuple(tuple(c) for c in info["protocol_classes"])
  return info


def write_run(workdir: str, run_name: str, nap_stats: dict, reference: dict, condition_counts, bank=None) -> None:
  """scoring/<run>.npz: one run's NAP statistics (dict mean, basis, inv_scale, no model axis), its reference
  scores (dict rapp_sap, complexity[, latent_knn]), its condition counts and latent_knn's bank (dict codes,
  cond; latent_knn.build_banks) or None."""
  os.makedirs(os.path.join(workdir, FOLDER), exist_ok=True)
  path = run_path(workdir, run_name)
  tmp = f"{path}.tmp{os.getpid()}.npz"
  arrays: dict[str, Any] = {
    **{f"nap_{k}": np.asarray(nap_stats[k]) for k in NAP_KEYS},
    **{f"reference_{k}": np.asarray(reference[k]) for k in REFERENCE_KEYS if k in reference},
    "condition_counts": np.asarray(condition_counts, np.float32),
    **({} if bank is None else {"knn_codes": np.asarray(bank["codes"]), "knn_cond": np.asarray(bank["cond"])}),
  }
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def read_run(workdir: str, run_name: str) -> dict:
  """dict(nap_stats=dict(mean, basis, inv_scale), reference=dict(rapp_sap, complexity[, latent_knn]) or None,
  condition_counts, bank=dict(codes, cond) or None) of one run, as :func:`write_run` saved them."""
  path = run_path(workdir, run_name)
  if not os.path.exists(path):
    raise WorkdirError(f"{path} is missing; {_rerun_hint(workdir)}")
  with np.load(path) as f:
    saved = {k: f[k] for k in f.files}
  reference = {k: saved[f"reference_{k}"] for k in REFERENCE_KEYS if f"reference_{k}" in saved} or None
  bank = {"codes": saved["knn_codes"], "cond": saved["knn_cond"]} if "knn_codes" in saved else None
  return {
    "nap_stats": {k: saved[f"nap_{k}"] for k in NAP_KEYS},
    "reference": reference,
    "condition_counts": saved["condition_counts"],
    "bank": bank,
  }
