"""Pure loss functions: likelihoods, the forward pass, the KL decomposition, one regulariser per model.

Every model minimises   recon + regulariser,   where recon = -log p(x|z[,c]) summed over pixels, and every
term is summed over pixels / latent dimensions and averaged over the batch. Each model logs the same terms:
recon, kl (analytic KL(q(z|x[,c]) || prior)), elbo (= recon + kl, the negative ELBO), and the decomposition
kl ≈ mi + tc + dwkl (Chen et al. 2018; for conditional models the conditional one, see ``decompose``).

A model (``models.MODELS``, chosen by ``config.model.name``) contributes only its regulariser. Functions here
take arrays, a Flax module and its params; they build nothing. The math: docs/design.md "Objectives".
"""

from __future__ import annotations

import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from dcvae_jax.models import estimators, networks
from dcvae_jax.models.fast_ops import sum_per_example

# ----------------------------------------------------------------------------------------------------------
# Likelihoods and the forward pass.


def continuous_bernoulli_log_norm(logits):
  """log C(lambda) of the continuous Bernoulli, lambda = sigmoid(l) (Loaiza-Ganem & Cunningham 2019).

  C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) = l / tanh(l / 2) in terms of the logit, which is 2 at
  l = 0; near it (|l| < 0.1) the Taylor series l / tanh(l/2) = 2 (1 + l^2/12 - l^4/720 + O(l^6)) is used."""
  small = jnp.abs(logits) < 0.1
  l_big = jnp.where(small, 1.0, jnp.abs(logits))
  exact = jnp.log(l_big) - jnp.log(jnp.tanh(l_big / 2))
  l2 = jnp.square(jnp.where(small, logits, 0.0))
  taylor = jnp.log(2.0) + jnp.log1p(l2 / 12 - jnp.square(l2) / 720)
  return jnp.where(small, taylor, exact)


def gaussian_logvar(model_cfg, obs_logvar):
  """log sigma^2 of the Gaussian likelihood: 2 log(model.gaussian_std) when fixed, else the learned one."""
  if model_cfg.gaussian_variance == "fixed":
    std = float(model_cfg.gaussian_std)
    return None if std == 1.0 else jnp.asarray(2.0 * np.log(std), jnp.float32)
  return obs_logvar


