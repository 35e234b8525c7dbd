"""The model zoo: known answers for each objective, and every model learning on real digits.

* A FactorVAE discriminator recovers the closed-form TC of a correlated Gaussian (and ~0 for independent codes).
* dCVAE reduces to beta-TCVAE (one condition, prior N(0, I)) and to the conditional negative ELBO with its learned
  prior (alpha = beta = gamma = 1), and its TC is the conditional one.
* RF-VAE's relevance weighting and penalties; the discriminator loss's labels and column-wise permutation.
* All seven models' losses fall on real MNIST digits (mnist5k) with every logged term finite.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from scipy.special import logsumexp

from dcvae_jax import data, distributed, models, networks, objectives, protocols, trainer
from tests.helpers import tiny_config


def np_bce(logits, x):
  logits = np.asarray(logits, np.float64)
  return np.logaddexp(0.0, logits) - x * logits  # -log Bernoulli(x; sigmoid(logits))


def np_log_normal(z, mu, logvar):
  return -0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 * np.exp(-logvar))


def _module(name, image_shape, num_conditions, **hp):
  config = tiny_config(name)
  for k, v in hp.items():
    setattr(config.model, k, v)
  spec = models.get_model(name)
  module = models.make_module(spec, config.model, image_shape, num_conditions)
  return config, spec, module


def _init(spec, module, x, cond, num_conditions, seed=0):
  c = objectives.one_hot_condition(spec, cond, num_conditions)
  return module.init(jax.random.PRNGKey(seed), x, c, cond)


def _binary_batch(b=24, size=6, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray((rng.random((b, size, size, 1)) > 0.5).astype(np.float32))


# ---------------------------------------------------------------------------------------------------------
# 1. The FactorVAE discriminator estimates TC by the density-ratio trick.

D_TC = 3
COV = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.4], [0.3, 0.4, 1.0]])


def _closed_tc(cov):
  return 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])


def _true_log_ratio(z, cov):
  """log N(z; 0, cov) - sum_j log N(z_j; 0, cov_jj): the function an optimal discriminator's logit gap learns."""
  joint = scipy.stats.multivariate_normal(np.zeros(len(cov)), cov).logpdf(z)
  marg = scipy.stats.norm.logpdf(z, 0.0, np.sqrt(np.diag(cov))).sum(1)
  return joint - marg


def test_discriminator_recovers_closed_form_tc():
  """D (2 x Dense(64) here; the default is 6 x Dense(1000)) trained with optax Adam through
  objectives.discriminator_loss on fresh z ~ N(0, Sigma) each step. TC_D on fresh samples must match
  0.5 (sum log Sigma_jj - log det Sigma) = 0.599 within 0.1, and be ~0 when Sigma = I.
  Measured: TC_D 0.581 here (0.565-0.590 over other seeds: a slight under-estimate), 0.000 for independent codes.
  The default 6 x Dense(1000) D with the project's optimizer (Adam 1e-4, b1 0.5, b2 0.9), 1000 steps of 256,
  gave 0.601 -- but took ~4 minutes on CPU, too slow for this test."""
  steps, batch = 2000, 512
  disc = networks.Discriminator(layers=2, width=64)
  tx = optax.adam(optax.cosine_decay_schedule(2e-3, steps, alpha=0.05))
  covs = np.stack([COV, np.eye(D_TC)])
  chol = jnp.asarray(np.linalg.cholesky(covs), jnp.float32)

  def fit(l_factor, key):
    k_init, k_train = jax.random.split(key)
    params = disc.init(k_init, jnp.zeros((1, D_TC)))

    def step(carry, k):
      p, o = carry
      k_z, k_perm = jax.random.split(k)
      z = jax.random.normal(k_z, (batch, D_TC)) @ l_factor.T
      (loss, acc), g = jax.value_and_grad(lambda p: objectives.discriminator_loss(disc, p, z, k_perm), has_aux=True)(p)
      u, o = tx.update(g, o, p)
      return (optax.apply_updates(p, u), o), (loss, acc)

    (params, _), (losses, accs) = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(k_train, steps))
    return params, losses[-200:].mean(), accs[-200:].mean()

  params, loss, acc = jax.jit(jax.vmap(fit))(chol, jax.random.split(jax.random.PRNGKey(0), 2))
  z_test = np.random.default_rng(1).standard_normal((20000, D_TC)) @ np.linalg.cholesky(covs).transpose(0, 2, 1)
  tc_d = [
    float(objectives.discriminator_tc(disc, jax.tree.map(lambda a: a[m], params), jnp.asarray(z_test[m], jnp.float32)))
    for m in range(2)
  ]
  closed = _closed_tc(COV)
  print(f"TC_D {tc_d[0]:.4f} (closed form {closed:.4f}), independent {tc_d[1]:.4f}; acc {acc}, loss {loss}")
  assert closed == pytest.approx(0.5987, abs=1e-3)
  assert abs(tc_d[0] - closed) < 0.1, (tc_d[0], closed)
  assert abs(tc_d[1]) < 0.05, tc_d[1]
  # Correlated codes are told apart from permuted ones (Bayes accuracy ~0.70 here), independent ones not.
  assert 0.65 < float(acc[0]) < 0.75 and abs(float(acc[1]) - 0.5) < 0.02, acc
  assert float(loss[0]) < 0.60 and float(loss[1]) == pytest.approx(math.log(2), abs=0.01), loss
  # Pointwise, the logit gap tracks the true log density ratio, not only its mean.
  logits = np.asarray(disc.apply(jax.tree.map(lambda a: a[0], params), jnp.asarray(z_test[0], jnp.float32)))
  gap, true = logits[:, 0] - logits[:, 1], _true_log_ratio(z_test[0], COV)
  assert np.corrcoef(gap, true)[0, 1] > 0.95
  assert np.sqrt(np.mean((gap - true) ** 2)) < 0.3


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


