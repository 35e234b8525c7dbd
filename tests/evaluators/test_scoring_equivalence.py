"""Scoring's program against the straightforward one it replaced: the same scores, up to float rounding.

``_plain_scores`` is scoring as first written: every batch of eval.batch_size images padded to full size, each
condition visited with its own encoder and decoder passes for each score (recon, nelbo, iwae, RaPP), the noise
drawn inside the program from the batch's key. The program under test shares those passes, draws the noise
once per batch outside and scores the images a few rows at a time (a short batch costs only its own rows). The
noise is bitwise the same (the same keys, shapes and draws); what differs is which rows a matrix product sees
at once and the order XLA sums them in, so the scores agree to float32 rounding (a few ulp of the largest term,
here rtol 2e-5 / atol 2e-4 on scores of size 10-1000), and the iwae, a deterministic function of that noise, to
the same tolerance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcvae_jax import distributed
from dcvae_jax.data.input_pipeline import preprocess
from dcvae_jax.evaluators import anomaly_scores, scoring
from dcvae_jax.models import estimators, inference, networks, objectives
from dcvae_jax.train import train_step
from tests.helpers import tiny_config

SIZE = 8
RTOL, ATOL = 2e-5, 2e-4


def _plain_batch(setup, params, nap_stats, x, key, num_samples, iwae_samples, iwae_chunk):
  """One model, one padded batch, every condition: dict name -> (B, C')."""
  spec, module, model_cfg = setup.spec, setup.module, setup.model_cfg
  n_cols = setup.num_conditions + 1 if spec.conditional else 1
  b = x.shape[0]
  obs_logvar = objectives.likelihood_logvar(model_cfg, module.apply(params, method=networks.VAE.obs_logvar))

  def nll_of(z, c):
    return objectives.recon_nll(objectives.decode(module, params, z, c), x, model_cfg.likelihood, obs_logvar)

  def under(cid):
    ids = jnp.full((b,), cid, jnp.int32)
    c = objectives.one_hot_condition(spec, ids, setup.num_conditions)
    mu, logvar = objectives.encode(module, params, x, c)
    mean = objectives.mean_image(objectives.decode(module, params, mu, c), model_cfg.likelihood)
    out = {"recon": jnp.square(x - mean).reshape((b, -1)).sum(-1)}
    pmu, plogvar = module.apply(params, ids, method=networks.VAE.prior)
    kl = estimators.kl_diag_gaussians(mu, logvar, pmu, plogvar).sum(-1)

    def nll(k):
      return nll_of(mu + jnp.exp(0.5 * logvar) * jax.random.normal(k, mu.shape), c)

    out["nelbo"] = jnp.mean(jax.vmap(nll)(jax.random.split(key, num_samples)), axis=0) + kl

    def log_w(z, log_q):
      return (
        -jax.lax.map(lambda zs: nll_of(zs, c), z) + estimators.gaussian_log_density(z, pmu, plogvar).sum(-1) - log_q
      )

    out["iwae"] = anomaly_scores.iwae_nll(
      log_w, jax.random.fold_in(key, 0x1AE), mu, logvar, num_samples=iwae_samples, chunk=iwae_chunk
    )
    hidden_x = module.apply(params, x, c, method=networks.VAE.encode_hidden)
    x_hat = objectives.mean_image(objectives.decode(module, params, hidden_x[-1], c), model_cfg.likelihood)
    hidden_r = module.apply(params, x_hat, c, method=networks.VAE.encode_hidden)
    d = anomaly_scores.rapp_differences(hidden_x, hidden_r, x, x_hat)
    out["rapp"] = anomaly_scores.nap(d, nap_stats)
    out["rapp_sap"] = anomaly_scores.sap(d)
    return out

  return {k: v.T for k, v in jax.lax.map(under, jnp.arange(n_cols)).items()}


def _plain_scores(setup, params, nap_stats, x_uint8, *, batch_size, seed, num_samples, iwae_samples, iwae_chunk,
                  per_model_images=False):  # fmt: skip
  one = jax.jit(functools.partial(_plain_batch, setup, num_samples=num_samples, iwae_samples=iwae_samples,
                                  iwae_chunk=iwae_chunk))  # fmt: skip
  axis = 1 if per_model_images else 0
  parts = []
  for i, (start, stop, pad) in enumerate(inference.batch_bounds(x_uint8.shape[axis], batch_size, 1)):
    xb = inference.pad_batch(np.take(x_uint8, np.arange(start, stop), axis=axis), pad, axis)
    x = preprocess(jnp.asarray(xb), setup.binarize, setup.dequantize, image_shape=setup.module.image_shape)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
    per_model = []
    for m in range(jax.tree.leaves(params)[0].shape[0]):
      p = jax.tree.map(lambda a, m=m: a[m], params)
      s = jax.tree.map(lambda a, m=m: a[m], nap_stats)
      per_model.append(one(p, s, x[m] if per_model_images else x, key))
    parts.append({k: np.stack([np.asarray(o[k]) for o in per_model])[:, : stop - start] for k in per_model[0]})
  return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}


