"""The ``detection`` evaluator: anomaly scores of every run's validation and test images, their detection
metrics and decision thresholds (docs/design.md "Anomaly scores").

For each group of runs: RaPP's NAP fit on the run's first eval.rapp_fit_examples normal training images (in a
fixed order, :func:`normal_train_order`), latent_knn's banks of training codes (all of them, in that order,
evaluators/latent_knn.py), the reference of the standardised sums on the first eval.reference_examples of them
(:func:`reference_scores`), the scores of the run's validation images and of the test set (scoring.py),
then ``metrics.evaluate_run`` (``untested_run`` without test images). It writes what scoring new images needs
(scoring/, evaluators/scoring_state.py) and hands back each run's metrics and its scores for scores/<run>.npz
(test scores by name, ``y_test``, ``length_bits``, ``reference_<score>``, and the validation images' as
``val_<score>``, ``y_val``, ``val_length_bits``). Its summary: the headline score (protocol.score, or chosen on
validation for "auto"), the means over runs and the decision thresholds.
"""

from __future__ import annotations

import os

import numpy as np

from dcvae_jax import workdir as workdir_lib
from dcvae_jax.data import input_pipeline
from dcvae_jax.errors import ConfigError
from dcvae_jax.evaluators import anomaly_scores, base, latent_knn, latents, metrics, scoring, scoring_state, threshold
from dcvae_jax.models import inference, objectives
from dcvae_jax.models import registry as models


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


def image_bits(config, x) -> np.ndarray:
  """L(x) of uint8 images ``x`` as the model sees them (binarised or not) under eval.complexity_compressor:
  float64 (N,), the complexity score's code length."""
  view = anomaly_scores.model_view_images(x, bool(config.data.binarize))
  return anomaly_scores.length_bits(view, str(config.eval.complexity_compressor))


def complexity_offset_bits(config, image_shape) -> float:
  """The complexity score's D log2(bins) for the config's likelihood and images (H, W, C)."""
  return anomaly_scores.density_offset_bits(
    int(np.prod(image_shape)),
    is_continuous=config.model.likelihood != "bernoulli",
    dequantize=bool(config.data.dequantize),
  )


def score_images(
  config, setup, params, x, mesh, nap_stats, *, seed: int, scores=None, batch_size=None, banks=None, exclude=None, **kw
) -> dict:
  """The per-condition scores of uint8 images ``x`` under every stacked model, with the config's eval settings:
  the device scores ``scores`` (default: what eval.scores needs), and latent_knn when ``banks``
  (latent_knn.build_banks) are given (``exclude``: each image's own bank row, see latent_knn.knn_scores).
  ``kw``: scoring.score_test_set's per_model_images, progress, zero_condition (default: only for
  protocol.score_condition "given", the one reduction that reads the all-zero condition's column; otherwise that
  column is NaN and its passes are not made)."""
  kw.setdefault("zero_condition", config.protocol.score_condition == "given")
  batch = config.eval.batch_size if batch_size is None else batch_size
  out = _device_scores(config, setup, params, x, mesh, nap_stats, seed=seed, scores=scores, batch_size=batch, **kw)
  if banks is not None:
    out["latent_knn"] = latent_knn.knn_scores(
      setup,
      params,
      x,
      banks,
      mesh,
      batch_size=batch,
      per_model_images=bool(kw.get("per_model_images", False)),
      exclude=exclude,
      neighbours=int(config.eval.knn_neighbours),
    )
  return out


def _device_scores(config, setup, params, x, mesh, nap_stats, *, seed, scores, batch_size, **kw) -> dict:
  return scoring.score_test_set(
    setup,
    params,
    x,
    mesh,
    batch_size=batch_size,
    num_samples=config.eval.elbo_samples,
    seed=seed,
    nap_stats=nap_stats,
    iwae_samples=int(config.eval.iwae_samples),
    iwae_chunk=int(config.eval.iwae_chunk),
    scores=scoring.device_scores(scoring.score_names(config)) if scores is None else scores,
    **kw,
  )


