"""Losses on known inputs, checked against independent numpy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcvae_jax import errors
from dcvae_jax.models import objectives
from dcvae_jax.models import registry as models
from tests.helpers import set_model, tiny_config


def np_bce(logits, x):
  p = 1 / (1 + np.exp(-logits))
  return -(x * np.log(p) + (1 - x) * np.log(1 - p))


def test_bernoulli_recon_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
  x = (rng.random((3, 4, 4, 1)) > 0.5).astype(np.float32)
  got = objectives.recon_nll(jnp.asarray(logits), jnp.asarray(x), "bernoulli")
  np.testing.assert_allclose(got, np_bce(logits, x).sum((1, 2, 3)), rtol=1e-5)


def test_gaussian_recon_matches_numpy():
  rng = np.random.default_rng(1)
  mean = rng.normal(size=(2, 3, 3, 1)).astype(np.float32)
  x = rng.random((2, 3, 3, 1)).astype(np.float32)
  want = (0.5 * (x - mean) ** 2 + 0.5 * np.log(2 * np.pi)).sum((1, 2, 3))
  np.testing.assert_allclose(objectives.recon_nll(jnp.asarray(mean), jnp.asarray(x), "gaussian"), want, rtol=1e-5)


def test_unknown_model_is_a_clear_error():
  with pytest.raises(errors.ConfigError, match="unknown model 'nope'.*dcvae"):
    models.get_model("nope")


def test_all_seven_models_registered():
  assert set(models.MODELS) == {"vae", "cvae", "beta_vae", "factor_vae", "rf_vae", "beta_tcvae", "dcvae"}
  assert models.MODELS["cvae"].conditional and not models.MODELS["vae"].conditional
  assert models.MODELS["dcvae"].learned_prior and models.MODELS["dcvae"].conditional


def _loss(name, x, cond, *, num_conditions=2, **hp):
  return _loss_of(set_model(tiny_config(name), **hp), x, cond, num_conditions=num_conditions, full=True)


def _loss_of(config, x, cond, *, num_conditions=2, full=False):
  """model_loss of ``config``'s model on (x, cond), with params, rng and discriminator drawn from fixed keys."""
  name = config.model.name
  spec = models.get_model(name)
  module = models.make_module(spec, config.model, x.shape[1:], num_conditions)
  c = objectives.one_hot_condition(spec, cond, num_conditions)
  params = module.init(jax.random.PRNGKey(0), x, c, cond)
  disc = disc_params = None
  if spec.discriminator:
    disc = models.make_discriminator(spec, config.model)
    disc_params = disc.init(jax.random.PRNGKey(1), jnp.zeros((1, config.model.latent_dim)))
  loss, (terms, out) = objectives.model_loss(
    models.ModelParts(spec, module, config.model, num_conditions, disc=disc),
    params,
    objectives.Batch(x, cond),
    objectives.DataStats(1000.0, jnp.array([500.0, 500.0])),
    disc_params,
    rng=jax.random.PRNGKey(2),
  )
  return (loss, terms, out) if full else (loss, terms)


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  x = jnp.asarray((rng.random((16, 6, 6, 1)) > 0.5).astype(np.float32))
  cond = jnp.asarray(np.arange(16) % 2, jnp.int32)
  return x, cond


def test_vae_terms_are_recon_plus_analytic_kl(batch):
  x, cond = batch
  loss, terms, out = _loss("vae", x, cond)
  mu, logvar = np.asarray(out["mu"]), np.asarray(out["logvar"])
  kl = 0.5 * (np.exp(logvar) + mu**2 - 1 - logvar).sum(-1).mean()
  rec = np_bce(np.asarray(out["logits"], np.float64), np.asarray(x)).sum((1, 2, 3)).mean()
  np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4)
  np.testing.assert_allclose(terms["recon"], rec, rtol=1e-4)
  np.testing.assert_allclose(loss, rec + kl, rtol=1e-4)
  np.testing.assert_allclose(terms["elbo"], rec + kl, rtol=1e-4)


def test_beta_vae_weights_the_kl(batch):
  x, cond = batch
  _, t1, _ = _loss("vae", x, cond)
  loss, t4, _ = _loss("beta_vae", x, cond, beta=4.0)
  np.testing.assert_allclose(loss, t4["recon"] + 4.0 * t4["kl"], rtol=1e-5)
  np.testing.assert_allclose(t4["kl"], t1["kl"], rtol=1e-6)  # same params, same rng


def test_beta_tcvae_is_weighted_decomposition(batch):
  x, cond = batch
  loss, t, _ = _loss("beta_tcvae", x, cond, alpha=1.0, tc_beta=6.0, gamma=2.0)
  np.testing.assert_allclose(loss, t["recon"] + t["mi"] + 6.0 * t["tc"] + 2.0 * t["dwkl"], rtol=1e-5)


def test_cvae_encoder_sees_the_condition(batch):
  """The encoder side; tests/models/test_cvae_conditioning.py checks the decoder and the prior."""
  x, cond = batch
  _, t0, out0 = _loss("cvae", x, cond)
  _, t1, out1 = _loss("cvae", x, 1 - cond)
  assert not np.allclose(out0["mu"], out1["mu"])


def test_every_model_returns_finite_terms(batch):
  x, cond = batch
  for name in models.MODELS:
    loss, terms, _ = _loss(name, x, cond)
    assert np.isfinite(loss), name
    for k, v in terms.items():
      assert np.all(np.isfinite(v)), (name, k)
    for k in ("recon", "kl", "mi", "tc", "dwkl", "elbo"):
      assert k in terms, (name, k)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_a_model_reads_only_its_own_section(batch, name):
  """Changing every other model's section of config.model leaves a model's loss and terms bitwise the same
  (registry.ModelSpec.section names the one it reads); changing its own section changes the loss."""
  x, cond = batch
  spec = models.get_model(name)
  others = [s.section for s in models.MODELS.values() if s.section and s.section != spec.section]

  def loss_with(sections, disc_layers=None):
    config = tiny_config(name)
    for section in sections:
      for key, value in config.model[section].items():
        config.model[section][key] = value + 1 if isinstance(value, int) else 2.5 * value + 0.5
    config.model.latent_dim = 4
    return _loss_of(config, x, cond)

  base, t0 = loss_with([])
  changed, t1 = loss_with(others)
  assert float(changed) == float(base)
  assert {k: float(v) for k, v in t1.items()} == {k: float(v) for k, v in t0.items()}
  if spec.section:
    own, _ = loss_with([spec.section])
    assert float(own) != float(base)
