"""FactorVAE / RF-VAE: the loss against a hand computation (discriminator applied in numpy), and the two updates
of a train step kept apart (the VAE's gradient never reaches the discriminator and vice versa)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dcvae_jax.data import input_pipeline
from dcvae_jax.models import objectives
from dcvae_jax.models import registry as models
from dcvae_jax.train import train_step
from tests.helpers import set_model, tiny_config, toy_dataset

LATENT = 4
NUM_C = 2


def np_bce(logits, x):
  logits = np.asarray(logits, np.float64)
  return np.logaddexp(0.0, logits) - np.asarray(x, np.float64) * logits


def np_disc_logits(disc_params, z, layers):
  """networks.Discriminator by hand: ``layers`` x (Dense, leaky ReLU 0.2), then Dense(2)."""
  p = disc_params["params"]
  h = np.asarray(z, np.float64)
  for i in range(layers + 1):
    h = h @ np.asarray(p[f"Dense_{i}"]["kernel"], np.float64) + np.asarray(p[f"Dense_{i}"]["bias"], np.float64)
    if i < layers:
      h = np.where(h > 0, h, 0.2 * h)
  return h


def _batch(b=16, size=6, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray((rng.random((b, size, size, 1)) > 0.5).astype(np.float32))
  cond = jnp.asarray(np.arange(b) % NUM_C, jnp.int32)
  eps = jnp.asarray(rng.standard_normal((b, LATENT)), jnp.float32)
  return x, cond, eps


def _model(name, x, cond, **hp):
  config = tiny_config(name)
  set_model(config, **hp)
  spec = models.get_model(name)
  module = models.make_module(spec, config.model, x.shape[1:], NUM_C)
  params = module.init(jax.random.PRNGKey(0), x, objectives.one_hot_condition(spec, cond, NUM_C), cond)
  disc = models.make_discriminator(spec, config.model)
  disc_params = disc.init(jax.random.PRNGKey(1), jnp.zeros((1, LATENT)))
  # A clear real-vs-permuted preference (logit_real - logit_perm ~ +2 by the last bias alone), so TC_D is far
  # from 0 and a dropped gamma or a flipped sign changes the loss by several nats.
  last = f"Dense_{config.model[spec.section].disc_layers}"
  disc_params = jax.tree.map(lambda a: a, disc_params)
  disc_params["params"][last]["bias"] = jnp.array([1.5, -0.5], jnp.float32)
  return config, spec, module, params, disc, disc_params


def _model_loss(config, spec, module, params, x, cond, eps, disc, disc_params):
  return objectives.model_loss(
    models.ModelParts(spec, module, config.model, NUM_C, disc=disc),
    params,
    objectives.Batch(x, cond, eps),
    objectives.DataStats(1000.0, jnp.array([500.0, 500.0])),
    disc_params,
  )


def _hand_pieces(module, params, x, eps):
  """recon, KL(q || N(0, I)) per dimension, and z, from the encoder/decoder outputs (eps given)."""
  mu, logvar = (np.asarray(a, np.float64) for a in module.apply(params, x, None, method="encode"))
  z = mu + np.exp(0.5 * logvar) * np.asarray(eps, np.float64)
  logits = module.apply(params, jnp.asarray(z, jnp.float32), None, method="decode")
  recon = np_bce(logits, x).sum((1, 2, 3)).mean()
  kl_dims = 0.5 * (np.exp(logvar) + mu**2 - 1.0 - logvar)
  return recon, kl_dims, z


@pytest.mark.parametrize("gamma", [6.4, 1.5])
def test_factor_vae_loss_is_recon_plus_kl_plus_gamma_tc_d(gamma):
  x, cond, eps = _batch()
  config, spec, module, params, disc, dp = _model("factor_vae", x, cond, gamma=gamma)
  loss, (terms, _) = _model_loss(config, spec, module, params, x, cond, eps, disc, dp)
  recon, kl_dims, z = _hand_pieces(module, params, x, eps)
  kl = kl_dims.sum(1).mean()
  logits = np_disc_logits(dp, z, config.model.factor_vae.disc_layers)
  tc_d = np.mean(logits[:, 0] - logits[:, 1])
  assert tc_d > 1.0  # the bias set in _model: the sign and weight of the term are visible
  np.testing.assert_allclose(terms["recon"], recon, rtol=1e-5)
  np.testing.assert_allclose(terms["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(terms["tc_d"], tc_d, rtol=1e-5)
  np.testing.assert_allclose(loss, recon + kl + gamma * tc_d, rtol=1e-5)
  np.testing.assert_allclose(terms["loss"], loss, rtol=0)
  np.testing.assert_allclose(terms["elbo"], recon + kl, rtol=1e-5)  # the ELBO carries no TC_D


@pytest.mark.parametrize("gamma", [6.4, 1.5])
def test_rf_vae_loss_by_hand(gamma):
  x, cond, eps = _batch(seed=1)
  hp = dict(gamma=gamma, lambda_min=0.1, lambda_max=10.0, eta_s=0.7, eta_h=1.3)
  config, spec, module, params, disc, dp = _model("rf_vae", x, cond, **hp)
  rho = np.array([-1.0, 0.5, 2.0, 0.0])
  params = {"params": dict(params["params"], relevance_logit=jnp.asarray(rho, jnp.float32))}
  loss, (terms, _) = _model_loss(config, spec, module, params, x, cond, eps, disc, dp)
  recon, kl_dims, z = _hand_pieces(module, params, x, eps)
  r = 1.0 / (1.0 + np.exp(-rho))
  lam = 10.0 + (0.1 - 10.0) * r
  wkl = np.mean((lam * kl_dims).sum(1))
  logits = np_disc_logits(dp, z * r, config.model.rf_vae.disc_layers)  # D judges r * z
  tc_d = np.mean(logits[:, 0] - logits[:, 1])
  l1 = r.sum()
  ent = -(r * np.log(r) + (1 - r) * np.log(1 - r)).sum()
  assert tc_d > 1.0
  np.testing.assert_allclose(terms["tc_d"], tc_d, rtol=1e-5)
  np.testing.assert_allclose(loss, recon + wkl + gamma * tc_d + 0.7 * l1 + 1.3 * ent, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# The train step's two updates.

IMAGE = (8, 8, 1)
B = 32


def _step_inputs(seed=0):
  ds = toy_dataset()
  x_all = jnp.asarray(ds.x_train)
  cond_all = jnp.asarray(ds.y_train % NUM_C, jnp.int32)
  idx = jnp.arange(B, dtype=jnp.int32)
  counts = np.bincount(np.asarray(cond_all), minlength=NUM_C).astype(np.float32)
  stats = dict(dataset_size=jnp.float32(x_all.shape[0]), condition_counts=jnp.asarray(counts))
  keys = jax.random.split(jax.random.PRNGKey(100 + seed))
  eps = jax.random.normal(jax.random.PRNGKey(200 + seed), (B, LATENT))
  return x_all, cond_all, idx, stats, jnp.array(True), keys, eps


def _setup(name, **train_cfg):
  config = tiny_config(name, **train_cfg)
  return train_step.make_setup(config, IMAGE, NUM_C, num_devices=1)


def _one_step(setup, state, inputs):
  x_all, cond_all, idx, stats, active, keys, eps = inputs

  def step(s):
    images = input_pipeline.device_batch(
      x_all, cond_all, idx, keys[0], binarize=setup.binarize, dequantize=setup.dequantize
    )
    batch = objectives.Batch(images["x"], images["cond"], eps)
    return train_step.train_step(setup, s, batch, objectives.DataStats(**stats), active, keys[1])

  return jax.jit(step)(state)


def _norm(tree):
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(a, np.float64))) for a in jax.tree.leaves(tree))))


def _max_diff(a, b):
  return max(
    float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


@pytest.mark.parametrize("name", ["factor_vae", "rf_vae"])
def test_train_step_updates_are_the_two_separate_gradients(name):
  """With plain SGD (rate 1) the step's change of each parameter set is minus the gradient it used: the VAE's
  is the gradient of the VAE loss with D held fixed, D's is the gradient of D's cross-entropy on the
  stop-gradient codes. The cross gradients (VAE loss -> D params, D loss -> VAE params through z) are far from 0,
  so adding either one to an update would fail the comparison."""
  setup = dataclasses.replace(_setup(name), tx=optax.sgd(1.0), disc_tx=optax.sgd(1.0))
  state = train_step.init_state(setup, jax.random.PRNGKey(3), IMAGE)
  inputs = _step_inputs()
  x_all, cond_all, idx, stats, _, keys, eps = inputs
  new, terms = _one_step(setup, state, inputs)

  x = input_pipeline.preprocess(x_all[idx], setup.binarize)
  cond = cond_all[idx]

  def vae_loss(params, disc_params):
    return objectives.model_loss(
      setup, params, objectives.Batch(x, cond, eps), objectives.DataStats(**stats), disc_params
    )[0]

  def disc_loss(params, disc_params):  # no stop_gradient: the leak a correct step must not have
    out = objectives.forward(setup.spec, setup.module, params, x, cond, None, NUM_C, eps=eps)
    z = objectives.discriminator_input(setup.spec, out)
    return objectives.discriminator_loss(setup.disc, disc_params, z, keys[1])[0]

  def cut_loss(params):  # D's loss on the codes as the step feeds them: through stop_gradient
    out = objectives.forward(setup.spec, setup.module, params, x, cond, None, NUM_C, eps=eps)
    z = jax.lax.stop_gradient(objectives.discriminator_input(setup.spec, out))
    return objectives.discriminator_loss(setup.disc, state.disc_params, z, keys[1])[0]

  @jax.jit
  def gradients(params, disc_params):
    return (
      jax.value_and_grad(vae_loss, argnums=(0, 1))(params, disc_params),
      jax.value_and_grad(disc_loss, argnums=(0, 1))(params, disc_params),
      jax.grad(cut_loss)(params),
    )

  ((l_vae, (g_vae, g_vae_to_disc)), (l_disc, (g_disc_to_vae, g_disc)), g_cut) = gradients(
    state.params, state.disc_params
  )
  want_params = jax.tree.map(lambda p, g: p - g, state.params, g_vae)
  want_disc = jax.tree.map(lambda p, g: p - g, state.disc_params, g_disc)
  tol = 2e-6  # measured: 1.2e-7 (float32 rounding of the same gradients)
  assert _max_diff(new.params, want_params) < tol
  assert _max_diff(new.disc_params, want_disc) < tol
  np.testing.assert_allclose(terms["loss"], l_vae, rtol=1e-5)
  np.testing.assert_allclose(terms["disc_loss"], l_disc, rtol=1e-5)
  # The leaks the comparison would catch are large against its tolerance.
  assert max(float(np.max(np.abs(np.asarray(g)))) for g in jax.tree.leaves(g_vae_to_disc)) > 100 * tol
  assert max(float(np.max(np.abs(np.asarray(g)))) for g in jax.tree.leaves(g_disc_to_vae)) > 100 * tol
  # And the stop_gradient the step puts on D's input indeed cuts that path.
  assert _norm(g_cut) == 0.0


@pytest.mark.parametrize("frozen", ["disc", "vae"])
def test_each_learning_rate_moves_only_its_own_parameters(frozen):
  """train.disc_learning_rate = 0 leaves D's parameters exactly as they were while the VAE's move; and
  train.learning_rate = 0 the other way round (the two optimizers are not swapped or shared)."""
  rates = dict(disc_learning_rate=0.0) if frozen == "disc" else dict(learning_rate=0.0)
  setup = _setup("factor_vae", **rates)
  state = train_step.init_state(setup, jax.random.PRNGKey(4), IMAGE)
  new, terms = _one_step(setup, state, _step_inputs(seed=1))
  assert bool(terms["finite"])
  vae_moved = _max_diff(new.params, state.params)
  disc_moved = _max_diff(new.disc_params, state.disc_params)
  if frozen == "disc":
    assert disc_moved == 0.0 and vae_moved > 1e-4
  else:
    assert vae_moved == 0.0 and disc_moved > 1e-5
  assert int(new.step) == 1
