"""``train_and_evaluate(config, workdir)``: the whole job, importable from Colab and tests.

Workdir layout:
  config.json        the config that produced results.json (written after it; see workdir.py)
  trained.json       the training fields the checkpoints are trained with: a rerun that differs in one is
                     refused, but for more train.num_epochs (continued); other scoring fields rescore
  metrics.jsonl      per-step loss terms of every run (JSON lines)
  tensorboard/<run>/ the same as TensorBoard event files, with train.tensorboard=True
  checkpoints/<chunk>/  Orbax checkpoints of each group of runs trained together
  scores/<run>.npz   every test image's scores under every condition (recon, nelbo: (N_test, C')), y_test; and the
                     same of the run's validation images as val_<score>, y_val
  runs/<run>.json    per-run results, written when a run's evaluation finishes, with the identity (training and
                     scoring fields, data) they were computed under: reused only under the same identity
  thresholds.json    each run's decision threshold of the headline score, set on validation images (threshold.py)
  scoring/           what scoring new images needs from training (evaluators/scoring_state.py): the models' input
                     shape and the protocol's classes (input.json), each run's NAP statistics, sap_complexity
                     reference scores and condition counts (<run>.npz); --mode=predict reads only the workdir
  results.json       the summary (see metrics.summarize), its ``settings`` and ``validation`` sections

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
from dcvae_jax.evaluators import anomaly_scores, latents, metrics, scoring, scoring_state, threshold
from dcvae_jax.log import log as _log
from dcvae_jax.models import inference, objectives
from dcvae_jax.models import registry as models
from dcvae_jax.report import recon_grid
from dcvae_jax.train import tensorboard as summaries
from dcvae_jax.train import train_step, trainer
from dcvae_jax.train.restore import (  # noqa: F401 (load_config, load_trained, Trained: re-exported)
  Trained,
  chunk_name,
  chunks,
  load_config,
  load_data,
  load_trained,
)
from dcvae_jax.validation import validate
from dcvae_jax.workdir import WorkdirLock, check_workdir


def complexity_likelihood(config) -> str:
  """Which likelihood the complexity score's -log2 p(x) came from, and whether it is a density of the data."""
  lik = config.model.likelihood
  if lik == "gaussian":
    lik += f" ({config.model.gaussian_variance} variance)"
  data = (
    "binarised pixels"
    if config.data.binarize
    else ("dequantised grey levels" if config.data.dequantize else "grey levels")
  )
  normalised = objectives.is_density(
    config.model.likelihood, binarize=bool(config.data.binarize), dequantize=bool(config.data.dequantize)
  )
  return f"{lik} on {data}" + ("" if normalised else " (NOT a normalised density: complexity is not meaningful)")


def normal_train_order(ds, run) -> np.ndarray:
  """The run's normal training images in a fixed shuffled order (drawn from (seed, uid)): the images that fit
  RaPP's NAP and standardise sap_complexity come from its front."""
  idx = np.flatnonzero(np.isin(ds.y_train, run.normal))
  return idx[np.random.default_rng([run.seed, run.uid, 7]).permutation(idx.size)]


def complexity_offset_bits(config, image_shape) -> float:
  """The complexity score's D log2(bins) for the config's likelihood and images (H, W, C)."""
  return anomaly_scores.density_offset_bits(
    int(np.prod(image_shape)),
    is_continuous=config.model.likelihood != "bernoulli",
    dequantize=bool(config.data.dequantize),
  )


def score_images(config, setup, params, x, mesh, nap_stats, *, seed: int, scores=None, batch_size=None, **kw) -> dict:
  """The device scores ``scores`` (default: what eval.scores needs) of uint8 images ``x`` under every stacked
  model, with the config's eval settings; ``kw``: scoring.score_test_set's per_model_images, progress."""
  return scoring.score_test_set(
    setup,
    params,
    x,
    mesh,
    batch_size=config.eval.batch_size if batch_size is None else batch_size,
    num_samples=config.eval.elbo_samples,
    seed=seed,
    nap_stats=nap_stats,
    iwae_samples=int(config.eval.iwae_samples),
    iwae_chunk=int(config.eval.iwae_chunk),
    scores=scoring.device_scores(scoring.score_names(config)) if scores is None else scores,
    **kw,
  )


