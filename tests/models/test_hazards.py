"""Numerical hazards, each pinned: float32 sums at any matmul precision, log densities at tiny variances, and
the weights each model reads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcvae_jax.models import estimators, fast_ops, objectives
from dcvae_jax.models import registry as models
from tests.helpers import tiny_config


def test_sum_per_example_asks_for_highest_precision():
  """TPUs round a DEFAULT-precision f32 dot to bf16 and recent GPUs to TF32; the sum must not depend on that."""
  x = jnp.ones((3, 5), jnp.float32)
  jaxpr = str(jax.make_jaxpr(fast_ops.sum_per_example)(x))
  assert "dot_general" in jaxpr and "HIGHEST" in jaxpr, jaxpr
  a = np.random.default_rng(0).normal(size=(4, 7, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(fast_ops.sum_per_example(jnp.asarray(a))), a.reshape(4, -1).sum(1), rtol=1e-6)


def test_gaussian_log_density_is_finite_at_tiny_variance():
  """(x - mu)^2 * exp(-logvar) is 0 * inf = NaN at x = mu, logvar = -89; the standardised form is not."""
  lv = jnp.float32(-89.0)
  at_mean = float(estimators.gaussian_log_density(jnp.float32(1.0), jnp.float32(1.0), lv))
  assert at_mean == pytest.approx(-0.5 * (np.log(2 * np.pi) - 89.0), rel=1e-6)
  off = float(estimators.gaussian_log_density(jnp.float32(1.5), jnp.float32(1.0), lv))
  assert not np.isnan(off) and off < -1e30


@pytest.mark.parametrize("logvar", [-2.0, -40.0, -89.0])
def test_decomposition_is_exact_at_tiny_variance(logvar):
  """With the noise eps, the anchor's own log q(z_i|x_i) is -0.5 (log 2pi + logvar + eps^2), so MI + TC + DWKL
  equals mean_i [log q(z_i|x_i) - log p(z_i)] computed in float64 from eps alone, at any variance; MI, TC and
  DWKL are finite. (From z - mu the own term cancels: at logvar = -89, z = mu in float32.)"""
  b, d, n = 16, 4, 1000
  rng = np.random.default_rng(0)
  mu = rng.normal(size=(b, d)).astype(np.float32)
  eps = rng.normal(size=(b, d)).astype(np.float32)
  lv = np.full((b, d), logvar, np.float32)
  z = jnp.asarray(mu) + jnp.exp(0.5 * jnp.asarray(lv)) * jnp.asarray(eps)
  out = estimators.elbo_decomposition(z, jnp.asarray(mu), jnp.asarray(lv), dataset_size=n, eps=jnp.asarray(eps))
  assert all(np.isfinite(float(v)) for v in out.values()), out
  own = -0.5 * (np.log(2 * np.pi) + lv.astype(np.float64) + eps.astype(np.float64) ** 2)
  log_pz = -0.5 * (np.log(2 * np.pi) + np.asarray(z, np.float64) ** 2)
  expected = np.mean(np.sum(own - log_pz, axis=1))
  total = float(out["mi"]) + float(out["tc"]) + float(out["dwkl"])
  assert total == pytest.approx(expected, rel=1e-5, abs=1e-3)
  if logvar == -89.0:  # every code is its own cluster: the MSS MI is log N (up to the B-1 other components)
    assert float(out["mi"]) == pytest.approx(np.log(n), abs=1e-3)


def test_forward_carries_its_noise_into_the_decomposition():
  """forward's eps reaches the estimators: the decomposition with it equals the one given eps by hand."""
  config = tiny_config("dcvae")
  spec = models.get_model("dcvae")
  module = models.make_module(spec, config.model, (8, 8, 1), 3)
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(6, 8, 8, 1)), jnp.float32)
  cond = jnp.asarray([0, 1, 2, 0, 1, 2])
  params = module.init(jax.random.PRNGKey(0), x, jax.nn.one_hot(cond, 3), cond)
  eps = jax.random.normal(jax.random.PRNGKey(3), (6, config.model.latent_dim))
  out = objectives.forward(spec, module, params, x, cond, None, 3, eps=eps)
  np.testing.assert_array_equal(np.asarray(out["eps"]), np.asarray(eps))
  counts = jnp.asarray([2.0, 2.0, 2.0])
  got = objectives.decompose(spec, out, dataset_size=6, condition_counts=counts, method="mss")
  want = estimators.elbo_decomposition(
    out["z"],
    out["mu"],
    out["logvar"],
    dataset_size=counts,
    conditions=cond,
    prior_mu=out["prior_mu"],
    prior_logvar=out["prior_logvar"],
    eps=eps,
  )
  for k in ("mi", "tc", "dwkl"):
    assert float(got[k]) == float(want[k])


@pytest.mark.parametrize("name", ["beta_tcvae", "dcvae"])
def test_tc_models_read_tc_beta_of_their_own_section(name):
  """beta_tcvae and dcvae weigh the TC with model.<name>.tc_beta (beta_vae's beta is in its own section)."""
  spec = models.get_model(name)
  out = {"kl": jnp.float32(2.0), "mi": jnp.float32(0.5), "tc": jnp.float32(3.0), "dwkl": jnp.float32(0.25)}
  w = tiny_config(name).model[spec.section]
  base = float(spec.regularizer(out, w, None)[0])
  assert base == pytest.approx(w.alpha * 0.5 + w.tc_beta * 3.0 + w.gamma * 0.25)
  w.tc_beta = w.tc_beta + 1.0
  assert float(spec.regularizer(out, w, None)[0]) == pytest.approx(base + 3.0)


def test_group_of_one_keeps_finite_gradients():
  """A condition with one member in the batch: its anchor's mixture of the others is empty; the gradient of
  MI + TC + DWKL with respect to mu and logvar must still be finite (no 0 * NaN from an all -inf logsumexp)."""
  rng = np.random.default_rng(2)
  b, d = 8, 3
  mu = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
  lv = jnp.asarray(rng.normal(size=(b, d)) * 0.3 - 1.0, jnp.float32)
  eps = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
  cond = jnp.asarray([0, 0, 0, 1, 1, 1, 1, 2])  # condition 2 has a single member

  def total(mu, lv):
    z = mu + jnp.exp(0.5 * lv) * eps
    out = estimators.elbo_decomposition(
      z, mu, lv, dataset_size=jnp.asarray([30.0, 40.0, 10.0]), conditions=cond, eps=eps
    )
    return out["mi"] + out["tc"] + out["dwkl"]

  value, grads = jax.value_and_grad(total, argnums=(0, 1))(mu, lv)
  assert np.isfinite(float(value))
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g)))
