"""``validate(config)``: every config field with a fixed set of values or a range, checked before anything is
loaded or trained. A bad field raises one ``ConfigError`` (``ProtocolError`` for the protocol's name) naming
the field, its value and what is allowed. Checks that need the data (classes in range, enough examples per
run) happen where the data is read: ``protocols.make_runs`` and ``input_pipeline.RunData.build``."""

from __future__ import annotations

from dcvae_jax.data.input_pipeline import BATCH_SAMPLING, sampling_options
from dcvae_jax.data.protocols import PROTOCOLS
from dcvae_jax.errors import ConfigError, ProtocolError
from dcvae_jax.evaluators.scoring import SCORE_CONDITIONS, SCORES
from dcvae_jax.models import estimators, networks
from dcvae_jax.models import registry as models
from dcvae_jax.train.train_step import ENSEMBLE_MODES, LR_SCHEDULES, ON_NONFINITE, TC_SCOPES


def _one_of(value, allowed, field: str) -> None:
  if value not in allowed:
    raise ConfigError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")


def validate(config, num_devices: int = 1) -> None:
  """Raise ConfigError (or ProtocolError) for the first field of ``config`` outside its allowed values;
  ``num_devices``: the devices the batch is split over."""
  m, t, e, p = config.model, config.train, config.eval, config.protocol
  models.get_model(m.name)
  _one_of(m.arch, tuple(networks.ENCODERS), "model.arch")
  _one_of(m.get("compute_dtype", "float32"), models.COMPUTE_DTYPES, "model.compute_dtype")
  _one_of(m.likelihood, models.LIKELIHOODS, "model.likelihood")
  _one_of(m.get("gaussian_variance", "fixed"), models.GAUSSIAN_VARIANCES, "model.gaussian_variance")
  _one_of(m.estimator, estimators.METHODS, "model.estimator")
  _one_of(m.tc_scope, TC_SCOPES, "model.tc_scope")
  if config.data.get("dequantize", False) and config.data.binarize:
    raise ConfigError("data.dequantize=True needs grey levels: set data.binarize=False")

  if int(t.num_epochs) < 1 or int(t.batch_size) < 1:
    raise ConfigError("train.num_epochs and train.batch_size must be positive")
  if int(t.batch_size) % num_devices:
    raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by the {num_devices} devices")
  _one_of(t.on_nonfinite, ON_NONFINITE, "train.on_nonfinite")
  _one_of(t.get("lr_schedule", "constant"), LR_SCHEDULES, "train.lr_schedule")
  _one_of(t.get("ensemble", "auto"), ENSEMBLE_MODES, "train.ensemble")
  _check_sampling(config, num_devices)

  if (
    int(e.iwae_samples) < 1
    or int(e.iwae_chunk) < 1
    or (int(e.iwae_samples) % min(int(e.iwae_chunk), int(e.iwae_samples)))
  ):
    raise ConfigError(
      f"eval.iwae_samples ({e.iwae_samples}) must be a positive multiple of eval.iwae_chunk ({e.iwae_chunk})"
    )
  if int(e.rapp_fit_examples) < 2 or int(e.get("reference_examples", 200)) < 2:
    raise ConfigError("eval.rapp_fit_examples and eval.reference_examples must be at least 2")

  if p.name not in PROTOCOLS:
    raise ProtocolError(f"unknown protocol {p.name!r}; known protocols: {', '.join(PROTOCOLS)}")
  if p.score not in SCORES:
    raise ConfigError(f"unknown score {p.score!r}; known: {', '.join(SCORES)}")
  _check_scores(e.get("scores", ()), p.score)
  if p.score_condition not in SCORE_CONDITIONS:
    raise ConfigError(f"unknown score_condition {p.score_condition!r}; known: {', '.join(SCORE_CONDITIONS)}")


def _check_scores(scores, headline: str) -> None:
  """eval.scores: a tuple of known score names (empty: all of them) that holds the headline protocol.score."""
  if isinstance(scores, str) or not all(isinstance(s, str) for s in scores):
    raise ConfigError(f"eval.scores must be a tuple of score names, got {scores!r}; known: {', '.join(SCORES)}")
  unknown = [s for s in scores if s not in SCORES]
  if unknown:
    hint = ", as a tuple of quoted names: --config.eval.scores=\"('recon','iwae')\"" if "," in unknown[0] else ""
    raise ConfigError(f"eval.scores: unknown score {unknown[0]!r}; known: {', '.join(SCORES)}{hint}")
  if scores and headline not in scores:
    raise ConfigError(
      f"protocol.score={headline!r} is not among eval.scores ({', '.join(scores)}): add it there or pick one of those"
    )


def _check_sampling(config, num_devices: int) -> None:
  """train.batch_sampling and, for "stratified", batch_size = conditions_per_batch x per_condition (either may
  be 0 = derived from the other), with whole groups on each device under model.tc_scope="local"."""
  t = config.train
  mode = t.get("batch_sampling", "uniform")
  _one_of(mode, BATCH_SAMPLING, "train.batch_sampling")
  if mode == "uniform":
    return
  batch, p, k = int(t.batch_size), int(t.get("per_condition", 0)), int(t.get("conditions_per_batch", 0))
  if p < 0 or k < 0 or (p == 0 and k == 0):
    raise ConfigError(
      "train.batch_sampling='stratified' needs train.per_condition or train.conditions_per_batch "
      f">= 1, got per_condition={p}, conditions_per_batch={k}"
    )
  p0, k0 = p, k
  derived = sampling_options(config)
  p, k = derived["per_condition"], derived["conditions_per_batch"]
  if p < 1 or k < 1 or p * k != batch:
    raise ConfigError(
      f"train.batch_sampling='stratified' needs train.batch_size = train.conditions_per_batch x "
      f"train.per_condition, got batch_size={batch}, conditions_per_batch={k0}, per_condition={p0}"
      + (" (0 = batch_size / the other, which must divide it)" if 0 in (p0, k0) else "")
    )
  shards = int(num_devices) if config.model.get("tc_scope", "global") == "local" else 1
  if k % shards:
    raise ConfigError(
      f"model.tc_scope='local' splits each batch over {shards} devices, so "
      f"train.conditions_per_batch={k} must be a multiple of {shards} (whole groups per device)"
    )