def reference_scores(config, ds, chunk, setup, params, mesh, nap_stats, offset_bits, progress=None) -> list:
  """rapp_sap and complexity of each run's first eval.reference_examples normal training images, reduced over
  conditions as the test scores are: one dict per run (the reference of the sap_complexity score). Each run's
  model scores only its own images (one batch of them when eval.batch_size allows)."""
  picks = [normal_train_order(ds, run) for run in chunk]
  n = max(1, min(int(config.eval.reference_examples), *(p.size for p in picks)))
  idx = np.stack([p[:n] for p in picks])  # (M, n)
  x = ds.x_train[idx]
  scores = score_images(
    config,
    setup,
    params,
    x,
    mesh,
    nap_stats,
    seed=config.seed + 1,
    scores=("iwae", "rapp_sap"),
    batch_size=min(int(config.eval.batch_size), n),
    per_model_images=True,
    progress=progress,
  )
  spec = models.get_model(config.model.name)
  out = []
  for m, run in enumerate(chunk):
    bits = anomaly_scores.png_bits(anomaly_scores.model_view_images(x[m], bool(config.data.binarize)))
    reduced = scoring.reduce_scores(
      run,
      {k: v[m] for k, v in scores.items()},
      ds.y_train[idx[m]],
      conditional=spec.conditional,
      condition_counts=input_pipeline.condition_counts(run, ds.y_train),
      protocol=config.protocol,
      length_bits=bits,
      offset_bits=offset_bits,
    )
    out.append({k: reduced[k] for k in ("rapp_sap", "complexity") if k in reduced})
  return out


def rapp_fit_data(config, ds, chunk):
  """Each run's first eval.rapp_fit_examples normal training images (in a fixed shuffled order) and their
  conditions: uint8 (M, n, H, W), int32 (M, n); n is the smallest run's count if that is fewer."""
  want = int(config.eval.rapp_fit_examples)
  picks = [normal_train_order(ds, run) for run in chunk]
  n = max(1, min(want, *(p.size for p in picks)))
  x = np.stack([ds.x_train[p[:n]] for p in picks])
  cond = np.stack([latents.condition_ids([run], ds.y_train[p[:n]])[0] for run, p in zip(chunk, picks, strict=True)])
  return x, cond


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