def test_discriminator_loss_labels_and_column_permutation():
  """discriminator_loss labels real codes 0 and permuted ones 1 (the convention discriminator_tc reads as
  logit_real - logit_perm), and its permuted half permutes each latent column independently."""
  z = jnp.asarray(np.random.default_rng(0).standard_normal((64, 5)), jnp.float32)
  fake = _RecordingDisc(a=1.5)
  loss, acc = objectives.discriminator_loss(fake, None, z, jax.random.PRNGKey(3))
  # a perfect discriminator with logit gap 2a: cross-entropy log(1 + exp(-2a)), accuracy 1
  assert float(loss) == pytest.approx(math.log1p(math.exp(-3.0)), rel=1e-5)
  assert float(acc) == 1.0
  seen = np.asarray(fake.seen)
  np.testing.assert_array_equal(seen[:64], np.asarray(z))
  zp, zn = seen[64:], np.asarray(z)
  for k in range(5):  # each column keeps its values ...
    np.testing.assert_array_equal(np.sort(zp[:, k]), np.sort(zn[:, k]))
  # ... under different permutations, so (almost) no permuted row is a row of z
  rows = {tuple(r) for r in zn}
  assert sum(tuple(r) in rows for r in zp) <= 2
  fake.halves = False  # TC_D on real codes reads the gap logit_real - logit_perm = 2a
  assert float(objectives.discriminator_tc(fake, None, z)) == pytest.approx(3.0)


# ---------------------------------------------------------------------------------------------------------
# 2-4. dCVAE.


