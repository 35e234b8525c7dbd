"""``validate(config)``: every config field with a fixed set of values or a range, checked before anything is
loaded or trained. A bad field raises one ``ConfigError`` (``ProtocolError`` for the protocol's name) naming
the field, its value and what is allowed. This module is the one place that rejects a bad config value: the
functions that act on a value and can be called without ``validate`` (the model registry, the protocols, the
optimizer, the batch sampler, the reduction over conditions) call its ``check_*`` functions rather than
phrasing their own. Checks that need the data (classes in range, enough examples per run) happen where the
data is read: ``protocols.make_runs`` and ``input_pipeline.RunData.build``."""

from __future__ import annotations

from dcvae_jax import options
from dcvae_jax.errors import ConfigError, ProtocolError
from dcvae_jax.options import sampling_options


def check_choice(value, allowed, field: str) -> None:
  """ConfigError unless ``value`` is one of ``allowed`` (the tuples of ``options``)."""
  if value not in allowed:
    raise ConfigError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")


def check_model_name(name: str) -> None:
  if name not in options.MODEL_NAMES:
    raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(options.MODEL_NAMES))}")


def check_protocol_name(name: str) -> None:
  if name not in options.PROTOCOLS:
    raise ProtocolError(f"unknown protocol {name!r}; known protocols: {', '.join(options.PROTOCOLS)}")


def check_score_condition(how: str) -> None:
  if how not in options.SCORE_CONDITIONS:
    raise ConfigError(f"unknown score_condition {how!r}; known: {', '.join(options.SCORE_CONDITIONS)}")


def check_stratified(batch_size: int, per_condition: int, conditions_per_batch: int, given: tuple = ()) -> None:
  """Stratified batches: batch_size = conditions_per_batch x per_condition, both >= 1 (``given``: the
  (per_condition, conditions_per_batch) of the config, before a 0 was derived from the other)."""
  p, k = int(per_condition), int(conditions_per_batch)
  if p < 1 or k < 1 or p * k != int(batch_size):
    p0, k0 = given or (p, k)
    raise ConfigError(
      f"train.batch_sampling='stratified' needs train.batch_size = train.conditions_per_batch x "
      f"train.per_condition, got batch_size={batch_size}, conditions_per_batch={k0}, per_condition={p0}"
      + (" (0 = batch_size / the other, which must divide it)" if 0 in (p0, k0) else "")
    )


def validate(config, num_devices: int = 1) -> None:
  """Raise ConfigError (or ProtocolError) for the first field of ``config`` outside its allowed values;
  ``num_devices``: the devices the batch is split over."""
  m, t, e, p = config.model, config.train, config.eval, config.protocol
  check_model_name(m.name)
  check_choice(m.arch, options.ARCHS, "model.arch")
  check_choice(m.compute_dtype, options.COMPUTE_DTYPES, "model.compute_dtype")
  check_choice(m.likelihood, options.LIKELIHOODS, "model.likelihood")
  check_choice(m.gaussian_variance, options.GAUSSIAN_VARIANCES, "model.gaussian_variance")
  check_choice(m.estimator, options.ESTIMATORS, "model.estimator")
  check_choice(m.tc_scope, options.TC_SCOPES, "model.tc_scope")
  if config.data.dequantize and config.data.binarize:
    raise ConfigError("data.dequantize=True needs grey levels: set data.binarize=False")
  _check_image_shape(config.data)

  if int(t.num_epochs) < 1 or int(t.batch_size) < 1:
    raise ConfigError("train.num_epochs and train.batch_size must be positive")
  if int(t.batch_size) % num_devices:
    raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by the {num_devices} devices")
  check_choice(t.on_nonfinite, options.ON_NONFINITE, "train.on_nonfinite")
  check_choice(t.lr_schedule, options.LR_SCHEDULES, "train.lr_schedule")
  check_choice(t.ensemble, options.ENSEMBLE_MODES, "train.ensemble")
  _check_sampling(config, num_devices)

  if (
    int(e.iwae_samples) < 1
    or int(e.iwae_chunk) < 1
    or (int(e.iwae_samples) % min(int(e.iwae_chunk), int(e.iwae_samples)))
  ):
    raise ConfigError(
      f"eval.iwae_samples ({e.iwae_samples}) must be a positive multiple of eval.iwae_chunk ({e.iwae_chunk})"
    )
  if int(e.rapp_fit_examples) < 2 or int(e.reference_examples) < 2:
    raise ConfigError("eval.rapp_fit_examples and eval.reference_examples must be at least 2")
  k = e.knn_neighbours
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ConfigError(f"eval.knn_neighbours must be a whole number of at least 1, got {k!r}")
  _check_compressor(e.complexity_compressor)

  check_protocol_name(p.name)
  if p.score not in options.SCORES + ("auto",):
    raise ConfigError(f"unknown score {p.score!r}; known: {', '.join(options.SCORES + ('auto',))}")
  _check_validation(config)
  _check_scores(e.scores, p.score)
  check_evaluators(e.evaluators)
  check_score_condition(p.score_condition)
  knn = [s for s in (e.scores or options.SCORES) if s.endswith("_knn")]
  if knn and p.score_condition == "given":
    raise ConfigError(
      f"eval.scores {', '.join(knn)} have no bank for the all-zero condition that score_condition 'given' reads: "
      "use protocol.score_condition=min (or marginal), or leave them out of eval.scores"
    )