def recon_nll(logits, x, likelihood: str = "bernoulli", logvar=None):
  """-log p(x|z) per example, summed over pixels, for the decoder output ``logits``:

  bernoulli             Bernoulli(sigmoid(l)): the cross-entropy, also used on grey levels (then not a density)
  continuous_bernoulli  CB(x; lambda) = C(lambda) lambda^x (1-lambda)^(1-x) on [0, 1]: cross-entropy - log C
  gaussian              N(x; l, sigma^2), log sigma^2 = ``logvar`` (scalar or per pixel; 0 when None)
  """
  if likelihood == "bernoulli":  # -[x log s(l) + (1-x) log(1-s(l))] = max(l,0) - l x + log(1 + exp(-|l|))
    return sum_per_example(jnp.maximum(logits, 0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits))))
  if likelihood == "continuous_bernoulli":
    ce = jnp.maximum(logits, 0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return sum_per_example(ce - continuous_bernoulli_log_norm(logits))
  if likelihood == "gaussian":
    if logvar is None:
      return sum_per_example(0.5 * jnp.square(x - logits) + 0.5 * jnp.log(2 * jnp.pi))
    lv = jnp.broadcast_to(logvar, logits.shape[1:])
    return sum_per_example(0.5 * jnp.square(x - logits) * jnp.exp(-lv) + 0.5 * (lv + jnp.log(2 * jnp.pi)))
  raise ValueError(f"unknown likelihood {likelihood!r}")


def mean_image(logits, likelihood: str = "bernoulli"):
  """E[x | z]: sigmoid(l) (Bernoulli), the continuous Bernoulli's mean
  lambda/(2 lambda - 1) + 1/(2 artanh(1 - 2 lambda)) = 1/2 + 1/(2 tanh(l/2)) - 1/l (-> 1/2 + l/12 at l = 0),
  or l itself (Gaussian)."""
  if likelihood == "bernoulli":
    return jax.nn.sigmoid(logits)
  if likelihood == "continuous_bernoulli":
    small = jnp.abs(logits) < 1e-2
    l_safe = jnp.where(small, 1.0, logits)
    exact = 0.5 + 0.5 / jnp.tanh(l_safe / 2) - 1.0 / l_safe
    return jnp.where(small, 0.5 + logits / 12, exact)
  return logits


def likelihood_logvar(model_cfg, obs_logvar):
  """The ``logvar`` argument of recon_nll: None except for the Gaussian (see gaussian_logvar)."""
  return gaussian_logvar(model_cfg, obs_logvar) if model_cfg.likelihood == "gaussian" else None


def is_density(likelihood: str, *, binarize: bool, dequantize: bool) -> bool:
  """Whether exp(-recon_nll) is a probability of the data the model sees, so that -log2 of it (plus
  anomaly_scores.density_offset_bits) is a code length of the 8-bit image:

    bernoulli                        only on binarised pixels (a probability mass of {0, 1}^D);
    continuous_bernoulli, gaussian   only on dequantised grey levels, where p(x) / 256 per pixel is (an estimate
                                     of) the probability of x's bin (the Gaussian up to its mass outside [0, 1]).

  On binarised or plain grey pixels a density is read at points (0 and 1, or k / 255), where nothing bounds it:
  p / bins exceeds 1 wherever p > bins (a continuous Bernoulli with a large logit at x = 1, a sharp Gaussian),
  and the "code length" goes negative."""
  if likelihood == "bernoulli":
    return bool(binarize)
  return bool(dequantize) and not binarize


def one_hot_condition(spec, cond_ids, num_conditions: int):
  return jax.nn.one_hot(cond_ids, max(num_conditions, 1)) if spec.conditional else None


def encode(module, params, x, c):
  """The encoder's (mu, logvar), each (B, d), of float images x under one-hot conditions c (or None)."""
  return module.apply(params, x, c, method=networks.VAE.encode)


def decode(module, params, z, c):
  """The decoder's output (logits, or the mean for a Gaussian) of codes z under one-hot conditions c (or None)."""
  return module.apply(params, z, c, method=networks.VAE.decode)


def forward(spec, module, params, x, cond_ids, rng, num_conditions: int, eps=None):
  """Encode, reparameterise z = mu + sigma * eps, decode. Returns a dict of arrays.

  eps ~ N(0, I) of shape (B, d) is drawn from ``rng`` unless given (the train step draws it ahead of time)."""
  c = one_hot_condition(spec, cond_ids, num_conditions)
  mu, logvar = encode(module, params, x, c)
  if eps is None:
    eps = jax.random.normal(rng, mu.shape, mu.dtype)
  z = mu + jnp.exp(0.5 * logvar) * eps
  logits = decode(module, params, z, c)
  prior_mu, prior_logvar = module.apply(params, cond_ids, method=networks.VAE.prior)
  relevance = module.apply(params, method=networks.VAE.relevance_vector)
  obs_logvar = module.apply(params, method=networks.VAE.obs_logvar)
  return dict(
    mu=mu,
    logvar=logvar,
    z=z,
    eps=eps,
    logits=logits,
    prior_mu=prior_mu,
    prior_logvar=prior_logvar,
    relevance=relevance,
    cond_ids=cond_ids,
    obs_logvar=obs_logvar,
  )


def decompose(spec, out, *, dataset_size, condition_counts, method: str, groups: int = 1):
  """MI / TC / dimension-wise KL of the batch (batch means).

  Unconditional models: the decomposition of E_x KL(q(z|x) || p(z)) with q(z) the minibatch mixture over N.
  Conditional models: E KL(q(z|x,c) || r(z|c)) = I(x;z|c) + TC(z|c) + sum_j KL(q(z_j|c) || r(z_j|c)), the mixture
  restricted to the batch's examples of the same condition, with the per-condition counts N_c.
  groups > 1 splits the batch into that many equal consecutive shards (one per device: ``tc_scope="local"``)
  and averages the per-shard estimates.
  """
  conditional = spec.conditional
  size = condition_counts if conditional else dataset_size
  # eps (when known) gives each anchor's own density exactly: estimators.own_sample_log_density.
  names = ["z", "mu", "logvar", "prior_mu", "prior_logvar", "cond_ids"] + (
    ["eps"] if out.get("eps") is not None else []
  )
  arrays = [out[k] for k in names]
  if groups > 1:
    arrays = [a.reshape((groups, a.shape[0] // groups) + a.shape[1:]) for a in arrays]

  def one(z, mu, logvar, pmu, plogvar, cond, eps=None):
    return estimators.elbo_decomposition(
      z,
      mu,
      logvar,
      dataset_size=size,
      method=method,
      conditions=cond if conditional else None,
      prior_mu=pmu,
      prior_logvar=plogvar,
      eps=eps,
    )

  if groups > 1:
    return jax.tree.map(jnp.mean, jax.vmap(one)(*arrays))
  return one(*arrays)


def _disc_logits(disc: networks.Discriminator, disc_params, z: jax.Array) -> jax.Array:
  """D's (B, 2) logits [real, permuted]. Module.apply is typed for mutable collections too (then it returns
  (out, variables)); none are asked for here, so it returns the logits alone."""
  return typing.cast(jax.Array, disc.apply(disc_params, z))


def discriminator_tc(disc: networks.Discriminator, disc_params, z):
  """TC_D = E_q(z)[logit_real(z) - logit_perm(z)] (Kim & Mnih's density-ratio trick)."""
  logits = _disc_logits(disc, disc_params, z)
  return jnp.mean(logits[:, 0] - logits[:, 1])


def discriminator_loss(disc: networks.Discriminator, disc_params, z, rng):
  """Cross-entropy of D telling z ~ q(z) (label 0) from permute_dims(z) ~ prod_j q(z_j) (label 1).

  z should already carry stop_gradient. Returns (loss, accuracy)."""
  z_perm = estimators.permute_dims(z, rng)
  logits = _disc_logits(disc, disc_params, jnp.concatenate([z, z_perm], axis=0))
  labels = jnp.concatenate([jnp.zeros(z.shape[0], jnp.int32), jnp.ones(z.shape[0], jnp.int32)])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  acc = jnp.mean(jnp.argmax(logits, -1) == labels)
  return loss, acc


def discriminator_input(spec, out):
  """What the discriminator judges: z (FactorVAE) or r * z (RF-VAE)."""
  return out["z"] * out["relevance"] if spec.relevance else out["z"]


# ----------------------------------------------------------------------------------------------------------
# The models: each returns (regulariser, extra terms). ``out`` carries kl_dims (B,d) and mi/tc/dwkl; ``w`` is
# the model's own section of config.model (``registry.ModelSpec.section``; None for vae / cvae).


def vae_regularizer(out, w, tc_d):
  """vae, cvae: KL(q(z|x[,c]) || p(z))."""
  return out["kl"], {}


def beta_vae_regularizer(out, w, tc_d):
  """beta_vae: beta KL (model.beta_vae.beta)."""
  return w.beta * out["kl"], {}


def decomposed_regularizer(out, w, tc_d):
  """beta_tcvae (unconditional) and dcvae (conditional): alpha MI + tc_beta TC + gamma DWKL
  (model.beta_tcvae.* / model.dcvae.*)."""
  return w.alpha * out["mi"] + w.tc_beta * out["tc"] + w.gamma * out["dwkl"], {}


def factor_vae_regularizer(out, w, tc_d):
  """factor_vae: KL + gamma TC_D (model.factor_vae.gamma)."""
  tc = tc_d(out["z"])
  return out["kl"] + w.gamma * tc, {"tc_d": tc}


def binary_entropy(r, eps: float = 1e-7):
  r = jnp.clip(r, eps, 1 - eps)
  return -(r * jnp.log(r) + (1 - r) * jnp.log(1 - r))


def rf_vae_regularizer(out, w, tc_d):
  """rf_vae: relevance-weighted KL + gamma TC_D(r * z) + eta_s |r|_1 + eta_h H(r) (model.rf_vae.*)."""
  r = out["relevance"]
  lam = w.lambda_max + (w.lambda_min - w.lambda_max) * r
  weighted_kl = jnp.mean(jnp.sum(lam * out["kl_dims"], axis=-1))
  tc = tc_d(out["z"] * r)
  l1 = jnp.sum(jnp.abs(r))
  ent = jnp.sum(binary_entropy(r))
  reg = weighted_kl + w.gamma * tc + w.eta_s * l1 + w.eta_h * ent
  return reg, {"tc_d": tc, "weighted_kl": weighted_kl, "relevance_l1": l1, "relevance_entropy": ent}


# ----------------------------------------------------------------------------------------------------------


class Batch(struct.PyTreeNode):
  """One training batch of one run: float images ``x`` (B, H, W, C), condition ids ``cond`` (B,) and the
  reparameterisation noise ``eps`` (B, d) ~ N(0, I) (None: drawn from the loss's rng)."""

  x: jax.Array
  cond: jax.Array
  eps: jax.Array | None = None


class DataStats(struct.PyTreeNode):
  """The constants of one run's training data that the minibatch estimators need: its size N and the count
  N_c of each condition (C,)."""

  dataset_size: jax.Array
  condition_counts: jax.Array


def model_loss(model, params, batch: Batch, stats: DataStats, disc_params=None, rng=None):
  """The model's loss and every logged term: (loss, (terms, out)).

  loss = E[-log p(x|z[,c])] + R, with R the model's regulariser (``spec.regularizer``) on the KL decomposition
  of the batch. ``model``: the static parts of one model (``train_step.ModelSetup``, or any object with
  ``spec``, ``module``, ``model_cfg`` (config.model), ``num_conditions``, ``groups`` and ``disc``);
  ``disc_params``: the FactorVAE / RF-VAE discriminator's; ``rng``: draws eps when the batch carries none."""
  spec, model_cfg = model.spec, model.model_cfg
  out = forward(spec, model.module, params, batch.x, batch.cond, rng, model.num_conditions, eps=batch.eps)
  rec = recon_nll(out["logits"], batch.x, model_cfg.likelihood, likelihood_logvar(model_cfg, out["obs_logvar"])).mean()
  out["kl_dims"] = estimators.kl_diag_gaussians(out["mu"], out["logvar"], out["prior_mu"], out["prior_logvar"])
  out["kl"] = out["kl_dims"].sum(-1).mean()
  out.update(
    decompose(
      spec,
      out,
      dataset_size=stats.dataset_size,
      condition_counts=stats.condition_counts,
      method=model_cfg.estimator,
      groups=model.groups,
    )
  )
  tc_d = None
  if spec.discriminator:
    tc_d = lambda z: discriminator_tc(model.disc, disc_params, z)  # noqa: E731
  reg, extra = spec.regularizer(out, model_cfg[spec.section] if spec.section else None, tc_d)
  loss = rec + reg
  terms = dict(
    loss=loss, recon=rec, kl=out["kl"], elbo=rec + out["kl"], mi=out["mi"], tc=out["tc"], dwkl=out["dwkl"], **extra
  )
  return loss, (terms, out)