@pytest.mark.parametrize("method", ["mss", "mws"])
def test_dcvae_one_condition_fixed_prior_equals_beta_tcvae(method):
  x = _binary_batch()
  n = 3000.0
  hp = dict(alpha=1.3, tc_beta=6.0, gamma=0.7, estimator=method)
  cfg_b, spec_b, mod_b = _module("beta_tcvae", x.shape[1:], 1, **hp)
  cfg_d, spec_d, mod_d = _module("dcvae", x.shape[1:], 1, **hp)
  cond = jnp.zeros((x.shape[0],), jnp.int32)
  p_b = _init(spec_b, mod_b, x, cond, 1, seed=0)
  p_d = _init(spec_d, mod_d, x, cond, 1, seed=5)
  # beta_tcvae's weights in dcvae; the extra input row (the 1-dim one-hot condition, last) gets zeros.
  pb, pd = p_b["params"], jax.tree.map(lambda a: a, p_d["params"])
  for part in ("encoder", "decoder"):
    for layer, leaves in pb[part].items():
      for leaf, val in leaves.items():
        if layer == "Dense_0" and leaf == "kernel":
          val = jnp.concatenate([val, jnp.zeros((1, val.shape[1]))], axis=0)
        assert pd[part][layer][leaf].shape == val.shape, (part, layer, leaf)
        pd[part][layer][leaf] = val
  np.testing.assert_array_equal(pd["prior_mu"], 0.0)  # N(0, I) at init
  np.testing.assert_array_equal(pd["prior_logvar"], 0.0)
  p_d = {"params": pd}
  rng = jax.random.PRNGKey(7)
  loss_b, (t_b, out_b) = objectives.model_loss(
    spec_b, mod_b, p_b, x, cond, rng, hp=cfg_b.model, num_conditions=1, dataset_size=n, condition_counts=None
  )
  # dcvae reads the per-condition count (its dataset_size is deliberately wrong: it must be unused)
  loss_d, (t_d, out_d) = objectives.model_loss(
    spec_d,
    mod_d,
    p_d,
    x,
    cond,
    rng,
    hp=cfg_d.model,
    num_conditions=1,
    dataset_size=17.0,
    condition_counts=jnp.array([n]),
  )
  np.testing.assert_allclose(out_d["z"], out_b["z"], rtol=1e-6, atol=1e-6)
  for k in ("loss", "recon", "kl", "elbo", "mi", "tc", "dwkl"):
    np.testing.assert_allclose(t_d[k], t_b[k], rtol=1e-5, atol=1e-4, err_msg=k)
  assert abs(float(t_b["tc"])) > 1e-3 and float(t_b["mi"]) > 0.1  # the terms are not trivially zero
  np.testing.assert_allclose(loss_d, t_b["recon"] + 1.3 * t_b["mi"] + 6.0 * t_b["tc"] + 0.7 * t_b["dwkl"], rtol=1e-5)


