"""``train_and_evaluate(config, workdir)``: the whole job, importable from Colab and tests. It validates the
config, loads the data and makes the runs; then for each group of runs it trains them (train/trainer.py), runs
each evaluator that ``eval.evaluators`` names (evaluators/registry.py) and writes the runs' results; then it
summarises. The evaluators decide what the results hold; the trainer knows none of them.

Workdir layout:
  config.json        the config that produced results.json (written after it; see workdir.py)
  trained.json       the training fields the checkpoints are trained with: a rerun that differs in one is
                     refused, but for more train.num_epochs (continued); other scoring fields rescore
  metrics.jsonl      per-step loss terms of every run (JSON lines)
  tensorboard/<run>/ the same as TensorBoard event files, with train.tensorboard=True
  checkpoints/<group>/  Orbax checkpoints of each group of runs trained together
  scores/<run>.npz   the evaluators' arrays of the run: every test image's scores under every condition (recon,
                     nelbo: (N_test, C')), y_test, and the same of its validation images as val_<score>, y_val
                     (detection); the test images' codes (latents)
  runs/<run>.json    per-run results, written when a run's evaluation finishes, with the identity (training and
                     scoring fields, data) they were computed under: reused only under the same identity
  thresholds.json    each run's decision threshold of the headline score, set on validation images (threshold.py)
  scoring/           what scoring new images needs (detection; evaluators/scoring_state.py): the models' input
                     shape and the protocol's classes (input.json), each run's NAP statistics, sap_complexity
                     reference scores and condition counts (<run>.npz); --mode=predict reads only the workdir
  results.json       the summary: what ran on what, each evaluator's part (metrics.summarize,
                     latents.summarize_disentanglement), every run's results, ``settings`` and ``validation``

Data: ``prepare_data`` carves the validation split (data.validation_fraction of every class of the training split,
data/splits.py) out of the training split before any run is built; no run trains on it, and RaPP's NAP fit and the
sap_complexity reference come from the remaining training images. Every run scores its validation images as it
scores its test images; without test images (data.name=folder without test/, ``Detector.fit``) the runs still
score their validation images and set their decision thresholds on them.
"""

from __future__ import annotations

import contextlib
import os

import jax
import numpy as np

from dcvae_jax import distributed, files
from dcvae_jax import workdir as workdir_lib
from dcvae_jax.data import datasets as data_lib
from dcvae_jax.data import input_pipeline
from dcvae_jax.data.prepare import make_runs, prepare_data, validation_fraction
from dcvae_jax.errors import ConfigError
from dcvae_jax.evaluators import base, scoring
from dcvae_jax.evaluators import registry as evaluator_registry
from dcvae_jax.log import log as _log
from dcvae_jax.models import objectives
from dcvae_jax.models import registry as models
from dcvae_jax.train import tensorboard as summaries
from dcvae_jax.train import train_step, trainer
from dcvae_jax.train.restore import (  # noqa: F401 (load_config, load_trained, Trained: re-exported)
  Trained,
  group_name,
  load_config,
  load_data,
  load_trained,
  run_groups,
)
from dcvae_jax.validation import validate
from dcvae_jax.workdir import WorkdirLock, check_workdir


def run_protocol(config, ds: data_lib.Dataset):
  """config.protocol, named "folder" when the dataset fixes the protocol (what results.json reports)."""
  if ds.protocol_classes is None or config.protocol.name == "folder":
    return config.protocol
  import ml_collections

  protocol = ml_collections.ConfigDict(config.protocol.to_dict())
  protocol.name = "folder"
  return protocol


def training_settings(config) -> dict:
  """results.json's ``settings``: what was trained and how (model, data, optimisation, score, seeds)."""
  m, d, t, p = config.model, config.data, config.train, config.protocol
  out = {
    "model": m.name,
    "arch": m.arch,
    "hidden": list(m.hidden),
    "latent_dim": int(m.latent_dim),
    "likelihood": m.likelihood,
    "gaussian_variance": m.gaussian_variance if m.likelihood == "gaussian" else None,
    "dataset": d.name,
    "binarize": bool(d.binarize),
    "dequantize": bool(d.dequantize),
    "validation_fraction": validation_fraction(config),
    "protocol": p.name,
    "score": p.score,
    "score_condition": p.score_condition,
    "num_epochs": int(t.num_epochs),
    "learning_rate": float(t.learning_rate),
    "lr_schedule": t.lr_schedule,
    "batch_size": int(t.batch_size),
    "batch_sampling": t.batch_sampling,
    "seed": int(config.seed),
    "seeds": list(range(int(config.seed), int(config.seed) + max(int(config.num_seeds), 1))),
  }
  if p.name == "ood":
    out["ood_dataset"] = p.ood_dataset
  return out