def _score_progress(config, ds, chunk, wanted, num_devices: int, show: bool, log) -> scoring.ScoreProgress:
  """The progress of scoring ``chunk`` (a bar when train.progress), after one log line saying what it computes.
  Steps: a NAP fit per run, the test set's batches, the reference batches, the codes, the metrics per run."""
  on_device = scoring.device_scores(wanted)
  iwae = f" (iwae K={config.eval.iwae_samples})" if "iwae" in on_device else ""
  log(f"scoring {len(chunk)} run(s) on {ds.x_test.shape[0]} test images: {', '.join(wanted)}{iwae}")
  n_test = len(list(inference.batch_bounds(ds.x_test.shape[0], config.eval.batch_size, num_devices)))
  n_ref = int(config.eval.reference_examples)
  n_ref = len(list(inference.batch_bounds(n_ref, min(int(config.eval.batch_size), n_ref), num_devices)))
  total = len(chunk) * ("rapp" in on_device) + n_test + n_ref * ("sap_complexity" in wanted) + 1 + len(chunk)
  return scoring.ScoreProgress(len(chunk), total, show=show and bool(config.train.progress))


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
  spec = models.get_model(config.model.name)
  image_shape = ds.image_shape
  num_conditions = len(runs[0].normal)
  mesh = distributed.make_mesh()
  tested = ds.x_test.shape[0] > 0  # data.name=folder without a test set: the runs only train
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
  length_bits = val_length_bits = None
  threshold_method = threshold.choose(
    fpr=float(config.eval.threshold_fpr), contamination=float(config.eval.contamination)
  )
  last_step = 0  # the newest training step scored now (0: nothing scored, every run was finished)
  offset_bits = complexity_offset_bits(config, image_shape)
  if write:
    scoring_state.write_input(workdir, ds)
  metrics_file = open(os.path.join(workdir, "metrics.jsonl"), "a") if write else contextlib.nullcontext()
  tensorboard = (
    summaries.TensorBoardWriter(os.path.join(workdir, "tensorboard"))
    if write and config.train.tensorboard
    else contextlib.nullcontext()
  )
  with metrics_file as log_file, tensorboard as tb:
    for chunk in chunks(runs, int(config.train.runs_per_program)):
      done = [os.path.join(workdir, "runs", f"{r.name}.json") for r in chunk]
      finished = [workdir_lib.finished_run(p, identity) for p in done]
      if not rescore and all(r is not None for r in finished) and (not tested or all("auroc" in r for r in finished)):
        per_run.extend(finished)  # else a test set came since: evaluate now
        total_seconds += per_run[-1].get("chunk_train_seconds", 0.0)
        continue
      state, seconds, _ = trainer.train_runs(
        config,
        ds.x_train,
        ds.y_train,
        chunk,
        os.path.join(workdir, "checkpoints", chunk_name(chunk)),
        image_shape=image_shape,
        num_conditions=num_conditions,
        log_file=log_file,
        mesh=mesh,
        log=log,
        tensorboard=tb,
      )
      total_seconds += seconds
      log(f"trained {len(chunk)} run(s): {seconds:.1f} s")
      setup = train_step.make_setup(config, image_shape, num_conditions, mesh.devices.size)
      wanted = scoring.score_names(config)
      on_device = scoring.device_scores(wanted)
      progress = _score_progress(config, ds, chunk, wanted, mesh.devices.size, show=write, log=log)
      nap_stats = None
      if "rapp" in on_device:
        progress.stage("NAP fit")
        x_fit, cond_fit = rapp_fit_data(config, ds, chunk)
        nap_stats = scoring.fit_rapp(
          setup, state.params, x_fit, cond_fit, mesh, batch_size=config.eval.batch_size, progress=progress
        )
      references: list[dict | None] = [None] * len(chunk)
      if "sap_complexity" in wanted:
        progress.stage("reference")
        references = reference_scores(config, ds, chunk, setup, state.params, mesh, nap_stats, offset_bits, progress)
      if write and nap_stats is not None:  # what scoring new images needs (--mode=predict, Detector)
        for m, run in enumerate(chunk):
          stats = {k: v[m] for k, v in nap_stats.items()}
          counts = input_pipeline.condition_counts(run, ds.y_train)
          scoring_state.write_run(workdir, run.name, stats, references[m] or {}, counts)
      val = None
      if ds.x_val is not None:
        progress.stage("validation")  # only the chunk's classes' validation images, with the same compiled program
        rows = np.flatnonzero(np.isin(ds.y_val, [k for r in chunk for k in r.normal + r.anomalous]))
        val_scores = score_images(config, setup, state.params, ds.x_val[rows], mesh, nap_stats, seed=config.seed + 2)
        if val_length_bits is None and "iwae" in on_device:
          val_length_bits = anomaly_scores.png_bits(
            anomaly_scores.model_view_images(ds.x_val, bool(config.data.binarize))
          )
        val = dict(y=ds.y_val[rows], length_bits=None if val_length_bits is None else val_length_bits[rows])
      if write:
        os.makedirs(os.path.join(workdir, "scores"), exist_ok=True)
      # per run: for metrics, for scores/<run>.npz
      run_val: list[dict | None] = [None] * len(chunk)
      saved_val: list[dict] = [{}] * len(chunk)
      if val is not None:
        run_val = [{**val, "scores": {k: v[m] for k, v in val_scores.items()}} for m in range(len(chunk))]
        saved_val = [
          {
            "y_val": val["y"],
            **({} if val["length_bits"] is None else {"val_length_bits": val["length_bits"]}),
            **{f"val_{k}": v[m] for k, v in val_scores.items()},
          }
          for m in range(len(chunk))
        ]
      if not tested:  # the runs train and set their thresholds on validation; nothing else is evaluated
        for m, run in enumerate(chunk):
          result = metrics.untested_run(
            run,
            validation=run_val[m],
            threshold_method=threshold_method,
            conditional=spec.conditional,
            condition_counts=input_pipeline.condition_counts(run, ds.y_train),
            protocol=config.protocol,
            offset_bits=offset_bits,
            reference=references[m],
          )
          result["chunk_train_seconds"] = seconds
          result["skipped_updates"] = int(distributed.to_host(state.skipped)[m])
          if write:
            if val is not None:
              files.write_npz(os.path.join(workdir, "scores", f"{run.name}.npz"), **saved_val[m])
            files.write_json(done[m], result)
          per_run.append(result)
        log(progress.close())
        continue
      progress.stage("test set")
      scores = score_images(
        config, setup, state.params, ds.x_test, mesh, nap_stats, seed=config.seed, progress=progress
      )
      if length_bits is None and "iwae" in on_device:
        length_bits = anomaly_scores.png_bits(anomaly_scores.model_view_images(ds.x_test, bool(config.data.binarize)))
      progress.stage("codes")
      codes = latents.encode_test_set(
        setup,
        state.params,
        ds.x_test,
        mesh,
        batch_size=config.eval.batch_size,
        conditions=latents.condition_ids(chunk, ds.y_test),
      )
      progress(1)
      progress.stage("metrics")
      pictures = inference.Model(setup, mesh=mesh) if config.train.tensorboard else None
      for m, run in enumerate(chunk):
        if write:
          files.write_npz(
            os.path.join(workdir, "scores", f"{run.name}.npz"),
            y_test=ds.y_test,
            codes=codes[m],
            **({} if length_bits is None else {"length_bits": length_bits}),
            **{name: v[m] for name, v in scores.items()},
            **{f"reference_{k}": v for k, v in (references[m] or {}).items()},
            **saved_val[m],
          )
        result = metrics.evaluate_run(
          run,
          {k: v[m] for k, v in scores.items()},
          ds.y_test,
          conditional=spec.conditional,
          condition_counts=input_pipeline.condition_counts(run, ds.y_train),
          protocol=config.protocol,
          length_bits=length_bits,
          offset_bits=offset_bits,
          reference=references[m],
          validation=run_val[m],
          threshold_method=threshold_method,
          names=wanted,
        )
        result["chunk_train_seconds"] = seconds
        result["skipped_updates"] = int(distributed.to_host(state.skipped)[m])
        result.update(
          latents.disentanglement_results(run, codes[m], ds.y_test, ds.factors_test, ds.factor_names, seed=config.seed)
        )
        if pictures is not None:  # every process computes (the mesh spans them all); process 0 writes
          step_m = int(distributed.to_host(state.step)[m])
          grid = recon_grid.run_reconstructions(
            pictures,
            distributed.to_host(train_step.unstack(state.params, m)),  # host arrays: fine on any process
            run,
            ds.x_test,
            ds.y_test,
            scores["recon"][m],
            score_condition=config.protocol.score_condition,
          )
          if tb is not None:  # AUROC / AUPR of every score and the reconstructions, at the run's last step
            last_step = max(last_step, step_m)
            tb.evaluation(run.name, step_m, result)
            tb.image(run.name, step_m, "reconstructions", grid)
            tb.flush(force=True)
        if write:
          workdir_lib.write_run(done[m], result, identity)
        per_run.append(result)
        progress(1)
      log(progress.close())

  score, selection, table = config.protocol.score, "config", None
  if score == "auto":
    try:
      score, table = metrics.select_score(per_run)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    selection = "validation"
  for result in per_run:  # also the runs of an earlier invocation, which may have had another score
    metrics.set_headline(result, score)
    if write and selection == "validation":
      files.write_json(os.path.join(workdir, "runs", f"{result['run']}.json"), result)
  results = metrics.summarize(
    per_run,
    model=config.model.name,
    dataset=ds.name,
    protocol=run_protocol(config, ds),
    train_seconds=total_seconds,
    complexity_likelihood=complexity_likelihood(config),
    score=score,
    score_selection=selection,
  )
  if table is not None:
    results["score_selection_table"] = table  # mean validation AUROC of every score, best first
  results["settings"] = training_settings(config)
  results["validation"] = validation_section(config, ds)
  if config.protocol.name == "ood":
    results["ood_dataset"] = config.protocol.ood_dataset
  results.update(latents.summarize_disentanglement(per_run))
  results["num_devices"] = mesh.devices.size
  results["num_processes"] = jax.process_count()
  results["backend"] = jax.default_backend()
  results["image_shape"] = list(image_shape)
  if ds.class_names is not None:
    results["class_names"] = list(ds.class_names)
  if not tested:
    results["note"] = f"no test images in {ds.source}: the runs were trained, not evaluated (no AUROC)"
  if write and last_step and config.train.tensorboard:  # the mean over runs, beside each run's
    with summaries.TensorBoardWriter(os.path.join(workdir, "tensorboard")) as tb:
      tb.evaluation("mean", last_step, results)
  if write:
    if "threshold" in results:
      t = results["threshold"]
      keep = ("threshold", "val_fpr", "n_val_normal")
      files.write_json(
        os.path.join(workdir, "thresholds.json"),
        {
          "score": t["score"],
          "method": t["method"],
          "target": t["target"],
          "runs": {name: {k: v[k] for k in keep} for name, v in t["runs"].items()},
        },
      )
    workdir_lib.write_results(config, workdir, results)
  return results
