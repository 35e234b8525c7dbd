"""Losses on known inputs, checked against independent numpy computations."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcvae_jax import errors
from dcvae_jax.models import estimators, networks, objectives
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


def _loss_of(config, x, cond, *, num_conditions=2, full=False, eps=None, groups=1):
  """model_loss of ``config``'s model on (x, cond), with params, rng and discriminator drawn from fixed keys (and
  the batch's noise ``eps``, when given; ``groups`` estimator shards)."""
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
    models.ModelParts(spec, module, config.model, num_conditions, groups=groups, disc=disc),
    params,
    objectives.Batch(x, cond, eps),
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
  assert set(terms) == {"loss", "recon", "kl", "elbo", "mi", "tc", "dwkl"}
  assert terms["loss"] is loss


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


# ----------------------------------------------------------------------------------------------------------
# Known answers for the functions that the model-level tests above reach only through a whole model.


def test_continuous_bernoulli_log_norm_is_log_l_over_tanh_half_l_on_both_branches():
  """log C = log(l / tanh(l/2)), even in l and log 2 at 0, on the series branch (|l| < 0.1) and the exact one.

  The series drops 2 l^6/30240 (< 1e-10 at |l| < 0.1), so it holds to float32 rounding (atol 1e-7), finer than
  its own l^4/720 term (1.4e-7 at |l| = 0.1); the exact branch loses ~2e-7 to cancellation near |l| = 0.1
  (atol 3e-7), and the series read at |l| = 1 would be 3e-5 off."""
  l = np.array([-30, -5, -1.0, -0.5, -0.1, -0.0999, -0.05, 0.0, 0.01, 0.06, 0.0999, 0.1, 0.3, 1.0, 5, 30], np.float32)
  a = np.abs(l.astype(np.float64))
  safe = np.where(a == 0, 1, a)
  want = np.where(a == 0, np.log(2.0), np.log(safe / np.tanh(safe / 2)))
  got = np.asarray(objectives.continuous_bernoulli_log_norm(jnp.asarray(l)), np.float64)
  series = a < 0.1
  np.testing.assert_allclose(got[series], want[series], rtol=0, atol=1e-7)
  np.testing.assert_allclose(got[~series], want[~series], rtol=1e-7, atol=3e-7)


def test_continuous_bernoulli_mean_is_the_closed_form_on_both_branches():
  """E[x] = 1/2 + 1/(2 tanh(l/2)) - 1/l, 1/2 at l = 0, on the series branch (|l| < 0.01: 1/2 + l/12, off by
  l^3/720 < 2e-9) and the exact one (whose cancellation costs ~1e-6 at |l| = 0.05). The default likelihood is the
  Bernoulli's sigmoid, and a Gaussian's mean is its output."""
  l = np.array([-30, -5, -1.0, -0.3, -0.05, -0.0099, -0.005, 0.0, 0.005, 0.0099, 0.05, 0.3, 1.0, 5, 30], np.float32)
  l64 = l.astype(np.float64)
  safe = np.where(l64 == 0, 1, l64)
  want = np.where(l64 == 0, 0.5, 0.5 + 0.5 / np.tanh(safe / 2) - 1 / safe)
  np.testing.assert_allclose(objectives.mean_image(jnp.asarray(l), "continuous_bernoulli"), want, rtol=0, atol=5e-6)
  np.testing.assert_allclose(objectives.mean_image(jnp.asarray(l)), 1 / (1 + np.exp(-l64)), rtol=1e-6)
  np.testing.assert_array_equal(objectives.mean_image(jnp.asarray(l), "gaussian"), l)


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian"])
def test_is_density_truth_table(likelihood):
  """Bernoulli: a mass exactly on binarised pixels; the densities: only on dequantised, not binarised, ones."""
  for binarize in (False, True):
    for dequantize in (False, True):
      want = binarize if likelihood == "bernoulli" else dequantize and not binarize
      got = objectives.is_density(likelihood, binarize=binarize, dequantize=dequantize)
      assert got is want, (binarize, dequantize)