def _check_image_shape(data) -> None:
  """data.image_size: () (auto), an int or (H, W); data.channels: 0 (auto), 1 or 3; only for data.name=folder."""
  size, channels = data.image_size, data.channels
  try:
    size = options.image_size_arg(size)
  except ValueError:
    raise ConfigError(f"data.image_size must be () (auto), a positive int or (height, width), got {size!r}") from None
  if channels not in options.CHANNELS or isinstance(channels, bool):
    raise ConfigError(f"data.channels must be 0 (auto), 1 (grey) or 3 (colour), got {channels!r}")
  if (size or channels) and str(data.name).strip().lower() != "folder":
    raise ConfigError(
      f"data.image_size and data.channels apply to data.name=folder (your own images), not to {data.name!r}"
    )


def check_evaluators(names) -> None:
  """eval.evaluators: a tuple of known evaluator names (empty: the runs are only trained), each with the
  evaluators it reads."""
  known = ", ".join(options.EVALUATORS)
  if isinstance(names, str) or not all(isinstance(n, str) for n in names):
    raise ConfigError(f"eval.evaluators must be a tuple of evaluator names, got {names!r}; known: {known}")
  for name in names:
    if name not in options.EVALUATORS:
      hint = ", as a tuple of quoted names: --config.eval.evaluators=\"('detection','latents')\"" if "," in name else ""
      raise ConfigError(f"eval.evaluators: unknown evaluator {name!r}; known: {known}{hint}")
    missing = [n for n in options.EVALUATOR_NEEDS.get(name, ()) if n not in names]
    if missing:
      raise ConfigError(f"eval.evaluators: {name!r} reads the results of {missing[0]!r}: add it")


def _check_compressor(compressor) -> None:
  """eval.complexity_compressor: a known lossless compressor that this Pillow can write."""
  check_choice(compressor, options.COMPLEXITY_COMPRESSORS, "eval.complexity_compressor")
  if compressor == "jpeg2000":
    from PIL import features

    if not features.check_codec("jpg_2000"):
      raise ConfigError(
        "eval.complexity_compressor=jpeg2000 needs Pillow built with OpenJPEG (the PyPI wheels have it); "
        "use png or reinstall pillow from its wheel"
      )


def _check_scores(scores, headline: str) -> None:
  """eval.scores: a tuple of known score names (empty: all of them) that holds the headline protocol.score."""
  if isinstance(scores, str) or not all(isinstance(s, str) for s in scores):
    raise ConfigError(f"eval.scores must be a tuple of score names, got {scores!r}; known: {', '.join(options.SCORES)}")
  unknown = [s for s in scores if s not in options.SCORES]
  if unknown:
    hint = ", as a tuple of quoted names: --config.eval.scores=\"('recon','iwae')\"" if "," in unknown[0] else ""
    raise ConfigError(f"eval.scores: unknown score {unknown[0]!r}; known: {', '.join(options.SCORES)}{hint}")
  if scores and headline != "auto" and headline not in scores:
    raise ConfigError(
      f"protocol.score={headline!r} is not among eval.scores ({', '.join(scores)}): add it there or pick one of those"
    )


def _check_sampling(config, num_devices: int) -> None:
  """train.batch_sampling and, for "stratified", batch_size = conditions_per_batch x per_condition (either may
  be 0 = derived from the other), with whole groups on each device under model.tc_scope="local"."""
  t = config.train
  mode = t.batch_sampling
  check_choice(mode, options.BATCH_SAMPLING, "train.batch_sampling")
  if mode == "uniform":
    return
  batch, p, k = int(t.batch_size), int(t.per_condition), int(t.conditions_per_batch)
  if p < 0 or k < 0 or (p == 0 and k == 0):
    raise ConfigError(
      "train.batch_sampling='stratified' needs train.per_condition or train.conditions_per_batch "
      f">= 1, got per_condition={p}, conditions_per_batch={k}"
    )
  derived = sampling_options(config)
  check_stratified(batch, derived["per_condition"], derived["conditions_per_batch"], given=(p, k))
  k = derived["conditions_per_batch"]
  shards = int(num_devices) if config.model.tc_scope == "local" else 1
  if k % shards:
    raise ConfigError(
      f"model.tc_scope='local' splits each batch over {shards} devices, so "
      f"train.conditions_per_batch={k} must be a multiple of {shards} (whole groups per device)"
    )


def _check_validation(config) -> None:
  """data.validation_fraction, protocol.score="auto" (needs a validation split), the threshold's rates, and the
  ood protocol's dataset (named, and not data.name itself)."""
  d, e, p = config.data, config.eval, config.protocol
  fraction = float(d.validation_fraction)
  if not 0.0 <= fraction < 1.0:
    raise ConfigError(f"data.validation_fraction must be in [0, 1), got {fraction}")
  if p.score == "auto" and fraction == 0.0:
    raise ConfigError(
      "protocol.score='auto' chooses the score on the validation split, and data.validation_fraction=0 turns it off"
    )
  if not 0.0 < float(e.threshold_fpr) < 1.0:
    raise ConfigError(f"eval.threshold_fpr must be in (0, 1), got {e.threshold_fpr}")
  if not 0.0 <= float(e.contamination) < 1.0:
    raise ConfigError(f"eval.contamination must be in [0, 1) (0 = use eval.threshold_fpr), got {e.contamination}")
  if p.name == "ood":
    ood = str(p.ood_dataset).strip()
    if not ood:
      raise ConfigError("protocol.name='ood' needs protocol.ood_dataset (the dataset whose test images are anomalies)")
    if ood.lower() == str(d.name).strip().lower():
      raise ConfigError(f"protocol.ood_dataset must differ from data.name ({d.name!r}): its images are not anomalies")
