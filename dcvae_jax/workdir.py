"""The workdir of an experiment: one process at a time (``WorkdirLock``), and nothing stale in it, ever.

Every config field is in exactly one of three classes (tests/test_workdir_identity.py walks every field):

* ``TRAINING_FIELDS`` change the trained parameters. ``trained.json`` records their values for the checkpoints
  (with a fingerprint of the training images) before any training; a rerun that differs in one is refused
  (``WorkdirError``), except a larger ``train.num_epochs``, which continues the checkpoints (constant learning
  rate only: a schedule's shape depends on the total step count).
* ``SCORING_FIELDS`` change only how the trained checkpoints are scored: a rerun that differs in one rescores
  from the checkpoints without training.
* ``NEUTRAL_FIELDS`` change neither: a rerun that differs only in them reuses the finished results.

Each ``runs/<run>.json`` carries the ``identity`` (a hash of the training and scoring fields and of the data)
it was computed under and is reused only under the same identity; ``config.json`` is written after
``results.json``, so it always describes the config that produced results.json (a stale one is removed first).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket

import numpy as np

from dcvae_jax import files
from dcvae_jax.errors import WorkdirError
from dcvae_jax.log import log as _log

# Training fields: they change the trained parameters, so checkpoints trained with other values cannot be
# resumed. Every model.* field (even one the chosen model ignores, e.g. model.beta_vae.beta for a vae: classified
# by name, not by model); the data and its preprocessing (binarize, dequantize: the training noise); which runs exist and are
# trained together (seed, num_seeds, protocol.name / classes / normal, train.runs_per_program: a group shares one
# program and its checkpoint directory, and vmapped runs differ from single ones in the last float bit);
# train.ensemble (vmap and map differ in the last bit); every optimisation and batch-sampling setting; and
# train.on_nonfinite ("skip" drops updates that "stop" would have refused).
TRAINING_FIELDS = (
  "seed",
  "data.image_size",
  "data.channels",
  "data.validation_fraction",
  "num_seeds",
  "model.name",
  "model.arch",
  "model.hidden",
  "model.latent_dim",
  "model.likelihood",
  "model.gaussian_variance",
  "model.gaussian_std",
  "model.compute_dtype",
  "model.estimator",
  "model.tc_scope",
  "model.beta_vae.beta",
  "model.beta_tcvae.alpha",
  "model.beta_tcvae.tc_beta",
  "model.beta_tcvae.gamma",
  "model.dcvae.alpha",
  "model.dcvae.tc_beta",
  "model.dcvae.gamma",
  "model.factor_vae.gamma",
  "model.factor_vae.disc_layers",
  "model.factor_vae.disc_width",
  "model.rf_vae.gamma",
  "model.rf_vae.disc_layers",
  "model.rf_vae.disc_width",
  "model.rf_vae.lambda_min",
  "model.rf_vae.lambda_max",
  "model.rf_vae.eta_s",
  "model.rf_vae.eta_h",
  "data.name",
  "data.binarize",
  "data.dequantize",
  "protocol.name",
  "protocol.classes",
  "protocol.normal",
  "train.num_epochs",
  "train.batch_size",
  "train.learning_rate",
  "train.lr_schedule",
  "train.warmup_fraction",
  "train.final_lr_fraction",
  "train.disc_learning_rate",
  "train.batch_sampling",
  "train.per_condition",
  "train.conditions_per_batch",
  "train.runs_per_program",
  "train.ensemble",
  "train.on_nonfinite",
)

# Scoring fields: they change only the scores of trained checkpoints (every eval.* setting: eval.batch_size too,
# since test batch i draws its samples from fold_in(seed, i)), the headline score and its reduction over
# conditions, and protocol.anomalous (split: which classes the test set holds; training sees only the normal ones).
SCORING_FIELDS = (
  "eval.threshold_fpr",
  "eval.scores",
  "eval.evaluators",
  "eval.contamination",
  "protocol.ood_dataset",
  "protocol.anomalous",
  "protocol.score",
  "protocol.score_condition",
  "eval.batch_size",
  "eval.elbo_samples",
  "eval.iwae_samples",
  "eval.iwae_chunk",
  "eval.rapp_fit_examples",
  "eval.reference_examples",
  "eval.knn_neighbours",
  "eval.complexity_compressor",
)

# Scoring fields that came after results carried an identity. At its default a field does what happened before
# it existed, so there it is left out of the identity: results computed before it stay reusable.
LATER_SCORING_FIELDS = ("eval.evaluators", "eval.knn_neighbours", "eval.complexity_compressor")

# Neutral fields: the trained parameters and the results are bitwise the same. train.steps_per_call only fuses
# steps (every step draws its batch, keys and noise from its own step number; padding steps are skipped) and
# checkpoints only copy the state (a resumed run equals an uninterrupted one): both tested bitwise on CPU.
# Logging, TensorBoard, progress bars and how many checkpoints are kept; where the images are read from (the
# images themselves are recorded by fingerprint); table.* (read only by --mode=table and its figures).
NEUTRAL_FIELDS = (
  "protocol.ood_data_dir",
  "data.data_dir",
  "data.tfds_data_dir",
  "data.download",
  "train.steps_per_call",
  "train.log_every_steps",
  "train.checkpoint_every_steps",
  "train.keep_checkpoints",
  "train.progress",
  "train.tensorboard",
  "table.models",
  "table.figures",
  "table.figure_runs",
)

TRAINED_FILE = "trained.json"  # the training fields (and training images) the checkpoints are trained with
_MISSING = object()


def _get(cfg: dict, dotted: str, default=_MISSING):
  for part in dotted.split("."):
    if not isinstance(cfg, dict) or part not in cfg:
      return default
    cfg = cfg[part]
  return cfg


def _as_dict(config) -> dict:
  return config if isinstance(config, dict) else json.loads(config.to_json())


def _default(name: str):
  from dcvae_jax.config import base_config

  return _get(json.loads(base_config().to_json()), name, None)


def _lookup(cfg: dict, name: str):
  return cfg[name] if name in cfg else _get(cfg, name)


def field_values(config, names) -> dict:
  """``{dotted name: value}`` of ``config`` (a ConfigDict, its JSON dict, or a flat ``{dotted name: value}``
  record). A field the record lacks takes the value of its flat name in a record of the old layout
  (``config.OLD_NAME``: model.tc_beta for model.dcvae.tc_beta), else, written before the field existed, its
  base_config default: a new field's default keeps the old behaviour."""
  from dcvae_jax.config import OLD_NAME

  cfg = _as_dict(config)
  out = {}
  for name in names:
    value = _lookup(cfg, name)
    if value is _MISSING and name in OLD_NAME:
      value = _lookup(cfg, OLD_NAME[name])
    out[name] = json.loads(json.dumps(_default(name) if value is _MISSING else value))
  return out