def test_gaussian_logvar_fixed_is_twice_log_std_and_none_at_one_and_learned_passes_through():
  cfg = lambda variance, std=1.0: SimpleNamespace(gaussian_variance=variance, gaussian_std=std, likelihood="gaussian")  # noqa: E731
  learned = jnp.asarray([0.3, -0.2])
  assert objectives.gaussian_logvar(cfg("fixed", 1.0), learned) is None
  for std in (0.5, 2.0):
    with jax.enable_x64(True):  # float32 even where JAX's default float is float64
      got = objectives.gaussian_logvar(cfg("fixed", std), learned)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(got, 2 * np.log(std), rtol=1e-6)
  assert objectives.gaussian_logvar(cfg("learned"), learned) is learned
  assert objectives.likelihood_logvar(cfg("learned"), learned) is learned
  assert (
    objectives.likelihood_logvar(SimpleNamespace(likelihood="bernoulli", gaussian_variance="learned"), learned) is None
  )


def test_discriminator_input_is_z_or_relevance_times_z():
  out = {"z": jnp.asarray([[1.0, -2.0, 3.0]]), "relevance": jnp.asarray([0.5, 2.0, 0.0])}
  np.testing.assert_array_equal(objectives.discriminator_input(SimpleNamespace(relevance=False), out), out["z"])
  np.testing.assert_array_equal(
    objectives.discriminator_input(SimpleNamespace(relevance=True), out), [[0.5, -4.0, 0.0]]
  )


class _LinearDisc:
  """A stand-in discriminator with known logits z @ W (W: its params, (d, 2))."""

  def apply(self, params, z):
    return z @ params


def test_discriminator_tc_and_loss_are_the_numpy_cross_entropy_of_known_logits():
  """TC_D = mean(logit_real - logit_perm); the loss is the mean two-class cross-entropy of the B real rows
  (label 0) then the B column-permuted rows (label 1), and the accuracy the share of rows whose argmax is the
  label. B = 5 != d = 3, so a mix-up of the batch and latent axes changes the shapes."""
  rng = np.random.default_rng(3)
  z = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
  disc, key = _LinearDisc(), jax.random.PRNGKey(4)
  real = np.asarray(z, np.float64) @ np.asarray(w, np.float64)
  np.testing.assert_allclose(objectives.discriminator_tc(disc, w, z), np.mean(real[:, 0] - real[:, 1]), rtol=1e-5)

  z_perm = np.asarray(estimators.permute_dims(z, key), np.float64)
  logits = np.concatenate([real, z_perm @ np.asarray(w, np.float64)])
  labels = np.repeat([0, 1], 5)
  log_p = logits - np.logaddexp(logits[:, :1], logits[:, 1:])
  loss, acc = objectives.discriminator_loss(disc, w, z, key)
  np.testing.assert_allclose(loss, -np.mean(log_p[np.arange(10), labels]), rtol=1e-5)
  np.testing.assert_allclose(acc, np.mean(np.argmax(logits, -1) == labels), rtol=1e-6)
  assert 0 < float(acc) < 1  # the check above tells a flipped comparison apart


def test_binary_entropy_is_the_clipped_closed_form():
  """H(r) = -(r log r + (1-r) log(1-r)) with r clipped to [1e-7, 1 - 1e-7]: finite (~2e-6) at 0 and 1."""
  r = np.array([0.0, 1e-9, 0.2, 0.5, 0.9, 1.0], np.float32)
  rc = np.clip(r.astype(np.float64), 1e-7, 1 - 1e-7)
  want = -(rc * np.log(rc) + (1 - rc) * np.log1p(-rc))
  np.testing.assert_allclose(objectives.binary_entropy(jnp.asarray(r)), want, rtol=1e-5, atol=1e-6)