def _models(name, m=2, num_conditions=3):
  config = tiny_config(name)
  setup = train_step.make_setup(config, (SIZE, SIZE, 1), num_conditions, num_devices=1)
  states = [train_step.init_state(setup, jax.random.PRNGKey(10 + i), (SIZE, SIZE, 1)) for i in range(m)]
  params = jax.tree.map(lambda *a: jnp.stack(a), *[s.params for s in states])
  if setup.spec.learned_prior:  # rows away from N(0, I), so that each condition's prior matters
    rng = np.random.default_rng(3)
    extra = {k: jnp.asarray(rng.normal(size=(m, num_conditions, 4)) * 0.5, jnp.float32)
             for k in ("prior_mu", "prior_logvar")}  # fmt: skip
    params = {"params": dict(params["params"], **extra)}
  return setup, params


def _nap(setup, params, mesh):
  rng = np.random.default_rng(2)
  m = jax.tree.leaves(params)[0].shape[0]
  x_fit = rng.integers(0, 256, (m, 40, SIZE, SIZE)).astype(np.uint8)
  cond = rng.integers(0, max(setup.num_conditions, 1), (m, 40)).astype(np.int32)
  return scoring.fit_rapp(setup, params, x_fit, cond, mesh, batch_size=16)


@pytest.mark.parametrize("name", ["vae", "cvae", "dcvae"])
@pytest.mark.parametrize("n,batch_size,score_rows", [(70, 32, 8), (70, 32, 12), (20, 32, None), (32, 32, 32)])
def test_scores_equal_the_straightforward_program(name, n, batch_size, score_rows):
  """Every score of every image under every condition, for sets that fill batches, end in a short batch, or are
  shorter than one batch (a validation set), with score_rows dividing the batch or not."""
  setup, params = _models(name)
  mesh = distributed.make_mesh()
  nap = _nap(setup, params, mesh)
  x = np.random.default_rng(n).integers(0, 256, (n, SIZE, SIZE)).astype(np.uint8)
  kw = dict(batch_size=batch_size, seed=5, num_samples=3, iwae_samples=8, iwae_chunk=4)
  want = _plain_scores(setup, params, nap, x, **kw)
  got = scoring.score_test_set(setup, params, x, mesh, nap_stats=nap, score_rows=score_rows, **kw)
  assert set(got) == set(scoring.DEVICE_SCORES)
  cols = setup.num_conditions + 1 if setup.spec.conditional else 1
  for k in scoring.DEVICE_SCORES:
    assert got[k].shape == (2, n, cols), k
    np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=k)


def test_per_model_images_and_a_subset_of_scores():
  """The reference's call: each model scores its own images, only iwae and rapp_sap built in."""
  setup, params = _models("dcvae")
  mesh = distributed.make_mesh()
  x = np.random.default_rng(1).integers(0, 256, (2, 30, SIZE, SIZE)).astype(np.uint8)
  kw = dict(batch_size=24, seed=6, num_samples=2, iwae_samples=8, iwae_chunk=8)
  nap = scoring._identity_nap(setup, params)
  want = _plain_scores(setup, params, nap, x, per_model_images=True, **kw)
  got = scoring.score_test_set(setup, params, x, mesh, scores=("iwae", "rapp_sap"), per_model_images=True,
                               score_rows=7, **kw)  # fmt: skip
  assert set(got) == {"iwae", "rapp_sap"}
  for k in got:
    np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=k)


def test_without_the_zero_condition_the_other_columns_are_unchanged():
  setup, params = _models("cvae")
  mesh = distributed.make_mesh()
  x = np.random.default_rng(4).integers(0, 256, (25, SIZE, SIZE)).astype(np.uint8)
  kw = dict(batch_size=16, seed=1, num_samples=2, iwae_samples=4, iwae_chunk=4, score_rows=8)
  full = scoring.score_test_set(setup, params, x, mesh, **kw)
  cut = scoring.score_test_set(setup, params, x, mesh, zero_condition=False, **kw)
  for k in full:
    np.testing.assert_array_equal(cut[k][..., :-1], full[k][..., :-1], err_msg=k)
    assert np.isnan(cut[k][..., -1]).all(), k


def test_noise_is_the_batchs_whatever_rows_the_program_takes():
  """An image's scores depend on its place in the set and eval.batch_size only: scoring it 4, 8 or all rows
  at a time, or with one decoder pass per code or all codes at once, gives the same values."""
  setup, params = _models("dcvae")
  mesh = distributed.make_mesh()
  x = np.random.default_rng(7).integers(0, 256, (40, SIZE, SIZE)).astype(np.uint8)
  kw = dict(batch_size=16, seed=2, num_samples=2, iwae_samples=8, iwae_chunk=4)
  base = scoring.score_test_set(setup, params, x, mesh, score_rows=16, pass_rows=0, **kw)
  for rows, pass_rows in ((4, 4), (8, 100), (16, 1)):
    other = scoring.score_test_set(setup, params, x, mesh, score_rows=rows, pass_rows=pass_rows, **kw)
    for k in base:
      np.testing.assert_allclose(other[k], base[k], rtol=RTOL, atol=ATOL, err_msg=f"{k} rows={rows}")