def reference_scores(config, ds, runs, setup, params, mesh, nap_stats, offset_bits, progress=None, banks=None) -> list:
  """rapp_sap, complexity and (with ``banks``) latent_knn of each run's first eval.reference_examples normal
  training images, reduced over conditions as the test scores are: one dict per run (the reference of the
  standardised sums). Each run's model scores only its own images (one batch of them when eval.batch_size
  allows), with the job's device scores: the one compiled program that also scores the validation and test
  images (only rapp_sap and iwae are read). A reference image is row i of its run's bank (both follow
  normal_train_order), which its latent_knn leaves out."""
  picks = [normal_train_order(ds, run) for run in runs]
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
    batch_size=min(int(config.eval.batch_size), n),
    per_model_images=True,
    progress=progress,
    banks=banks,
    exclude=np.broadcast_to(np.arange(n), idx.shape),
  )
  spec = models.get_model(config.model.name)
  out = []
  for m, run in enumerate(runs):
    bits = image_bits(config, x[m])
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
    out.append({k: reduced[k] for k in scoring.REFERENCE_SCORES if k in reduced})
  return out


def rapp_fit_data(config, ds, runs):
  """Each run's first eval.rapp_fit_examples normal training images (in a fixed shuffled order) and their
  conditions: uint8 (M, n, H, W), int32 (M, n); n is the smallest run's count if that is fewer."""
  want = int(config.eval.rapp_fit_examples)
  picks = [normal_train_order(ds, run) for run in runs]
  n = max(1, min(want, *(p.size for p in picks)))
  x = np.stack([ds.x_train[p[:n]] for p in picks])
  cond = np.stack([latents.condition_ids([run], ds.y_train[p[:n]])[0] for run, p in zip(runs, picks, strict=True)])
  return x, cond