def test_each_regularizer_is_its_weighted_sum_of_known_terms():
  """vae: KL; beta_vae: beta KL; beta_tcvae / dcvae: alpha MI + tc_beta TC + gamma DWKL; factor_vae: KL +
  gamma TC_D(z); rf_vae: mean_b sum_j lambda_j KL_bj + gamma TC_D(r z) + eta_s |r|_1 + eta_h sum_j H(r_j) with
  lambda = lambda_max + (lambda_min - lambda_max) r. Every term and weight is distinct and != 1, and the batch
  (4) differs from the latent size (3)."""
  rng = np.random.default_rng(5)
  z = rng.normal(size=(4, 3))
  kl_dims = rng.random((4, 3)) + 0.1
  r = np.array([0.2, 0.5, 0.9])
  out = {
    "kl": jnp.asarray(2.0),
    "mi": jnp.asarray(0.3),
    "tc": jnp.asarray(0.7),
    "dwkl": jnp.asarray(1.1),
    "z": jnp.asarray(z, jnp.float32),
    "kl_dims": jnp.asarray(kl_dims, jnp.float32),
    "relevance": jnp.asarray(r, jnp.float32),
  }
  w = SimpleNamespace(beta=4.0, alpha=1.5, tc_beta=6.0, gamma=2.5, lambda_min=0.5, lambda_max=3.0, eta_s=0.7, eta_h=1.3)
  coef = np.array([0.3, -1.2, 2.0])
  tc_d = lambda v: jnp.sum(jnp.asarray(coef, jnp.float32) * v) / 10 + 0.25  # noqa: E731
  tc_np = lambda v: np.sum(coef * v) / 10 + 0.25  # noqa: E731

  assert objectives.vae_regularizer(out, None, None) == (out["kl"], {})
  reg, extra = objectives.beta_vae_regularizer(out, w, None)
  np.testing.assert_allclose(reg, 8.0, rtol=1e-6)
  assert extra == {}
  reg, extra = objectives.decomposed_regularizer(out, w, None)
  np.testing.assert_allclose(reg, 1.5 * 0.3 + 6.0 * 0.7 + 2.5 * 1.1, rtol=1e-6)
  assert extra == {}

  reg, extra = objectives.factor_vae_regularizer(out, w, tc_d)
  assert set(extra) == {"tc_d"}
  np.testing.assert_allclose(extra["tc_d"], tc_np(z), rtol=1e-5)
  np.testing.assert_allclose(reg, 2.0 + 2.5 * tc_np(z), rtol=1e-5)

  lam = 3.0 + (0.5 - 3.0) * r
  weighted_kl = np.mean(np.sum(lam * kl_dims, axis=-1))
  ent = np.sum(-(r * np.log(r) + (1 - r) * np.log1p(-r)))
  reg, extra = objectives.rf_vae_regularizer(out, w, tc_d)
  want = {"tc_d": tc_np(z * r), "weighted_kl": weighted_kl, "relevance_l1": np.sum(r), "relevance_entropy": ent}
  assert set(extra) == set(want)
  for k in want:
    np.testing.assert_allclose(extra[k], want[k], rtol=1e-5, err_msg=k)
  np.testing.assert_allclose(reg, weighted_kl + 2.5 * want["tc_d"] + 0.7 * np.sum(r) + 1.3 * ent, rtol=1e-5)


def test_continuous_bernoulli_recon_is_minus_the_log_density():
  """-log CB(x; lambda) = -[x log lambda + (1-x) log(1-lambda)] - log C(lambda), C = 2 artanh(1-2 lambda) / (1-2
  lambda), on grey levels; the default likelihood is the Bernoulli (the same cross-entropy without log C)."""
  rng = np.random.default_rng(6)
  logits = rng.normal(scale=2.0, size=(2, 3, 3, 1)).astype(np.float32)
  x = rng.random((2, 3, 3, 1)).astype(np.float32)
  lam = 1 / (1 + np.exp(-logits.astype(np.float64)))
  log_c = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
  want = (np_bce(logits.astype(np.float64), x) - log_c).sum((1, 2, 3))
  got = objectives.recon_nll(jnp.asarray(logits), jnp.asarray(x), "continuous_bernoulli")
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(
    objectives.recon_nll(jnp.asarray(logits), jnp.asarray(x)), np_bce(logits, x).sum((1, 2, 3)), rtol=1e-5
  )