@pytest.mark.parametrize("method", ["mss", "mws"])
def test_dcvae_with_unit_weights_is_conditional_elbo_with_learned_prior(method):
  """alpha = beta = gamma = 1: loss = recon + mean_i [log q(z_i|x_i,c_i) - log r(z_i|c_i)] exactly (mi + tc + dwkl
  telescopes; the estimator's log q(z) cancels, so MWS has no constant here either)."""
  num_c, b = 3, 24
  x = _binary_batch(b, seed=1)
  cond = jnp.asarray(np.random.default_rng(2).integers(0, num_c, b), jnp.int32)
  cfg, spec, mod = _module("dcvae", x.shape[1:], num_c, alpha=1.0, tc_beta=1.0, gamma=1.0, estimator=method)
  params = _init(spec, mod, x, cond, num_c)
  rng = np.random.default_rng(3)
  prior_mu = rng.normal(0, 1.0, (num_c, 4)).astype(np.float32)
  prior_lv = rng.normal(0, 0.5, (num_c, 4)).astype(np.float32)
  params = {"params": dict(params["params"], prior_mu=jnp.asarray(prior_mu), prior_logvar=jnp.asarray(prior_lv))}
  counts = jnp.array([400.0, 250.0, 900.0])
  loss, (t, out) = objectives.model_loss(
    spec,
    mod,
    params,
    x,
    cond,
    jax.random.PRNGKey(4),
    hp=cfg.model,
    num_conditions=num_c,
    dataset_size=1550.0,
    condition_counts=counts,
  )
  z, mu, lv = (np.asarray(out[k], np.float64) for k in ("z", "mu", "logvar"))
  c = np.asarray(cond)
  pm, pl = prior_mu[c].astype(np.float64), prior_lv[c].astype(np.float64)
  recon = np_bce(out["logits"], np.asarray(x)).sum((1, 2, 3)).mean()
  log_q = np_log_normal(z, mu, lv).sum(1)
  log_r = np_log_normal(z, pm, pl).sum(1)
  want = recon + np.mean(log_q - log_r)
  np.testing.assert_allclose(t["recon"], recon, rtol=1e-5)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(t["mi"] + t["tc"] + t["dwkl"], np.mean(log_q - log_r), rtol=1e-5, atol=1e-3)
  # the logged analytic KL and ELBO are against the same learned conditional prior
  kl = 0.5 * (pl - lv + (np.exp(lv) + (mu - pm) ** 2) * np.exp(-pl) - 1).sum(1).mean()
  np.testing.assert_allclose(t["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(t["elbo"], recon + kl, rtol=1e-5)
  # the prior matters: against N(0, I) the single-sample KL differs by tens of nats
  assert abs(np.mean(np_log_normal(z, 0.0, 0.0).sum(1) - log_r)) > 1.0


def test_dcvae_tc_is_conditional():
  """Codes independent within each condition, correlated across them (every dimension shifts with c).
  dcvae's TC (mixture restricted to the condition) is ~0; beta_tcvae's (pooled mixture) matches the TC of
  the two-component mixture, computed here from exact densities."""
  b, s2, m = 2048, 0.25, 1.5
  rng = np.random.default_rng(11)
  c = rng.integers(0, 2, b).astype(np.int32)
  means = np.where(c[:, None] == 0, m, -m) * np.ones((1, 4))
  mu = means + math.sqrt(1 - s2) * rng.standard_normal((b, 4))  # q(z|c) = N(m_c, I)
  z = mu + math.sqrt(s2) * rng.standard_normal((b, 4))
  out = dict(
    z=z, mu=mu, logvar=np.full((b, 4), math.log(s2)), prior_mu=means, prior_logvar=np.zeros((b, 4)), cond_ids=c
  )
  out = {k: jnp.asarray(v, jnp.int32 if k == "cond_ids" else jnp.float32) for k, v in out.items()}
  counts = jnp.asarray(np.bincount(c), jnp.float32)
  dc = objectives.decompose(
    models.get_model("dcvae"), out, dataset_size=float(b), condition_counts=counts, method="mss"
  )
  btc = objectives.decompose(
    models.get_model("beta_tcvae"),
    dict(out, prior_mu=jnp.zeros((b, 4))),
    dataset_size=float(b),
    condition_counts=None,
    method="mss",
  )
  # exact TC of q(z) = 0.5 N(m 1, I) + 0.5 N(-m 1, I), Monte Carlo over the same z
  comp = np.stack([scipy.stats.norm.logpdf(z, s, 1.0) for s in (m, -m)])  # (2, b, 4)
  log_qz = logsumexp(comp.sum(2), axis=0) + math.log(0.5)
  log_qzj = logsumexp(comp, axis=0) + math.log(0.5)
  tc_pooled = float(np.mean(log_qz - log_qzj.sum(1)))
  print(f"conditional TC {float(dc['tc']):.4f}, pooled TC {float(btc['tc']):.4f} (exact {tc_pooled:.4f})")
  assert tc_pooled > 1.2
  assert abs(float(dc["tc"])) < 0.08, dc
  assert float(btc["tc"]) == pytest.approx(tc_pooled, abs=0.1)
  assert abs(float(dc["dwkl"])) < 0.05  # q(z_j|c) = r(z_j|c) = N(m_c, 1)


# ---------------------------------------------------------------------------------------------------------
# 5. RF-VAE.


def _rf_loss(rho, x, **hp):
  cfg, spec, mod = _module("rf_vae", x.shape[1:], 1, **hp)
  cond = jnp.zeros((x.shape[0],), jnp.int32)
  params = _init(spec, mod, x, cond, 1)
  params = {"params": dict(params["params"], relevance_logit=jnp.asarray(rho, jnp.float32))}
  disc = models.make_discriminator(cfg.model)
  disc_params = disc.init(jax.random.PRNGKey(1), jnp.zeros((1, 4)))
  loss, (t, out) = objectives.model_loss(
    spec,
    mod,
    params,
    x,
    cond,
    jax.random.PRNGKey(2),
    hp=cfg.model,
    num_conditions=1,
    dataset_size=1000.0,
    condition_counts=None,
    disc=disc,
    disc_params=disc_params,
  )
  return loss, t, out, (disc, disc_params)


def test_rf_vae_relevance_weighting_and_penalties():
  x = _binary_batch(16, seed=3)
  hp = dict(lambda_min=0.1, lambda_max=10.0, eta_s=6.4, eta_h=3.2, factor_gamma=2.0)
  for rho, lam, l1 in ((-40.0, 10.0, 0.0), (40.0, 0.1, 4.0)):  # r = sigmoid(rho) = 0 and 1
    _, t, out, _ = _rf_loss(np.full(4, rho), x, **hp)
    np.testing.assert_allclose(t["weighted_kl"], lam * t["kl"], rtol=1e-5)
    assert float(t["relevance_l1"]) == pytest.approx(l1, abs=1e-6)
    assert 0.0 <= float(t["relevance_entropy"]) < 1e-5
  # an intermediate r: every piece against numpy
  rho = np.array([-2.0, -0.5, 0.3, 1.5])
  loss, t, out, (disc, dp) = _rf_loss(rho, x, **hp)
  r = 1 / (1 + np.exp(-rho))
  mu, lv = np.asarray(out["mu"], np.float64), np.asarray(out["logvar"], np.float64)
  kl_dims = 0.5 * (np.exp(lv) + mu**2 - 1 - lv)
  lam = 10.0 + (0.1 - 10.0) * r
  wkl = np.mean((lam * kl_dims).sum(1))
  l1 = r.sum()
  ent = -(r * np.log(r) + (1 - r) * np.log(1 - r)).sum()
  recon = np_bce(out["logits"], np.asarray(x)).sum((1, 2, 3)).mean()
  tc_d = float(objectives.discriminator_tc(disc, dp, out["z"] * jnp.asarray(r, jnp.float32)))
  np.testing.assert_allclose(out["relevance"], r, rtol=1e-6)
  np.testing.assert_allclose(t["weighted_kl"], wkl, rtol=1e-5)
  np.testing.assert_allclose(t["relevance_l1"], l1, rtol=1e-6)
  np.testing.assert_allclose(t["relevance_entropy"], ent, rtol=1e-5)
  np.testing.assert_allclose(t["tc_d"], tc_d, rtol=1e-5, atol=1e-6)  # D judges r * z
  np.testing.assert_allclose(loss, recon + wkl + 2.0 * tc_d + 6.4 * l1 + 3.2 * ent, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# 7. Every model learns on real digits.

LOGGED = ("loss", "recon", "kl", "mi", "tc", "dwkl", "elbo", "grad_norm")
DISC_LOGGED = ("tc_d", "disc_loss", "disc_acc")
RF_LOGGED = ("weighted_kl", "relevance_l1", "relevance_entropy")


@pytest.fixture(scope="module")
def mnist5k():
  return data.load_dataset("mnist5k")


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_every_model_learns_on_real_digits(tmp_path, mnist5k, model):
  """5 epochs x 56 steps (batch 64, MLP (128, 64), d = 8, D 2 x 64) on the 3,600 non-zero digits of mnist5k."""
  config = tiny_config(model, num_epochs=5, batch_size=64, log_every_steps=1, steps_per_call=70)
  config.model.hidden = (128, 64)
  config.model.latent_dim = 8
  config.model.disc_width = 64
  config.protocol.classes = (0,)
  runs = protocols.make_runs(config.protocol, mnist5k.num_classes, config.seed)
  with open(tmp_path / "m.jsonl", "w") as f:
    _, _, steps = trainer.train_runs(
      config,
      mnist5k.x_train,
      mnist5k.y_train,
      runs,
      str(tmp_path / "ck"),
      image_shape=(28, 28, 1),
      num_conditions=len(runs[0].normal),
      log_file=f,
      mesh=distributed.make_mesh(jax.devices()[:1]),
      log=lambda *_: None,
    )
  lines = [json.loads(l) for l in open(tmp_path / "m.jsonl")]
  assert steps == 5 * (3600 // 64) == len(lines)
  spec = models.MODELS[model]
  keys = LOGGED + (DISC_LOGGED if spec.discriminator else ()) + (RF_LOGGED if spec.relevance else ())
  for key in keys:
    assert all(key in l for l in lines), (model, key)
    values = np.array([l[key] for l in lines])
    assert np.all(np.isfinite(values)), (model, key)
  loss = np.array([l["loss"] for l in lines])
  first, last = loss[:20].mean(), loss[-20:].mean()
  print(f"{model}: loss {first:.1f} -> {last:.1f} ({100 * (1 - last / first):.0f}% drop)")
  assert last < 0.7 * first, (model, first, last)  # measured: 51% (rf_vae) to 67% (cvae) lower
