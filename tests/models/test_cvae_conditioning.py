"""The condition reaches the decoder (CVAE and dCVAE, MLP and conv), and dCVAE's prior is one row per condition."""

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
from tests.helpers import tiny_config, toy_dataset

NUM_C = 3
LATENT = 4
IMAGE = (8, 8, 1)


def _model(name, arch="mlp"):
  config = tiny_config(name)
  config.model.arch = arch
  spec = models.get_model(name)
  module = models.make_module(spec, config.model, IMAGE, NUM_C)
  x = jnp.zeros((2, *IMAGE))
  ids = jnp.zeros((2,), jnp.int32)
  params = module.init(jax.random.PRNGKey(0), x, objectives.one_hot_condition(spec, ids, NUM_C), ids)
  return config, spec, module, params


def _codes(b=6, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((b, LATENT)), jnp.float32)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("name", ["cvae", "dcvae"])
def test_decoding_one_code_under_each_condition_gives_different_images(name, arch):
  _, spec, module, params = _model(name, arch)
  assert spec.conditional
  z = _codes()
  outs = []
  for k in range(NUM_C):
    c = objectives.one_hot_condition(spec, jnp.full((z.shape[0],), k, jnp.int32), NUM_C)
    np.testing.assert_array_equal(c, np.eye(NUM_C)[np.full(z.shape[0], k)])
    outs.append(np.asarray(module.apply(params, z, c, method="decode")))
  for a in range(NUM_C):
    for b in range(a + 1, NUM_C):
      # every example's image changes with the condition, by far more than rounding
      assert np.all(np.abs(outs[a] - outs[b]).reshape(z.shape[0], -1).max(1) > 1e-3), (a, b)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("name", ["cvae", "dcvae"])
def test_decoder_output_has_a_nonzero_gradient_in_the_condition(name, arch):
  _, spec, module, params = _model(name, arch)
  z = _codes(b=4, seed=1)
  c = objectives.one_hot_condition(spec, jnp.array([0, 1, 2, 1], jnp.int32), NUM_C)
  # d(image) / d(c): (B, H, W, 1, B, C); example i's image depends on example i's condition only
  jac = np.asarray(jax.jacobian(lambda c: module.apply(params, z, c, method="decode"))(c))
  per_example = np.abs(jac).reshape(4, -1, 4, NUM_C).max(1)  # (B image, B condition, C)
  for i in range(4):
    assert np.all(per_example[i, i] > 1e-4), per_example[i, i]  # every condition entry matters
    assert np.all(np.delete(per_example[i], i, axis=0) == 0.0)  # no other example's condition does


@pytest.mark.parametrize("name", ["cvae", "dcvae"])
def test_forward_decodes_under_the_examples_condition(name):
  """objectives.forward hands the decoder the one-hot of cond_ids: its logits are decode(z, c) for that c and
  not for any other condition."""
  _, spec, module, params = _model(name)
  x = jnp.asarray((np.random.default_rng(2).random((6, *IMAGE)) > 0.5).astype(np.float32))
  cond = jnp.array([0, 1, 2, 0, 1, 2], jnp.int32)
  eps = _codes(seed=3)
  out = objectives.forward(spec, module, params, x, cond, None, NUM_C, eps=eps)
  own = module.apply(params, out["z"], jax.nn.one_hot(cond, NUM_C), method="decode")
  other = module.apply(params, out["z"], jax.nn.one_hot((cond + 1) % NUM_C, NUM_C), method="decode")
  np.testing.assert_allclose(out["logits"], own, rtol=1e-6, atol=1e-6)
  assert np.abs(np.asarray(out["logits"]) - np.asarray(other)).max() > 1e-3


def test_unconditional_vae_gets_no_condition():
  _, spec, module, params = _model("vae")
  assert objectives.one_hot_condition(spec, jnp.array([0, 1]), NUM_C) is None
  assert params["params"]["decoder"]["Dense_0"]["kernel"].shape[0] == LATENT  # z only


# ---------------------------------------------------------------------------------------------------------
# dCVAE's conditional prior r(z|c).


def test_dcvae_prior_is_the_row_of_each_examples_condition():
  _, _, module, params = _model("dcvae")
  rng = np.random.default_rng(4)
  pm = rng.normal(size=(NUM_C, LATENT)).astype(np.float32)
  pl = rng.normal(size=(NUM_C, LATENT)).astype(np.float32)
  params = {"params": dict(params["params"], prior_mu=jnp.asarray(pm), prior_logvar=jnp.asarray(pl))}
  ids = np.array([2, 0, 1, 2])
  mu, logvar = module.apply(params, jnp.asarray(ids), method="prior")
  np.testing.assert_array_equal(mu, pm[ids])
  np.testing.assert_array_equal(logvar, pl[ids])
  # cvae keeps N(0, I) for every condition
  _, _, cmod, cparams = _model("cvae")
  mu, logvar = cmod.apply(cparams, jnp.asarray(ids), method="prior")
  np.testing.assert_array_equal(mu, 0.0)
  np.testing.assert_array_equal(logvar, 0.0)


def test_dcvae_prior_rows_learn_per_condition():
  """One SGD step from the N(0, I) initialisation: the rows of the conditions in the batch move, each its own
  way; the row of a condition absent from the batch does not."""
  config = tiny_config("dcvae")
  setup = train_step.make_setup(config, IMAGE, NUM_C, num_devices=1)
  setup = dataclasses.replace(setup, tx=optax.sgd(0.1))
  state = train_step.init_state(setup, jax.random.PRNGKey(5), IMAGE)
  ds = toy_dataset()
  cond_all = jnp.asarray(ds.y_train % 2, jnp.int32)  # conditions 0 and 1 only; condition 2 never appears
  b = 32
  stats = dict(
    dataset_size=jnp.float32(ds.x_train.shape[0]),
    condition_counts=jnp.asarray(np.bincount(np.asarray(cond_all), minlength=NUM_C), jnp.float32),
  )
  keys = jax.random.split(jax.random.PRNGKey(6))
  eps = jax.random.normal(jax.random.PRNGKey(7), (b, LATENT))

  def step(s):
    images = input_pipeline.device_batch(
      jnp.asarray(ds.x_train),
      cond_all,
      jnp.arange(b, dtype=jnp.int32),
      keys[0],
      binarize=setup.binarize,
      dequantize=setup.dequantize,
    )
    batch = objectives.Batch(images["x"], images["cond"], eps)
    return train_step.train_step(setup, s, batch, objectives.DataStats(**stats), jnp.array(True), keys[1])

  new, terms = jax.jit(step)(state)
  assert bool(terms["finite"])
  for key in ("prior_mu", "prior_logvar"):
    old, now = np.asarray(state.params["params"][key]), np.asarray(new.params["params"][key])
    np.testing.assert_array_equal(old, 0.0)
    moved = np.abs(now - old).max(1)
    assert moved[0] > 1e-4 and moved[1] > 1e-4, (key, moved)
    assert moved[2] == 0.0, key
    assert np.abs(now[0] - now[1]).max() > 1e-4, key