def test_gaussian_recon_with_a_log_variance_is_the_normal_density():
  """0.5 (x - m)^2 / sigma^2 + 0.5 (log sigma^2 + log 2 pi) per pixel, for a per-pixel and a scalar log sigma^2."""
  rng = np.random.default_rng(7)
  mean = rng.normal(size=(2, 3, 4, 1)).astype(np.float32)
  x = rng.random((2, 3, 4, 1)).astype(np.float32)
  for logvar in (rng.normal(size=(3, 4, 1)).astype(np.float32), np.float32(-0.7)):
    want = (0.5 * (x - mean) ** 2 / np.exp(logvar) + 0.5 * (logvar + np.log(2 * np.pi))).sum((1, 2, 3))
    got = objectives.recon_nll(jnp.asarray(mean), jnp.asarray(x), "gaussian", jnp.asarray(logvar))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_an_unknown_likelihood_is_named_in_the_error():
  with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
    objectives.recon_nll(jnp.zeros((1, 2)), jnp.zeros((1, 2)), "poisson")


def _module_and_params(name, x, cond, num_conditions=2, config=None):
  config = config or tiny_config(name)
  spec = models.get_model(name)
  module = models.make_module(spec, config.model, x.shape[1:], num_conditions)
  params = module.init(jax.random.PRNGKey(0), x, objectives.one_hot_condition(spec, cond, num_conditions), cond)
  return spec, module, params


def test_one_hot_condition_is_the_identity_rows_of_the_conditions_or_none():
  cond = jnp.asarray([1, 0, 2, 1])
  np.testing.assert_array_equal(
    objectives.one_hot_condition(models.get_model("cvae"), cond, 3), np.eye(3)[[1, 0, 2, 1]]
  )
  np.testing.assert_array_equal(objectives.one_hot_condition(models.get_model("cvae"), cond * 0, 1), np.ones((4, 1)))
  assert objectives.one_hot_condition(models.get_model("vae"), cond, 3) is None


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_forward_is_encode_reparameterise_decode(batch, name):
  """z = mu + exp(logvar / 2) eps with the given eps (or eps = normal(rng) when none), the decoder's output of
  that z, and the prior, relevance and observation log-variance of the module, under one-hot conditions."""
  x, cond = batch
  spec, module, params = _module_and_params(name, x, cond)
  c = jax.nn.one_hot(cond, 2) if spec.conditional else None
  mu, logvar = module.apply(params, x, c, method=networks.VAE.encode)
  eps = jax.random.normal(jax.random.PRNGKey(9), mu.shape)
  out = objectives.forward(spec, module, params, x, cond, None, 2, eps=eps)
  z = np.asarray(mu) + np.exp(0.5 * np.asarray(logvar)) * np.asarray(eps)
  assert set(out) == {"mu", "logvar", "z", "eps", "logits", "prior_mu", "prior_logvar", "relevance", "cond_ids"} | {
    "obs_logvar"
  }
  np.testing.assert_allclose(out["mu"], mu, rtol=1e-6)
  np.testing.assert_allclose(out["logvar"], logvar, rtol=1e-6)
  assert out["eps"] is eps and out["cond_ids"] is cond
  np.testing.assert_allclose(out["z"], z, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    out["logits"], module.apply(params, jnp.asarray(z), c, method=networks.VAE.decode), atol=1e-5
  )
  prior_mu, prior_logvar = module.apply(params, cond, method=networks.VAE.prior)
  np.testing.assert_array_equal(out["prior_mu"], prior_mu)
  np.testing.assert_array_equal(out["prior_logvar"], prior_logvar)
  np.testing.assert_array_equal(out["relevance"], module.apply(params, method=networks.VAE.relevance_vector))
  np.testing.assert_array_equal(out["obs_logvar"], module.apply(params, method=networks.VAE.obs_logvar))
  drawn = objectives.forward(spec, module, params, x, cond, jax.random.PRNGKey(3), 2)
  np.testing.assert_array_equal(drawn["eps"], jax.random.normal(jax.random.PRNGKey(3), mu.shape))
  with jax.enable_x64(True):  # the drawn noise takes the encoder's dtype, not JAX's default float
    assert objectives.forward(spec, module, params, x, cond, jax.random.PRNGKey(3), 2)["eps"].dtype == jnp.float32


