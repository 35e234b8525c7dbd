"""``train_and_evaluate(config, workdir)``: the whole job, importable from Colab and tests.

Workdir layout:
  config.json        the config in force (a rerun must be compatible with it)
  metrics.jsonl      per-step loss terms of every run (JSON lines)
  tensorboard/<run>/ the same as TensorBoard event files, with train.tensorboard=True
  checkpoints/<chunk>/  Orbax checkpoints of each group of runs trained together
  scores/<run>.npz   every test image's scores under every condition (recon, nelbo: (N_test, C')), y_test
  runs/<run>.json    per-run results, written when a run's evaluation finishes (finished runs are not redone)
  results.json       the summary (see metrics.summarize)
"""

from __future__ import annotations

import contextlib
import json
import os

import jax
import numpy as np

from dcvae_jax import distributed, files
from dcvae_jax.data import datasets as data_lib
from dcvae_jax.data import input_pipeline, protocols
from dcvae_jax.errors import WorkdirError
from dcvae_jax.evaluators import anomaly_scores, latents, metrics, scoring
from dcvae_jax.log import log as _log
from dcvae_jax.models import objectives
from dcvae_jax.models import registry as models
from dcvae_jax.train import checkpoints, train_step, trainer
from dcvae_jax.train import tensorboard as summaries
from dcvae_jax.validation import validate
from dcvae_jax.workdir import WorkdirLock, check_workdir


def complexity_likelihood(config) -> str:
  """Which likelihood the complexity score's -log2 p(x) came from, and whether it is a density of the data."""
  lik = config.model.likelihood
  if lik == "gaussian":
    lik += f" ({config.model.get('gaussian_variance', 'fixed')} variance)"
  data = (
    "binarised pixels"
    if config.data.binarize
    else ("dequantised grey levels" if config.data.get("dequantize", False) else "grey levels")
  )
  normalised = objectives.is_density(
    config.model.likelihood, binarize=bool(config.data.binarize), dequantize=bool(config.data.get("dequantize", False))
  )
  return f"{lik} on {data}" + ("" if normalised else " (NOT a normalised density: complexity is not meaningful)")


def normal_train_order(ds, run) -> np.ndarray:
  """The run's normal training images in a fixed shuffled order (drawn from (seed, uid)): the images that fit
  RaPP's NAP and standardise sap_complexity come from its front."""
  idx = np.flatnonzero(np.isin(ds.y_train, run.normal))
  return idx[np.random.default_rng([run.seed, run.uid, 7]).permutation(idx.size)]


def score_images(config, setup, params, x, mesh, nap_stats, *, seed: int) -> dict:
  """Every device score of uint8 images ``x`` under every stacked model, with the config's eval settings."""
  return scoring.score_test_set(
    setup,
    params,
    x,
    mesh,
    batch_size=config.eval.batch_size,
    num_samples=config.eval.elbo_samples,
    seed=seed,
    nap_stats=nap_stats,
    iwae_samples=int(config.eval.iwae_samples),
    iwae_chunk=int(config.eval.iwae_chunk),
  )