def validation_section(config, ds) -> dict:
  """results.json's ``validation``: the split the validation metrics, the score choice and the threshold use."""
  fraction = validation_fraction(config)
  if ds.x_val is None:
    return {
      "fraction": fraction,
      "note": "data.validation_fraction=0: no validation split, so no validation metrics, no score chosen on "
      "validation and no decision threshold",
    }
  out = {
    "fraction": fraction,
    "seed": int(config.seed),
    "num_images": int(ds.x_val.shape[0]),
    "num_train_images": int(ds.x_train.shape[0]),
    "how": "floor(fraction n_c + 1/2) training images of every class c, drawn with the seed; no run trains on them",
  }
  if config.protocol.name == "ood":
    out["ood"] = (
      f"validation anomalies: the same fraction of {config.protocol.ood_dataset}'s TRAINING split (never its test "
      "split), stratified by its classes"
    )
  return out


def _check_auto(config, ds, runs) -> None:
  """protocol.score="auto" chooses on validation: every run needs normal and anomalous validation images."""
  if config.protocol.score != "auto":
    return
  for run in runs:
    if not (np.isin(ds.y_val, run.normal).any() and np.isin(ds.y_val, run.anomalous).any()):
      raise ConfigError(
        f"protocol.score='auto' chooses the score on validation anomalies, and run {run.name} has none (no "
        f"training image of its anomalous classes {list(run.anomalous)}); name a score"
      )


def _estimator_group_message(config, spec, run, y_train, num_devices: int) -> str:
  """One log line: how many examples an anchor's minibatch MI / TC / DWKL estimate averages over (run ``run``),
  so the logged terms can be read against the known-answer bias table (docs/results/estimator_bias.md)."""
  opts = input_pipeline.sampling_options(config)
  groups = num_devices if config.model.tc_scope == "local" else 1
  m = input_pipeline.mean_group_size(
    input_pipeline.condition_counts(run, y_train),
    int(config.train.batch_size),
    conditional=spec.conditional,
    sampling=opts["sampling"],
    per_condition=opts.get("per_condition", 0),
    groups=groups,
  )
  scope = "examples of the anchor's condition" if spec.conditional else "examples"
  shard = f" ({groups} device shards)" if groups > 1 else ""
  return (
    f"{spec.name}: its minibatch MI / TC / dimension-wise KL estimates average over {m:.1f} {scope} per anchor "
    f"({opts['sampling']} batches of {config.train.batch_size}{shard}, run {run.name}); their bias at that size: "
    "docs/results/estimator_bias.md"
  )


def train_and_evaluate(
  config, workdir: str, *, log=_log, dataset: data_lib.Dataset | None = None, rescore: bool = False
) -> dict:
  """Train every run of the protocol (groups of ``train.runs_per_program`` at once), score, summarise.

  A finished run is reused only if it was scored under the same training and scoring fields (workdir.py);
  other scoring fields rescore it from its checkpoints, more train.num_epochs continue them, other training
  fields are refused (WorkdirError). rescore: score every run again from its final checkpoints regardless."""
  files.check_local(workdir)
  validate(config, num_devices=jax.device_count())
  ds = prepare_data(config, dataset)
  runs = make_runs(config, ds)
  if ds.protocol_classes is not None and config.protocol.name != "folder":
    log(
      f"{ds.name}: the data defines the protocol (normal = its train classes, anomalous = its anomalous test "
      f"images); protocol.name={config.protocol.name!r} is not used"
    )
  _check_auto(config, ds, runs)
  data = workdir_lib.data_fingerprints(ds)
  identity = workdir_lib.results_identity(config, data)
  if not distributed.is_primary():  # process 0 owns the workdir's files; the others train with it
    return _train_and_evaluate(config, workdir, ds, runs, lambda *_: None, identity, write=False, rescore=rescore)
  with WorkdirLock(workdir, log=log):
    note = check_workdir(config, workdir, data)
    if note:
      log(note)
    return _train_and_evaluate(config, workdir, ds, runs, log, identity, rescore=rescore)