def test_model_loss_takes_the_batch_noise_and_the_learned_gaussian_variance(batch):
  """With the batch's eps, z = mu + sigma eps; with a learned per-pixel variance the recon term is the normal
  density under the module's observation log-variance."""
  x, cond = batch
  config = set_model(tiny_config("vae"), likelihood="gaussian", gaussian_variance="per_pixel")
  eps = jax.random.normal(jax.random.PRNGKey(9), (x.shape[0], config.model.latent_dim))
  loss, terms, out = _loss_of(config, x, cond, full=True, eps=eps)
  assert out["eps"] is eps
  z = np.asarray(out["mu"]) + np.exp(0.5 * np.asarray(out["logvar"])) * np.asarray(eps)
  np.testing.assert_allclose(out["z"], z, rtol=1e-5, atol=1e-6)
  m, lv, xs = (np.asarray(a, np.float64) for a in (out["logits"], out["obs_logvar"], x))
  rec = (0.5 * (xs - m) ** 2 / np.exp(lv) + 0.5 * (lv + np.log(2 * np.pi))).sum((1, 2, 3)).mean()
  np.testing.assert_allclose(terms["recon"], rec, rtol=1e-5)


def test_decompose_is_the_estimator_on_the_batch_or_the_mean_over_its_shards():
  """Unconditional: N and no conditions; conditional: the counts N_c and the condition ids; eps, when out carries
  it, reaches the estimator (here an eps that z, mu, logvar do not imply, so that it shows); groups = 2: the mean
  of the two halves' estimates."""
  rng = np.random.default_rng(8)
  b, d = 8, 3
  out = {
    "z": rng.normal(size=(b, d)),
    "mu": rng.normal(size=(b, d)),
    "logvar": rng.normal(scale=0.3, size=(b, d)),
    "prior_mu": rng.normal(size=(b, d)),
    "prior_logvar": rng.normal(scale=0.3, size=(b, d)),
    "cond_ids": np.arange(b) % 2,
  }
  out = {k: jnp.asarray(v) for k, v in out.items()}
  counts = jnp.asarray([300.0, 500.0])

  def want(o, conditional, **kw):
    return estimators.elbo_decomposition(
      o["z"],
      o["mu"],
      o["logvar"],
      dataset_size=counts if conditional else 1000.0,
      method=kw.get("method", "mws"),
      conditions=o["cond_ids"] if conditional else None,
      prior_mu=o["prior_mu"],
      prior_logvar=o["prior_logvar"],
      eps=o.get("eps"),
    )

  def check(got, expected):
    assert set(got) == {"mi", "tc", "dwkl"}
    for k in expected:
      np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)

  with_eps = dict(out, eps=jnp.asarray(rng.normal(size=(b, d))))
  for conditional in (False, True):
    spec = SimpleNamespace(conditional=conditional)
    for o in (out, with_eps):
      got = objectives.decompose(spec, o, dataset_size=1000.0, condition_counts=counts, method="mws")
      check(got, want(o, conditional))
    halves = [want({k: v[i * 4 : (i + 1) * 4] for k, v in out.items()}, conditional) for i in (0, 1)]
    got = objectives.decompose(spec, out, dataset_size=1000.0, condition_counts=counts, method="mws", groups=2)
    check(got, {k: (halves[0][k] + halves[1][k]) / 2 for k in halves[0]})
  assert not np.isclose(float(want(with_eps, False)["mi"]), float(want(out, False)["mi"]))