def reference_scores(config, ds, chunk, setup, params, mesh, nap_stats, offset_bits) -> list:
  """rapp_sap and complexity of each run's first eval.reference_examples normal training images, reduced over
  conditions as the test scores are: one dict per run (the reference of the sap_complexity score)."""
  picks = [normal_train_order(ds, run) for run in chunk]
  n = max(1, min(int(config.eval.get("reference_examples", 200)), *(p.size for p in picks)))
  idx = np.concatenate([p[:n] for p in picks])
  x = ds.x_train[idx]
  scores = score_images(config, setup, params, x, mesh, nap_stats, seed=config.seed + 1)
  bits = anomaly_scores.png_bits(anomaly_scores.model_view_images(x, bool(config.data.binarize)))
  spec = models.get_model(config.model.name)
  out = []
  for m, run in enumerate(chunk):
    rows = slice(m * n, (m + 1) * n)
    reduced = scoring.reduce_scores(
      run,
      {k: v[m, rows] for k, v in scores.items()},
      ds.y_train[idx[rows]],
      conditional=spec.conditional,
      condition_counts=input_pipeline.condition_counts(run, ds.y_train),
      protocol=config.protocol,
      length_bits=bits[rows],
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
  cond = np.stack([latents.condition_ids([run], ds.y_train[p[:n]])[0] for run, p in zip(chunk, picks)])
  return x, cond


def load_data(config) -> data_lib.Dataset:
  return data_lib.load_dataset(
    config.data.name,
    config.data.data_dir,
    tfds_data_dir=config.data.tfds_data_dir or None,
    download=config.data.download,
  )


def chunks(runs, size: int):
  size = len(runs) if size <= 0 else size
  return [runs[i : i + size] for i in range(0, len(runs), size)]


def chunk_name(chunk) -> str:
  return chunk[0].name if len(chunk) == 1 else f"{chunk[0].name}--{chunk[-1].name}"


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

  rescore: score finished runs again from their final checkpoints (new scores, other eval settings)."""
  validate(config, num_devices=jax.device_count())
  ds = dataset if dataset is not None else load_data(config)
  runs = protocols.make_runs(config.protocol, ds.num_classes, config.seed, config.num_seeds)
  if not distributed.is_primary():  # process 0 owns the workdir's files; the others train with it
    return _train_and_evaluate(config, workdir, ds, runs, lambda *_: None, write=False, rescore=rescore)
  with WorkdirLock(workdir, log=log):
    check_workdir(config, workdir)
    return _train_and_evaluate(config, workdir, ds, runs, log, rescore=rescore)


def _train_and_evaluate(config, workdir, ds, runs, log, write: bool = True, rescore: bool = False) -> dict:
  spec = models.get_model(config.model.name)
  image_shape = (*ds.x_train.shape[1:], 1)
  num_conditions = len(runs[0].normal)
  mesh = distributed.make_mesh()
  if write:
    os.makedirs(os.path.join(workdir, "runs"), exist_ok=True)
  log(
    f"{config.model.name} on {ds.name} ({ds.source}): {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} "
    f"test images, protocol {config.protocol.name}, {len(runs)} run(s), {mesh.devices.size} device(s)"
  )
  if spec.regularizer is objectives.decomposed_regularizer:
    log(_estimator_group_message(config, spec, runs[0], ds.y_train, mesh.devices.size))

  per_run, total_seconds = [], 0.0
  length_bits = None
  offset_bits = anomaly_scores.density_offset_bits(
    int(np.prod(image_shape)),
    is_continuous=config.model.likelihood != "bernoulli",
    dequantize=bool(config.data.get("dequantize", False)),
  )
  metrics_file = open(os.path.join(workdir, "metrics.jsonl"), "a") if write else contextlib.nullcontext()
  tensorboard = (
    summaries.TensorBoardWriter(os.path.join(workdir, "tensorboard"))
    if write and config.train.get("tensorboard", False)
    else contextlib.nullcontext()
  )
  with metrics_file as log_file, tensorboard as tb:
    for chunk in chunks(runs, int(config.train.runs_per_program)):
      done = [os.path.join(workdir, "runs", f"{r.name}.json") for r in chunk]
      if not rescore and all(os.path.exists(p) for p in done):
        for p in done:
          with open(p) as f:
            per_run.append(json.load(f))
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
      setup = train_step.make_setup(config, image_shape, num_conditions, mesh.devices.size)
      x_fit, cond_fit = rapp_fit_data(config, ds, chunk)
      nap_stats = scoring.fit_rapp(setup, state.params, x_fit, cond_fit, mesh, batch_size=config.eval.batch_size)
      scores = score_images(config, setup, state.params, ds.x_test, mesh, nap_stats, seed=config.seed)
      if length_bits is None:
        length_bits = anomaly_scores.png_bits(anomaly_scores.model_view_images(ds.x_test, bool(config.data.binarize)))
      references = reference_scores(config, ds, chunk, setup, state.params, mesh, nap_stats, offset_bits)
      codes = latents.encode_test_set(
        setup,
        state.params,
        ds.x_test,
        mesh,
        batch_size=config.eval.batch_size,
        conditions=latents.condition_ids(chunk, ds.y_test),
      )
      if write:
        os.makedirs(os.path.join(workdir, "scores"), exist_ok=True)
      for m, run in enumerate(chunk):
        if write:
          np.savez(
            os.path.join(workdir, "scores", f"{run.name}.npz"),
            y_test=ds.y_test,
            codes=codes[m],
            length_bits=length_bits,
            **{name: v[m] for name, v in scores.items()},
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
        )
        result["chunk_train_seconds"] = seconds
        result["skipped_updates"] = int(distributed.to_host(state.skipped)[m])
        result.update(
          latents.disentanglement_results(run, codes[m], ds.y_test, ds.factors_test, ds.factor_names, seed=config.seed)
        )
        if write:
          files.write_json(done[m], result)
        per_run.append(result)

  results = metrics.summarize(
    per_run,
    model=config.model.name,
    dataset=ds.name,
    protocol=config.protocol,
    train_seconds=total_seconds,
    complexity_likelihood=complexity_likelihood(config),
  )
  results.update(latents.summarize_disentanglement(per_run))
  results["num_devices"] = mesh.devices.size
  results["num_processes"] = jax.process_count()
  results["backend"] = jax.default_backend()
  if write:
    files.write_json(os.path.join(workdir, "results.json"), results)
  return results


class Trained:
  """A finished workdir, reloaded: config, data, runs, the model setup and each run's parameters.

  ``params[run.name]`` is one run's VAE params (a pytree without the model axis); ``encode``/``decode``
  helpers for figures: ``inference.Model``.
  """

  def __init__(self, config, dataset, runs, setup, params, mesh):
    self.config, self.dataset, self.runs, self.setup, self.params, self.mesh = (
      config,
      dataset,
      runs,
      setup,
      params,
      mesh,
    )


def load_config(workdir: str):
  import ml_collections

  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{workdir} has no config.json: not a trained workdir")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_trained(workdir: str, *, dataset: data_lib.Dataset | None = None) -> Trained:
  """Reload every run's trained parameters from the workdir's newest good checkpoints."""
  config = load_config(workdir)
  ds = dataset if dataset is not None else load_data(config)
  runs = protocols.make_runs(config.protocol, ds.num_classes, config.seed, config.num_seeds)
  image_shape = (*ds.x_train.shape[1:], 1)
  num_conditions = len(runs[0].normal)
  mesh = distributed.make_mesh()
  setup = train_step.make_setup(config, image_shape, num_conditions, mesh.devices.size)
  params = {}
  for chunk in chunks(runs, int(config.train.runs_per_program)):
    target = train_step.stack_states([train_step.init_state(setup, train_step.run_key(r), image_shape) for r in chunk])
    ckpt = os.path.join(workdir, "checkpoints", chunk_name(chunk))
    if not os.path.isdir(ckpt):
      raise WorkdirError(f"{workdir}: runs {chunk_name(chunk)} were not trained (no {ckpt})")
    with checkpoints.checkpoint_manager(ckpt, config.train.keep_checkpoints) as manager:
      state, _ = checkpoints.restore_latest(manager, target)
    if state is None:
      raise WorkdirError(f"{ckpt} holds no checkpoint")
    for m, run in enumerate(chunk):
      params[run.name] = train_step.unstack(state.params, m)
  return Trained(config, ds, runs, setup, params, mesh)