@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 6, 3)])
def test_a_flat_draw_reshaped_is_jaxs_draw_of_the_shape(shape):
  key = jax.random.PRNGKey(11)
  np.testing.assert_array_equal(anomaly_scores.normal_flat(key, shape), jax.random.normal(key, shape))
  np.testing.assert_array_equal(jax.jit(anomaly_scores.normal_flat, static_argnums=1)(key, shape),
                                jax.random.normal(key, shape))  # fmt: skip


def test_no_compilation_for_a_second_group_of_runs():
  """Each group of runs builds its own train_step.ModelSetup (its optimizer differs as an object); scoring a second
  group, with the same shapes, compiles nothing: not per run, not per class."""
  config = tiny_config("cvae")
  setups = [train_step.make_setup(config, (SIZE, SIZE, 1), 3, num_devices=1) for _ in range(2)]
  assert setups[0] != setups[1]
  mesh = distributed.make_mesh()
  compiles = []

  def listen(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listen)
  x = np.random.default_rng(0).integers(0, 256, (20, SIZE, SIZE)).astype(np.uint8)
  kw = dict(batch_size=16, seed=0, num_samples=2, iwae_samples=4, iwae_chunk=4)
  counts = []
  try:
    for i, setup in enumerate(setups):
      _, params = _models("cvae", m=2)
      params = jax.tree.map(lambda a, i=i: a + i, params)  # other parameters, same shapes
      nap = scoring.fit_rapp(setup, params, x[None].repeat(2, 0), np.zeros((2, 20), np.int32), mesh, batch_size=16)
      jax.block_until_ready(scoring.score_test_set(setup, params, x, mesh, nap_stats=nap, **kw))
      counts.append(len(compiles))
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert counts[0] > 0 and counts[1] == counts[0], counts


@pytest.mark.parametrize("how", ["min", "marginal", "given"])
def test_the_zero_conditions_column_is_scored_only_for_given(how):
  """detection.score_images makes the all-zero condition's passes only for score_condition "given", the one
  reduction that reads that column; under min / marginal it is NaN and the other columns are unchanged."""
  from dcvae_jax.evaluators import detection

  setup, params = _models("cvae")
  mesh = distributed.make_mesh()
  config = tiny_config("cvae")
  config.protocol.score_condition = how
  config.eval.batch_size = 16
  x = np.random.default_rng(6).integers(0, 256, (20, SIZE, SIZE)).astype(np.uint8)
  got = detection.score_images(config, setup, params, x, mesh, None, seed=0, scores=("recon", "iwae"))
  full = detection.score_images(config, setup, params, x, mesh, None, seed=0, scores=("recon", "iwae"),
                                zero_condition=True)  # fmt: skip
  for k in got:
    np.testing.assert_array_equal(got[k][..., :-1], full[k][..., :-1], err_msg=k)
    assert np.isnan(got[k][..., -1]).all() == (how != "given"), k
    assert np.isfinite(full[k]).all(), k


def test_reference_validation_and_test_images_go_through_one_compiled_program():
  """The job's three image sets (each model's own reference images, a short validation set, the test set) are
  scored by one compiled program: same device scores, same rows per call, noise sliced outside it."""
  from dcvae_jax.evaluators import detection

  setup, params = _models("dcvae")
  mesh = distributed.make_mesh()
  config = tiny_config("dcvae")
  config.eval.batch_size, config.eval.iwae_samples, config.eval.iwae_chunk = 16, 8, 4
  rng = np.random.default_rng(8)
  scoring.compile_score_fn.cache_clear()
  nap = _nap(setup, params, mesh)
  ref = detection.score_images(config, setup, params, rng.integers(0, 256, (2, 16, SIZE, SIZE)).astype(np.uint8),
                               mesh, nap, seed=1, batch_size=16, per_model_images=True)  # fmt: skip
  for n, seed in ((11, 2), (40, 0)):
    detection.score_images(config, setup, params, rng.integers(0, 256, (n, SIZE, SIZE)).astype(np.uint8), mesh, nap,
                           seed=seed)  # fmt: skip
  assert scoring.compile_score_fn.cache_info().currsize == 1
  fn = scoring.compile_score_fn(
    scoring.ScoringSetup.of(setup), mesh, 4, scores=scoring.DEVICE_SCORES, zero_condition=False,
    pass_rows=scoring.PASS_ROWS,
  )  # fmt: skip
  assert fn._cache_size() == 1
  assert set(ref) == set(scoring.DEVICE_SCORES)
