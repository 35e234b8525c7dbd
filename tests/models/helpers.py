"""Helpers of the model tests (test_models.py, test_models_learning.py): model set-up, numpy reference losses and
densities, the logged metric names. Their fixtures are in conftest.py."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from dcvae_jax.models import objectives
from dcvae_jax.models import registry as models
from tests.helpers import set_model, tiny_config


def np_bce(logits, x):
  logits = np.asarray(logits, np.float64)
  return np.logaddexp(0.0, logits) - x * logits  # -log Bernoulli(x; sigmoid(logits))


def np_log_normal(z, mu, logvar):
  return -0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 * np.exp(-logvar))


def _module(name, image_shape, num_conditions, **hp):
  config = tiny_config(name)
  set_model(config, **hp)
  spec = models.get_model(name)
  module = models.make_module(spec, config.model, image_shape, num_conditions)
  return config, spec, module


def _init(spec, module, x, cond, num_conditions, seed=0):
  c = objectives.one_hot_condition(spec, cond, num_conditions)
  return module.init(jax.random.PRNGKey(seed), x, c, cond)


def _binary_batch(b=24, size=6, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray((rng.random((b, size, size, 1)) > 0.5).astype(np.float32))


D_TC = 3


COV = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.4], [0.3, 0.4, 1.0]])


def _closed_tc(cov):
  return 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])


def _true_log_ratio(z, cov):
  """log N(z; 0, cov) - sum_j log N(z_j; 0, cov_jj): the function an optimal discriminator's logit gap learns."""
  joint = scipy.stats.multivariate_normal(np.zeros(len(cov)), cov).logpdf(z)
  marg = scipy.stats.norm.logpdf(z, 0.0, np.sqrt(np.diag(cov))).sum(1)
  return joint - marg


class _RecordingDisc:
  """Stands in for networks.Discriminator: records its input and returns +-a logits by a fixed rule."""

  def __init__(self, a):
    self.a, self.seen, self.halves = a, None, True

  def apply(self, params, z):
    self.seen = z
    # halves: first half the real codes, second half the permuted ones; else all rows are real
    b = z.shape[0] // 2 if self.halves else z.shape[0]
    sign = jnp.concatenate([jnp.ones(b), -jnp.ones(z.shape[0] - b)])[:, None]
    return self.a * sign * jnp.array([[1.0, -1.0]])


def _rf_loss(rho, x, **hp):
  cfg, spec, mod = _module("rf_vae", x.shape[1:], 1, **hp)
  cond = jnp.zeros((x.shape[0],), jnp.int32)
  params = _init(spec, mod, x, cond, 1)
  params = {"params": dict(params["params"], relevance_logit=jnp.asarray(rho, jnp.float32))}
  disc = models.make_discriminator(spec, cfg.model)
  disc_params = disc.init(jax.random.PRNGKey(1), jnp.zeros((1, 4)))
  loss, (t, out) = objectives.model_loss(
    models.ModelParts(spec, mod, cfg.model, 1, disc=disc),
    params,
    objectives.Batch(x, cond),
    objectives.DataStats(1000.0, None),
    disc_params,
    rng=jax.random.PRNGKey(2),
  )
  return loss, t, out, (disc, disc_params)


LOGGED = ("loss", "recon", "kl", "mi", "tc", "dwkl", "elbo", "grad_norm")


DISC_LOGGED = ("tc_d", "disc_loss", "disc_acc")


RF_LOGGED = ("weighted_kl", "relevance_l1", "relevance_entropy")