class Evaluator(base.Evaluator):
  """Anomaly scores, detection metrics and decision thresholds (see the module docstring)."""

  def __init__(self, job: base.Job):
    super().__init__(job)
    config, ds = job.config, job.data
    self.spec = models.get_model(config.model.name)
    self.wanted = scoring.score_names(config)
    self.on_device = scoring.device_scores(self.wanted)
    self.offset_bits = complexity_offset_bits(config, ds.image_shape)
    self.threshold_method = threshold.choose(
      fpr=float(config.eval.threshold_fpr), contamination=float(config.eval.contamination)
    )
    self.tested = ds.x_test.shape[0] > 0  # data.name=folder without a test set: validation only
    self._length_bits: np.ndarray | None = None  # L(x) of the test images (image_bits), once
    self._val_length_bits: np.ndarray | None = None  # and of the validation images
    if job.write:
      scoring_state.write_input(job.workdir, ds)

  def describe(self) -> str:
    iwae = f" (iwae K={self.job.config.eval.iwae_samples})" if "iwae" in self.on_device else ""
    return f"{', '.join(self.wanted)}{iwae}"

  def steps(self, runs) -> int:
    """A NAP fit per run, the reference batches, the test set's batches, the metrics of each run."""
    config, n_dev = self.job.config, self.job.mesh.devices.size
    n_test = len(list(inference.batch_bounds(self.job.data.x_test.shape[0], config.eval.batch_size, n_dev)))
    n_ref = int(config.eval.reference_examples)
    n_ref = len(list(inference.batch_bounds(n_ref, min(int(config.eval.batch_size), n_ref), n_dev)))
    return len(runs) * ("rapp" in self.on_device) + n_test + n_ref * scoring.needs_reference(self.wanted) + len(runs)

  def complete(self, result: dict) -> bool:
    return not self.tested or "auroc" in result  # else a test set came since, or "auto" chose no headline yet

  def run(self, group: base.Group) -> base.Part:
    config, ds, mesh, runs = self.job.config, self.job.data, self.job.mesh, group.runs
    params, progress = group.state.params, group.progress
    nap_stats = None
    if "rapp" in self.on_device:
      progress.stage("NAP fit")
      x_fit, cond_fit = rapp_fit_data(config, ds, runs)
      nap_stats = scoring.fit_rapp(
        group.setup, params, x_fit, cond_fit, mesh, batch_size=config.eval.batch_size, progress=progress
      )
    banks = None
    if scoring.needs_knn(self.wanted):
      progress.stage("latent_knn banks")
      orders = [normal_train_order(ds, run) for run in runs]
      banks = latent_knn.build_banks(
        group.setup, params, ds.x_train, ds.y_train, runs, orders, mesh, batch_size=config.eval.batch_size
      )
    references: list[dict | None] = [None] * len(runs)
    if scoring.needs_reference(self.wanted):
      progress.stage("reference")
      references = reference_scores(
        config, ds, runs, group.setup, params, mesh, nap_stats, self.offset_bits, progress, banks=banks
      )
    if self.job.write and nap_stats is not None:  # what scoring new images needs (--mode=predict, Detector)
      for m, run in enumerate(runs):
        stats = {k: v[m] for k, v in nap_stats.items()}
        counts = input_pipeline.condition_counts(run, ds.y_train)
        bank = None if banks is None else banks[m]
        scoring_state.write_run(self.job.workdir, run.name, stats, references[m] or {}, counts, bank=bank)
    run_val, saved_val = self._validation(group, nap_stats, banks)
    common = [
      dict(
        conditional=self.spec.conditional,
        condition_counts=input_pipeline.condition_counts(run, ds.y_train),
        protocol=config.protocol,
        offset_bits=self.offset_bits,
        reference=references[m],
        validation=run_val[m],
        threshold_method=self.threshold_method,
      )
      for m, run in enumerate(runs)
    ]
    if not self.tested:  # the runs set their thresholds on validation; nothing else is evaluated
      return base.Part([metrics.untested_run(run, **common[m]) for m, run in enumerate(runs)], saved_val)
    progress.stage("test set")
    scores = score_images(
      config, group.setup, params, ds.x_test, mesh, nap_stats, seed=config.seed, progress=progress, banks=banks
    )
    if self._length_bits is None and "iwae" in self.on_device:
      self._length_bits = image_bits(config, ds.x_test)
    progress.stage("metrics")
    part = base.Part.empty(len(runs))
    for m, run in enumerate(runs):
      run_scores = {k: v[m] for k, v in scores.items()}
      part.arrays[m] = {
        "y_test": ds.y_test,
        **({} if self._length_bits is None else {"length_bits": self._length_bits}),
        **run_scores,
        **{f"reference_{k}": v for k, v in (references[m] or {}).items()},
        **saved_val[m],
      }
      part.results[m] = metrics.evaluate_run(
        run, run_scores, ds.y_test, length_bits=self._length_bits, names=self.wanted, **common[m]
      )
      progress(1)
    return part

  def _validation(self, group: base.Group, nap_stats, banks=None) -> tuple[list, list]:
    """Each run's validation scores for metrics.evaluate_run (None: no validation split) and for its npz.
    Only the group's classes' validation images are scored, with the same compiled program as the test set."""
    config, ds, n = self.job.config, self.job.data, len(group.runs)
    if ds.x_val is None:
      return [None] * n, [{} for _ in range(n)]
    group.progress.stage("validation")
    rows = np.flatnonzero(np.isin(ds.y_val, [k for r in group.runs for k in r.normal + r.anomalous]))
    val_scores = score_images(
      config,
      group.setup,
      group.state.params,
      ds.x_val[rows],
      self.job.mesh,
      nap_stats,
      seed=config.seed + 2,
      banks=banks,
    )
    if self._val_length_bits is None and "iwae" in self.on_device:
      self._val_length_bits = image_bits(config, ds.x_val)
    y, bits = ds.y_val[rows], None if self._val_length_bits is None else self._val_length_bits[rows]
    run_val = [dict(y=y, length_bits=bits, scores={k: v[m] for k, v in val_scores.items()}) for m in range(n)]
    saved_val = [
      {
        "y_val": y,
        **({} if bits is None else {"val_length_bits": bits}),
        **{f"val_{k}": v[m] for k, v in val_scores.items()},
      }
      for m in range(n)
    ]
    return run_val, saved_val

  def summarize(self, per_run: list[dict], results: dict) -> dict:
    """The headline score (protocol.score; "auto": the best mean validation AUROC, and every run's results
    rewritten with it) and the detection summary (metrics.summarize; its ``threshold`` section is what
    workdir.write_results copies to thresholds.json)."""
    config, workdir = self.job.config, self.job.workdir
    score, selection, table = config.protocol.score, "config", None
    if score == "auto":
      try:
        score, table = metrics.select_score(per_run)
      except ValueError as e:
        raise ConfigError(str(e)) from None
      selection = "validation"
    for result in per_run:  # also the runs of an earlier invocation, which may have had another score
      metrics.set_headline(result, score)
      if self.job.write and selection == "validation":  # with the identity: the next same job reuses it
        workdir_lib.write_run(os.path.join(workdir, "runs", f"{result['run']}.json"), result, self.job.identity)
    out = metrics.summarize(
      per_run,
      score=score,
      score_condition=config.protocol.score_condition,
      score_selection=selection,
      complexity_likelihood=complexity_likelihood(config),
    )
    if table is not None:
      out["score_selection_table"] = table  # mean validation AUROC of every score, best first
    return out