def _fingerprint(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    if a is not None:
      a = np.ascontiguousarray(a)
      h.update(f"{a.dtype.str}{a.shape}".encode())
      h.update(a.tobytes())
  return h.hexdigest()


def data_fingerprints(ds) -> dict:
  """sha256 of the training images and labels (``train``) and of the test images, labels and factors (``test``)."""
  return {
    "train": _fingerprint(ds.x_train, ds.y_train),
    "test": _fingerprint(ds.x_test, ds.y_test, getattr(ds, "factors_test", None)),
  }


def results_identity(config, data: dict | None = None) -> str:
  """The identity every ``runs/<run>.json`` is written with: a hash of the training and scoring fields (those of
  LATER_SCORING_FIELDS only off their default) and of the data fingerprints (``data_fingerprints``). A finished
  run is reused only under the same identity."""
  scoring = field_values(config, SCORING_FIELDS)
  for name in LATER_SCORING_FIELDS:
    if json.dumps(scoring[name]) == json.dumps(_default(name)):
      del scoring[name]
  record = {"training": field_values(config, TRAINING_FIELDS), "scoring": scoring, "data": data or {}}
  return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _read(path: str):
  with open(path) as f:
    return json.load(f)


def _trained_record(workdir: str):
  """(training field values, training-data fingerprint or None) the workdir's checkpoints are trained with;
  None for a fresh workdir. A workdir from before trained.json: its config.json (the best record there is)."""
  path = os.path.join(workdir, TRAINED_FILE)
  if os.path.exists(path):
    rec = _read(path)
    return field_values(rec["training"], TRAINING_FIELDS), rec.get("train_data")
  if os.path.exists(os.path.join(workdir, "config.json")):
    return field_values(_read(os.path.join(workdir, "config.json")), TRAINING_FIELDS), None
  return None


def _show(value) -> str:
  return repr(tuple(value) if isinstance(value, list) else value)


def _training_diffs(old: dict, new: dict) -> list[str]:
  """``field: old -> new`` for every training field that forbids resuming ``old``'s checkpoints with ``new``."""
  diffs = []
  for name in TRAINING_FIELDS:
    a, b = old[name], new[name]
    if json.dumps(a) == json.dumps(b):
      continue
    diff = f"{name}: {_show(a)} -> {_show(b)}"
    if name == "train.num_epochs":
      if b < a:
        diffs.append(f"{diff} (its checkpoints train toward {a} epochs; only more epochs continue them)")
      elif new["train.lr_schedule"] != "constant":
        diffs.append(f"{diff} (a {new['train.lr_schedule']} schedule depends on the total step count)")
      continue  # more epochs at a constant rate: the checkpoints continue
    diffs.append(diff)
  return diffs


def check_workdir(config, workdir: str, data: dict | None = None) -> str | None:
  """Refuse a workdir whose checkpoints were trained with other training fields (or other training images;
  ``data``: ``data_fingerprints``) as one WorkdirError line naming every difference, old -> new, and write
  nothing. Otherwise record in trained.json what its checkpoints are trained with from now on (a fresh workdir,
  or a larger train.num_epochs that continues them), and return a line saying what the rerun will redo (None:
  nothing, or a fresh workdir)."""
  new = field_values(config, TRAINING_FIELDS)
  new_data = (data or {}).get("train")
  record = _trained_record(workdir)
  ckpt = os.path.join(workdir, "checkpoints")
  if record is None and os.path.isdir(ckpt) and os.listdir(ckpt):
    raise WorkdirError(
      f"workdir {workdir} holds checkpoints without a record of what trained them ({TRAINED_FILE}); "
      "use another --workdir"
    )
  if record is not None:
    old, old_data = record
    diffs = _training_diffs(old, new)
    if old_data and new_data and old_data != new_data:
      diffs.append(f"training images: sha256 {old_data[:12]} -> {new_data[:12]}")
    if diffs:
      raise WorkdirError(f"workdir {workdir} holds a different run ({'; '.join(diffs)}); use another --workdir")
    new_data = new_data or old_data
    if old == new and old_data == new_data and os.path.exists(os.path.join(workdir, TRAINED_FILE)):
      return _redo_note(config, workdir, old)
  os.makedirs(workdir, exist_ok=True)
  files.write_json(os.path.join(workdir, TRAINED_FILE), {"training": new, "train_data": new_data})
  return _redo_note(config, workdir, record[0]) if record is not None else None


def _redo_note(config, workdir: str, trained: dict) -> str | None:
  """What a rerun of a compatible workdir redoes: continued training, or rescoring (scoring fields that differ
  from those of config.json, the config of results.json)."""
  new = field_values(config, TRAINING_FIELDS)
  if new["train.num_epochs"] != trained["train.num_epochs"]:
    return (
      f"train.num_epochs: {trained['train.num_epochs']} -> {new['train.num_epochs']}: training continues from "
      "the checkpoints, then every run is scored again"
    )
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  old, now = field_values(_read(path), SCORING_FIELDS), field_values(config, SCORING_FIELDS)
  diffs = [
    f"{k}: {_show(old[k])} -> {_show(now[k])}" for k in SCORING_FIELDS if json.dumps(old[k]) != json.dumps(now[k])
  ]
  if diffs:
    return f"scoring settings differ from results.json's ({'; '.join(diffs)}): scoring again from the checkpoints"
  return None


def finished_run(path: str, identity: str):
  """The per-run results in ``path`` if they were computed under ``identity`` (else None: score again)."""
  if not os.path.exists(path):
    return None
  result = _read(path)
  return result if result.pop("identity", None) == identity else None


def write_run(path: str, result: dict, identity: str | None) -> None:
  """runs/<run>.json with the identity it was computed under (None: without one, so it is evaluated again)."""
  files.write_json(path, result if identity is None else {**result, "identity": identity})


def write_results(config, workdir: str, results: dict) -> None:
  """thresholds.json, results.json, then config.json: the config that produced it. A config.json that would be
  false meanwhile (it describes other results) is removed first, so config.json never describes results it did
  not produce. thresholds.json is results.json's ``threshold`` section as --mode=predict reads it (each run's
  threshold of the headline score); without that section there is none."""
  path = os.path.join(workdir, "config.json")
  new = _as_dict(config)
  if os.path.exists(path) and _read(path) != new:
    os.remove(path)
  thresholds = os.path.join(workdir, "thresholds.json")
  if "threshold" in results:
    t, keep = results["threshold"], ("threshold", "val_fpr", "n_val_normal")
    runs = {name: {k: v[k] for k in keep} for name, v in t["runs"].items()}
    files.write_json(thresholds, {"score": t["score"], "method": t["method"], "target": t["target"], "runs": runs})
  elif os.path.exists(thresholds):
    os.remove(thresholds)
  files.write_json(os.path.join(workdir, "results.json"), results)
  files.write_json(path, new)


def check_checkpoints_match(config, workdir: str) -> None:
  """Refuse to read checkpoints trained further than ``config`` (the workdir's config.json) says: a run that
  continued to more epochs and has not finished yet."""
  record = _trained_record(workdir)
  if record is None:
    return
  old, new = record[0], field_values(config, TRAINING_FIELDS)
  diffs = [
    f"{k}: {_show(new[k])} -> {_show(old[k])}" for k in TRAINING_FIELDS if json.dumps(old[k]) != json.dumps(new[k])
  ]
  if diffs:
    raise WorkdirError(
      f"workdir {workdir}: its checkpoints are trained with other settings than its results ({'; '.join(diffs)}); "
      "finish that training first (rerun it)"
    )


class WorkdirLock:
  """One run per workdir: ``<workdir>/.lock`` holds the holder's pid and host.

  A lock held by a live process is refused; one left by a dead process on this host is taken over with a
  warning. Used as a context manager; the lock is removed on exit.
  """

  def __init__(self, workdir: str, log=_log):
    self.path = os.path.join(workdir, ".lock")
    self.log = log

  def __enter__(self):
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        holder = self._read()
        if holder.get("host") == me["host"] and not _pid_alive(holder.get("pid", -1)):
          self.log(f"warning: taking over the stale lock of dead process {holder.get('pid')} in {self.path}")
          os.remove(self.path)
          continue
        raise WorkdirError(
          f"workdir {os.path.dirname(self.path)} is in use by pid {holder.get('pid')} on host "
          f"{holder.get('host')} (lock {self.path}); use another --workdir"
        ) from None
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      return self
    raise WorkdirError(f"could not take the lock {self.path}")

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def __exit__(self, *exc):
    if self._read().get("pid") == os.getpid():
      os.remove(self.path)


def _pid_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, ValueError, TypeError):
    return True
  return True
