"""The model registry: ``ModelSpec`` per model name, and building the Flax modules a spec needs.

Every model minimises recon + its regulariser (``objectives``); a spec says which regulariser, which section of
``config.model`` holds the weights it reads (``config.model.<section>``, e.g. ``model.dcvae.tc_beta``; none for
vae and cvae), and whether the model is conditional, has the factorised conditional prior r(z|c), RF-VAE's
relevance vector, or the FactorVAE density-ratio discriminator. docs/design.md "Objectives" gives the math of
each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import ml_collections

from dcvae_jax.models import networks, objectives
from dcvae_jax.options import COMPUTE_DTYPES, GAUSSIAN_VARIANCES, LIKELIHOODS  # noqa: F401 (re-exported)
from dcvae_jax.validation import check_model_name


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  regularizer: Callable  # (out, weights, tc_d) -> (scalar, terms); weights: config.model.<section> (or None)
  section: str | None = None  # the section of config.model this model reads its weights from
  conditional: bool = False  # encoder and decoder see the one-hot condition
  learned_prior: bool = False  # factorised conditional prior r(z|c)
  relevance: bool = False  # RF-VAE relevance vector r
  discriminator: bool = False  # FactorVAE density-ratio discriminator


MODELS: dict[str, ModelSpec] = {
  s.name: s
  for s in (
    ModelSpec("vae", objectives.vae_regularizer),
    ModelSpec("cvae", objectives.vae_regularizer, conditional=True),
    ModelSpec("beta_vae", objectives.beta_vae_regularizer, section="beta_vae"),
    ModelSpec("beta_tcvae", objectives.decomposed_regularizer, section="beta_tcvae"),
    ModelSpec("dcvae", objectives.decomposed_regularizer, "dcvae", conditional=True, learned_prior=True),
    ModelSpec("factor_vae", objectives.factor_vae_regularizer, "factor_vae", discriminator=True),
    ModelSpec("rf_vae", objectives.rf_vae_regularizer, "rf_vae", relevance=True, discriminator=True),
  )
}


@dataclasses.dataclass(frozen=True)
class ModelParts:
  """The static parts of one model that ``objectives.model_loss`` reads: its spec, Flax module, ``model_cfg``
  (config.model), number of conditions, estimator ``groups`` (devices under model.tc_scope="local", else 1)
  and discriminator (None without one). ``train_step.ModelSetup`` carries the same fields."""

  spec: ModelSpec
  module: networks.VAE
  model_cfg: ml_collections.ConfigDict | ml_collections.FrozenConfigDict
  num_conditions: int
  groups: int = 1
  disc: networks.Discriminator | None = None


def weights(spec: ModelSpec, model_cfg):
  """The section of ``model_cfg`` (config.model) that model ``spec`` reads its weights from; None for a model
  without one."""
  return model_cfg[spec.section] if spec.section else None


def get_model(name: str) -> ModelSpec:
  check_model_name(name)  # options.MODEL_NAMES, which a test keeps equal to MODELS
  return MODELS[name]


def make_module(spec: ModelSpec, model_cfg, image_shape, num_conditions: int) -> networks.VAE:
  return networks.VAE(
    arch=model_cfg.arch,
    hidden=tuple(model_cfg.hidden),
    latent_dim=model_cfg.latent_dim,
    image_shape=tuple(image_shape),
    num_conditions=max(num_conditions, 1),
    learned_prior=spec.learned_prior,
    relevance=spec.relevance,
    obs_variance=learned_obs_variance(model_cfg),
    dtype=compute_dtype(model_cfg),
  )


def learned_obs_variance(model_cfg) -> str:
  """ "global" / "per_pixel" for a Gaussian likelihood whose variance is learned, else "none"."""
  if model_cfg.likelihood != "gaussian":
    return "none"
  kind = model_cfg.gaussian_variance
  return "none" if kind == "fixed" else kind


def make_discriminator(spec: ModelSpec, model_cfg) -> networks.Discriminator:
  """The TC discriminator of a model with one: its section's ``disc_layers`` x Dense(``disc_width``)."""
  section = weights(spec, model_cfg)
  return networks.Discriminator(layers=section.disc_layers, width=section.disc_width, dtype=compute_dtype(model_cfg))


def compute_dtype(model_cfg):
  """model.compute_dtype: "float32", or "bfloat16" for mixed precision (bf16 matmuls, fp32 params and losses)."""
  return jnp.dtype(model_cfg.compute_dtype)