def _train_and_evaluate(config, workdir, ds, runs, log, identity, write: bool = True, rescore: bool = False) -> dict:
  """Train each group of runs, run every evaluator on it and write the runs' results; then summarise."""
  spec = models.get_model(config.model.name)
  mesh = distributed.make_mesh()
  tested = ds.x_test.shape[0] > 0  # data.name=folder without a test set: the runs only train (and validate)
  if write:
    os.makedirs(os.path.join(workdir, "runs"), exist_ok=True)
  n_val = 0 if ds.x_val is None else ds.x_val.shape[0]
  log(
    f"{config.model.name} on {ds.name} ({ds.source}): {ds.x_train.shape[0]} train / {n_val} validation / "
    f"{ds.x_test.shape[0]} test images, protocol {run_protocol(config, ds).name}, {len(runs)} run(s), "
    f"{mesh.devices.size} device(s)"
  )
  if spec.regularizer is objectives.decomposed_regularizer:
    log(_estimator_group_message(config, spec, runs[0], ds.y_train, mesh.devices.size))

  per_run, total_seconds = [], 0.0
  metrics_file = open(os.path.join(workdir, "metrics.jsonl"), "a") if write else contextlib.nullcontext()
  tensorboard = (
    summaries.TensorBoardWriter(os.path.join(workdir, "tensorboard"))
    if write and config.train.tensorboard
    else contextlib.nullcontext()
  )
  with metrics_file as log_file, tensorboard as tb:
    job = base.Job(config, ds, mesh, workdir, write, log, tb, identity if tested else None)
    evaluators = evaluator_registry.make(job)
    for group in run_groups(runs, int(config.train.runs_per_program)):
      done = [os.path.join(workdir, "runs", f"{r.name}.json") for r in group]
      finished = [workdir_lib.finished_run(p, identity) for p in done]
      if not rescore and all(r is not None and all(e.complete(r) for e in evaluators) for r in finished):
        per_run.extend(finished)
        total_seconds += per_run[-1].get("group_train_seconds", per_run[-1].get("chunk_train_seconds", 0.0))
        continue
      state, seconds, _ = trainer.train_runs(
        config,
        ds.x_train,
        ds.y_train,
        group,
        os.path.join(workdir, "checkpoints", group_name(group)),
        image_shape=ds.image_shape,
        num_conditions=len(runs[0].normal),
        log_file=log_file,
        mesh=mesh,
        log=log,
        tensorboard=tb,
      )
      total_seconds += seconds
      log(f"trained {len(group)} run(s): {seconds:.1f} s")
      group_results, arrays = evaluate(job, evaluators, group, state)
      skipped = distributed.to_host(state.skipped)
      for m, result in enumerate(group_results):
        result.update(group_train_seconds=seconds, skipped_updates=int(skipped[m]))
      if write:
        _write_group(workdir, group, group_results, arrays, identity if tested else None)
      per_run.extend(group_results)

  results = summarize(config, ds, evaluators, per_run, total_seconds, num_devices=mesh.devices.size)
  if write:
    workdir_lib.write_results(config, workdir, results)
  return results


def evaluate(job: base.Job, evaluators, runs, state) -> tuple[list[dict], list[dict]]:
  """Every evaluator's part of each run's results (runs/<run>.json) and arrays (scores/<run>.npz), the
  evaluators in registry order, each seeing the parts of those before it; ``state``: the runs' stacked
  TrainState. A progress bar with train.progress, on the process that writes."""
  results: list[dict] = [base.run_fields(r) for r in runs]
  arrays: list[dict] = [{} for _ in runs]
  if not evaluators:
    return results, arrays
  config, ds, mesh = job.config, job.data, job.mesh
  said = "; ".join(d for d in (e.describe() for e in evaluators) if d)
  job.log(f"scoring {len(runs)} run(s) on {ds.x_test.shape[0]} test images: {said}")
  progress = scoring.ScoreProgress(
    len(runs), sum(e.steps(runs) for e in evaluators), show=job.write and bool(config.train.progress)
  )
  setup = train_step.make_setup(config, ds.image_shape, len(runs[0].normal), mesh.devices.size)
  group = base.Group(runs, state, setup, progress, results, arrays)
  for evaluator in evaluators:
    part = evaluator.run(group)
    for m in range(len(runs)):
      results[m].update(part.results[m])
      arrays[m].update(part.arrays[m])
  job.log(progress.close())
  return results, arrays


def _write_group(workdir: str, runs, results: list[dict], arrays: list[dict], identity: str | None) -> None:
  """scores/<run>.npz (the evaluators' arrays; none without) and runs/<run>.json of every run of a group, with
  the results' identity (None: without one, so the runs are evaluated again next time)."""
  os.makedirs(os.path.join(workdir, "scores"), exist_ok=True)
  for run, result, saved in zip(runs, results, arrays, strict=True):
    npz = os.path.join(workdir, "scores", f"{run.name}.npz")
    if saved:
      files.write_npz(npz, **saved)
    elif os.path.exists(npz):  # an earlier evaluation's: it would describe other results
      os.remove(npz)
    workdir_lib.write_run(os.path.join(workdir, "runs", f"{run.name}.json"), result, identity)


def summarize(config, ds, evaluators, per_run: list[dict], train_seconds: float, *, num_devices: int) -> dict:
  """results.json: what was run and on what, every evaluator's summary (in registry order, each seeing the
  summary so far), every run's results, the settings and the validation split."""
  results: dict = {
    "model": config.model.name,
    "dataset": ds.name,
    "protocol": run_protocol(config, ds).name,
    "num_runs": len(per_run),
    "train_seconds": float(train_seconds),
  }
  for evaluator in evaluators:
    results.update(evaluator.summarize(per_run, results))
  results["runs"] = per_run
  results["settings"] = training_settings(config)
  results["validation"] = validation_section(config, ds)
  if config.protocol.name == "ood":
    results["ood_dataset"] = config.protocol.ood_dataset
  results["num_devices"] = num_devices
  results["num_processes"] = jax.process_count()
  results["backend"] = jax.default_backend()
  results["image_shape"] = list(ds.image_shape)
  if ds.class_names is not None:
    results["class_names"] = list(ds.class_names)
  if ds.x_test.shape[0] == 0:
    results["note"] = f"no test images in {ds.source}: the runs were trained, not evaluated (no AUROC)"
  return results