def test_kl_is_the_analytic_kl_to_the_learned_prior_rows(batch):
  """dcvae with a learned prior moved off its N(0, I) init: kl = mean_b sum_j KL(N(mu, e^logvar) || N(m_c, e^s_c))
  with (m_c, s_c) the prior's row of each example's condition c."""
  x, cond = batch
  config = tiny_config("dcvae")
  spec, module, params = _module_and_params("dcvae", x, cond, config=config)
  rng = np.random.default_rng(10)
  prior_mu, prior_logvar = rng.normal(size=(2, 4)), rng.normal(scale=0.5, size=(2, 4))
  moved = {"prior_mu": jnp.asarray(prior_mu, jnp.float32), "prior_logvar": jnp.asarray(prior_logvar, jnp.float32)}
  params = {**params, "params": {**params["params"], **moved}}
  _, (terms, out) = objectives.model_loss(
    models.ModelParts(spec, module, config.model, 2),
    params,
    objectives.Batch(x, cond),
    objectives.DataStats(1000.0, jnp.array([500.0, 500.0])),
    rng=jax.random.PRNGKey(2),
  )
  mu, logvar = np.asarray(out["mu"], np.float64), np.asarray(out["logvar"], np.float64)
  m, s = prior_mu[np.asarray(cond)], prior_logvar[np.asarray(cond)]
  kl = 0.5 * (s - logvar + (np.exp(logvar) + (mu - m) ** 2) / np.exp(s) - 1)
  np.testing.assert_allclose(out["kl_dims"], kl, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(terms["kl"], kl.sum(-1).mean(), rtol=1e-4)


def test_the_discriminator_models_log_their_regularizer_terms(batch):
  """factor_vae: loss = recon + KL + gamma TC_D, TC_D logged as tc_d; rf_vae: loss = recon + weighted KL +
  gamma TC_D(r z) + eta_s |r|_1 + eta_h H(r), each term logged, the weighted KL and |r|_1 recomputed here."""
  x, cond = batch
  loss, t, _ = _loss("factor_vae", x, cond, gamma=3.0)
  np.testing.assert_allclose(loss, t["recon"] + t["kl"] + 3.0 * t["tc_d"], rtol=1e-5)
  loss, t, out = _loss("rf_vae", x, cond)
  w = tiny_config("rf_vae").model.rf_vae
  r = np.asarray(out["relevance"], np.float64)
  lam = w.lambda_max + (w.lambda_min - w.lambda_max) * r
  np.testing.assert_allclose(t["weighted_kl"], np.mean(np.sum(lam * np.asarray(out["kl_dims"]), -1)), rtol=1e-5)
  np.testing.assert_allclose(t["relevance_l1"], r.sum(), rtol=1e-6)
  reg = t["weighted_kl"] + w.gamma * t["tc_d"] + w.eta_s * t["relevance_l1"] + w.eta_h * t["relevance_entropy"]
  np.testing.assert_allclose(loss, t["recon"] + reg, rtol=1e-5)


def test_model_loss_decomposes_per_shard_with_groups(batch):
  """groups = 2 (model.tc_scope="local" on two devices): mi, tc and dwkl are the means of the two half-batches'
  estimates, with the batch's own noise."""
  x, cond = batch
  config = tiny_config("beta_tcvae")
  _, terms, out = _loss_of(config, x, cond, full=True, groups=2)
  halves = [
    estimators.elbo_decomposition(
      *(out[k][i * 8 : (i + 1) * 8] for k in ("z", "mu", "logvar")),
      dataset_size=1000.0,
      method=config.model.estimator,
      prior_mu=out["prior_mu"][i * 8 : (i + 1) * 8],
      prior_logvar=out["prior_logvar"][i * 8 : (i + 1) * 8],
      eps=out["eps"][i * 8 : (i + 1) * 8],
    )
    for i in (0, 1)
  ]
  for k in ("mi", "tc", "dwkl"):
    np.testing.assert_allclose(terms[k], (halves[0][k] + halves[1][k]) / 2, rtol=1e-5, atol=1e-6, err_msg=k)
