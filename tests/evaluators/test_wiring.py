"""Wiring: each test pins one connection between pieces that are right on their own, so that a wrong argument, a
dropped offset or a swapped image set fails a test (docs/design.md "Anomaly scores", "Randomness and exact resume").

The end-to-end tests train one tiny VAE (Gaussian likelihood with per-pixel variance on dequantised grey levels)
on a data set whose normal TRAINING images differ in distribution from its normal TEST images, then recompute
what results.json and scores/<run>.npz must hold from the trained parameters, independently, in numpy."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcvae_jax import experiment
from dcvae_jax.data import input_pipeline, protocols
from dcvae_jax.data.datasets import Dataset
from dcvae_jax.evaluators import anomaly_scores, detection, scoring
from dcvae_jax.models import networks, objectives
from dcvae_jax.train import train_step
from tests.helpers import tiny_config

SIZE = 8


def _shifted_dataset(seed=0):
  """Class 0 (normal): a bright square on black in training, a dim square on a noisy background in the test set;
  class 1 (anomalous): uniform noise, 64 of them also in the training set (which no run of class 0 may use)."""
  rng = np.random.default_rng(seed)
  x_tr = np.zeros((320, SIZE, SIZE), np.uint8)
  x_tr[:256, 2:6, 2:6] = rng.integers(150, 256, (256, 4, 4))
  x_tr[256:] = rng.integers(0, 256, (64, SIZE, SIZE))
  y_tr = np.repeat(np.array([0, 1], np.int32), [256, 64])
  x_te = rng.integers(0, 40, (128, SIZE, SIZE)).astype(np.uint8)
  x_te[:64, 2:6, 2:6] = rng.integers(60, 140, (64, 4, 4))
  x_te[64:] = rng.integers(0, 256, (64, SIZE, SIZE))
  y_te = np.repeat(np.array([0, 1], np.int32), 64)
  return Dataset("shifted", x_tr, y_tr, x_te, y_te, 2, source="toy")


def _robust_z(values, reference):
  med = np.median(reference)
  return (np.asarray(values, np.float64) - med) / (1.4826 * np.median(np.abs(reference - med)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  ds = _shifted_dataset()
  config = tiny_config("vae", num_epochs=1, batch_size=64, steps_per_call=4)
  config.protocol.name = "split"
  config.protocol.normal = (0,)
  config.protocol.anomalous = (1,)
  config.data.binarize = False
  config.data.dequantize = True
  config.model.likelihood = "gaussian"
  config.model.gaussian_variance = "per_pixel"
  config.eval.iwae_samples = 8
  config.eval.iwae_chunk = 4
  config.eval.rapp_fit_examples = 64
  config.eval.reference_examples = 50
  config.data.validation_fraction = 0.0  # every training image is a training image (the split: test_validation_split)
  workdir = tmp_path_factory.mktemp("wiring") / "wd"
  results = experiment.train_and_evaluate(config, str(workdir), dataset=ds, log=lambda *_: None)
  run = protocols.make_runs(config.protocol, ds.num_classes, config.seed)[0]
  loaded = experiment.load_trained(str(workdir), dataset=ds)
  stacked = jax.tree.map(lambda a: a[None], loaded.params[run.name])
  with open(workdir / "runs" / f"{run.name}.json") as f:
    run_result = json.load(f)
  saved = dict(np.load(workdir / "scores" / f"{run.name}.npz"))
  return dict(ds=ds, config=config, run=run, results=results, run_result=run_result, saved=saved, loaded=loaded,
              params=stacked)  # fmt: skip


def _device_scores(t, x, seed, nap_stats=None, batch_size=None):
  config = t["config"]
  return scoring.score_test_set(
    t["loaded"].setup,
    t["params"],
    x,
    t["loaded"].mesh,
    batch_size=config.eval.batch_size if batch_size is None else batch_size,
    num_samples=config.eval.elbo_samples,
    seed=seed,
    nap_stats=nap_stats,
    iwae_samples=config.eval.iwae_samples,
    iwae_chunk=config.eval.iwae_chunk,
  )


def _normal_train_order(ds, run):
  """The documented order of a run's normal training images: default_rng([seed, uid, 7]) permutes them."""
  idx = np.flatnonzero(np.isin(ds.y_train, run.normal))
  return idx[np.random.default_rng([run.seed, run.uid, 7]).permutation(idx.size)]


def _complexity(iwae_nats, x):
  """-log2 P(x) - L(x) with 8 bits per pixel for the density on [0, 1] over 256 dequantised bins."""
  return np.asarray(iwae_nats, np.float64) / math.log(2) + SIZE * SIZE * 8.0 - anomaly_scores.png_bits(x)


@pytest.mark.slow
def test_complexity_is_iwae_bits_plus_the_density_offset_minus_the_png_bits_of_the_test_image(trained):
  ds, saved, r = trained["ds"], trained["saved"], trained["run_result"]
  np.testing.assert_array_equal(saved["length_bits"], anomaly_scores.png_bits(ds.x_test))  # grey: as they are
  normal = ds.y_test == 0
  want = _complexity(saved["iwae"][:, 0], ds.x_test)
  np.testing.assert_allclose(r["complexity_mean_normal"], want[normal].mean(), rtol=1e-9)
  np.testing.assert_allclose(r["complexity_mean_anomalous"], want[~normal].mean(), rtol=1e-9)
  assert "dequantised" in trained["results"]["complexity_likelihood"]
  assert "NOT" not in trained["results"]["complexity_likelihood"]


@pytest.mark.slow
def test_sap_complexity_is_standardised_on_the_runs_normal_training_images(trained):
  """The reference is the front of the documented fixed order of the run's normal TRAINING images
  (default_rng([seed, uid, 7])), scored with seed + 1; the normal test images, from another distribution here,
  would give other medians and MADs (checked: the test can tell them apart)."""
  ds, config, run, saved, r = trained["ds"], trained["config"], trained["run"], trained["saved"], trained["run_result"]
  x_ref = ds.x_train[_normal_train_order(ds, run)[: config.eval.reference_examples]]
  # the reference images are scored in one batch of their own (detection.reference_scores)
  ref = _device_scores(trained, x_ref, seed=config.seed + 1, batch_size=min(config.eval.batch_size, len(x_ref)))
  sap_ref, comp_ref = ref["rapp_sap"][0, :, 0], _complexity(ref["iwae"][0, :, 0], x_ref)
  sap_test, comp_test = saved["rapp_sap"][:, 0], _complexity(saved["iwae"][:, 0], ds.x_test)
  want = _robust_z(sap_test, sap_ref) + _robust_z(comp_test, comp_ref)
  normal = ds.y_test == 0
  np.testing.assert_allclose(r["sap_complexity_mean_normal"], want[normal].mean(), rtol=1e-5)
  np.testing.assert_allclose(r["sap_complexity_mean_anomalous"], want[~normal].mean(), rtol=1e-5)
  # Standardised on the normal test images instead, the same scores read differently:
  leak = _robust_z(sap_test, sap_test[normal]) + _robust_z(comp_test, comp_test[normal])
  assert abs(leak[normal].mean() - want[normal].mean()) > 1.0


@pytest.mark.slow
def test_test_scores_are_the_device_scores_of_the_test_images_with_nap_fitted_on_normal_training_images(trained):
  """scores/<run>.npz holds every device score of the test images (seed config.seed), with NAP fitted on the
  front of the documented order of the run's normal training images, each under its condition (here the one)."""
  ds, config, run, saved = trained["ds"], trained["config"], trained["run"], trained["saved"]
  x_fit = ds.x_train[_normal_train_order(ds, run)[: config.eval.rapp_fit_examples]][None]
  loaded = trained["loaded"]
  stats = scoring.fit_rapp(
    loaded.setup, trained["params"], x_fit, np.zeros(x_fit.shape[:2], np.int32), loaded.mesh, batch_size=64
  )
  again = _device_scores(trained, ds.x_test, seed=config.seed, nap_stats=stats)
  for name in scoring.DEVICE_SCORES:
    np.testing.assert_allclose(saved[name], again[name][0], rtol=1e-5, err_msg=name)
  np.testing.assert_array_equal(saved["y_test"], ds.y_test)


# ----------------------------------------------------------------------------------------------------------
# The images that fit RaPP's NAP, and their conditions.


def _indexed_dataset(num_classes=3, per_class=40):
  """Every training image is different and carries its own index in its first two pixels."""
  n = num_classes * per_class
  rng = np.random.default_rng(3)
  y = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int32), per_class))
  x = rng.integers(0, 256, (n, SIZE, SIZE)).astype(np.uint8)
  x[:, 0, 0], x[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
  return Dataset("indexed", x, y, x[:10], y[:10], num_classes, source="toy")


def test_rapp_fit_data_are_normal_training_images_under_their_own_conditions():
  ds = _indexed_dataset()
  config = tiny_config("cvae")
  config.eval.rapp_fit_examples = 30
  chunk = protocols.make_runs(config.protocol, ds.num_classes, config.seed)[:2]  # normal (1, 2) and (0, 2)
  x, cond = detection.rapp_fit_data(config, ds, chunk)
  assert x.shape == (2, 30, SIZE, SIZE) and cond.shape == (2, 30) and cond.dtype == np.int32
  for m, run in enumerate(chunk):
    idx = x[m, :, 0, 0].astype(int) * 256 + x[m, :, 0, 1]
    np.testing.assert_array_equal(ds.x_train[idx], x[m])
    labels = ds.y_train[idx]
    assert np.isin(labels, run.normal).all() and np.unique(idx).size == 30
    np.testing.assert_array_equal(cond[m], [run.normal.index(k) for k in labels])
    assert set(cond[m]) == {0, 1}
  config.eval.rapp_fit_examples = 1000  # more than a run has: every normal image, the same count for each run
  x, cond = detection.rapp_fit_data(config, ds, chunk)
  assert x.shape[1] == cond.shape[1] == 80


def _setup(name, num_conditions=2, likelihood="bernoulli", gaussian_variance="fixed"):
  config = tiny_config(name)
  config.model.likelihood = likelihood
  config.model.gaussian_variance = gaussian_variance
  setup = train_step.make_setup(config, (SIZE, SIZE, 1), num_conditions, num_devices=1)
  state = train_step.init_state(setup, jax.random.PRNGKey(1), (SIZE, SIZE, 1))
  return setup, state.params


def test_fit_rapp_differences_are_taken_under_each_images_condition():
  """NAP's mean is the mean of d(x) over the fit images, each under ITS condition: by hand with the module."""
  setup, params = _setup("cvae")
  rng = np.random.default_rng(4)
  x = rng.integers(0, 256, (1, 16, SIZE, SIZE)).astype(np.uint8)
  cond = np.tile(np.array([0, 1], np.int32), 8)[None]
  stats = scoring.fit_rapp(setup, jax.tree.map(lambda a: a[None], params), x, cond, _mesh(), batch_size=8)
  xf = input_pipeline.preprocess(jnp.asarray(x[0]), setup.binarize, setup.dequantize)
  d = np.asarray(scoring.rapp_differences_batch(setup, params, xf, jnp.asarray(cond[0])), np.float64)
  np.testing.assert_allclose(stats["mean"][0], d.mean(0), rtol=1e-5, atol=1e-6)
  d0 = np.asarray(scoring.rapp_differences_batch(setup, params, xf, jnp.zeros(16, jnp.int32)), np.float64)
  assert np.abs(d0.mean(0) - d.mean(0)).max() > 1e-3  # the condition matters to d


def _mesh():
  from dcvae_jax import distributed

  return distributed.make_mesh()


# ----------------------------------------------------------------------------------------------------------
# The 8-bit image the model sees, and the learned variance's clip.


def test_model_view_images_are_the_pixels_the_model_sees_in_8_bits():
  x = np.random.default_rng(5).integers(0, 256, (6, SIZE, SIZE)).astype(np.uint8)
  x[0, 0, :4] = [127, 128, 0, 255]
  for binarize in (True, False):
    seen = np.asarray(input_pipeline.preprocess(jnp.asarray(x), binarize, False))[..., 0]
    view = anomaly_scores.model_view_images(x, binarize)
    assert view.dtype == np.uint8
    np.testing.assert_array_equal(view, np.round(seen * 255).astype(np.uint8))
  np.testing.assert_array_equal(anomaly_scores.model_view_images(x, True)[0, 0, :4], [0, 255, 0, 255])


@pytest.mark.parametrize("compressor", ["png", "jpeg2000"])
def test_reference_complexity_reads_binarised_images_as_the_model_sees_them(compressor):
  """detection.reference_scores on binarised pixels: the bits of the 0 / 255 images (not of the grey ones) under
  eval.complexity_compressor."""
  ds = _shifted_dataset()
  config = tiny_config("vae")
  config.protocol.name = "split"
  config.protocol.normal, config.protocol.anomalous = (0,), (1,)
  config.eval.iwae_samples = config.eval.iwae_chunk = 4
  config.eval.reference_examples = 20
  config.eval.complexity_compressor = compressor
  setup, params = _setup("vae")
  chunk = protocols.make_runs(config.protocol, ds.num_classes, config.seed)
  stacked = jax.tree.map(lambda a: a[None], params)
  stats = scoring._identity_nap(setup, stacked)
  (got,) = detection.reference_scores(config, ds, chunk, setup, stacked, _mesh(), stats, offset_bits=0.0)
  x = ds.x_train[detection.normal_train_order(ds, chunk[0])[:20]]
  iwae = scoring.score_test_set(
    setup, stacked, x, _mesh(), batch_size=20, num_samples=2, seed=config.seed + 1, iwae_samples=4, iwae_chunk=4
  )["iwae"][0, :, 0]
  binary = np.where(x > 127, 255, 0).astype(np.uint8)
  binary_bits = anomaly_scores.length_bits(binary, compressor)
  np.testing.assert_allclose(got["complexity"], iwae / math.log(2) - binary_bits, rtol=1e-6)
  assert np.abs(binary_bits - anomaly_scores.length_bits(x, compressor)).max() > 8  # grey and binarised differ
  other = "png" if compressor == "jpeg2000" else "jpeg2000"
  assert np.abs(binary_bits - anomaly_scores.length_bits(binary, other)).max() > 8  # and so do the compressors


def test_learned_observation_log_variance_is_clipped_in_the_loss():
  """A per-pixel log-variance parameter pushed past [-9, 3] acts as its clip, in the module and in the loss."""
  setup, params = _setup("vae", likelihood="gaussian", gaussian_variance="per_pixel")
  raw = np.linspace(-20.0, 10.0, SIZE * SIZE).reshape(SIZE, SIZE, 1).astype(np.float32)
  params = {"params": dict(params["params"], obs_logvar=jnp.asarray(raw))}
  clipped = np.clip(raw, networks.OBS_LOGVAR_MIN, networks.OBS_LOGVAR_MAX)
  assert (networks.OBS_LOGVAR_MIN, networks.OBS_LOGVAR_MAX) == (-9.0, 3.0)
  np.testing.assert_array_equal(setup.module.apply(params, method=networks.VAE.obs_logvar), clipped)
  x = jnp.asarray(np.random.default_rng(6).uniform(size=(4, SIZE, SIZE, 1)), jnp.float32)
  cond = jnp.zeros((4,), jnp.int32)
  out = objectives.forward(setup.spec, setup.module, params, x, cond, jax.random.PRNGKey(0), 1)
  mean = np.asarray(out["logits"], np.float64)
  want = 0.5 * np.sum(
    (np.asarray(x, np.float64) - mean) ** 2 / np.exp(clipped) + clipped + math.log(2 * math.pi), axis=(1, 2, 3)
  )
  got = objectives.recon_nll(
    out["logits"], x, "gaussian", objectives.likelihood_logvar(setup.model_cfg, out["obs_logvar"])
  )
  np.testing.assert_allclose(got, want, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Smaller defects: which likelihood is a density, and the zero condition of a learned prior.


@pytest.mark.parametrize(
  "likelihood,binarize,dequantize,density",
  [
    ("bernoulli", True, False, True),
    ("bernoulli", False, False, False),
    ("bernoulli", False, True, False),
    ("continuous_bernoulli", True, False, False),
    ("continuous_bernoulli", False, False, False),
    ("continuous_bernoulli", False, True, True),
    ("gaussian", True, False, False),
    ("gaussian", False, False, False),
    ("gaussian", False, True, True),
  ],
)
def test_is_density_only_where_the_bin_probability_is_a_probability(likelihood, binarize, dequantize, density):
  assert objectives.is_density(likelihood, binarize=binarize, dequantize=dequantize) is density
  config = tiny_config()
  config.model.likelihood, config.data.binarize, config.data.dequantize = likelihood, binarize, dequantize
  assert ("NOT a normalised density" in detection.complexity_likelihood(config)) is (not density)


def test_a_density_read_at_binary_pixels_has_bin_probabilities_above_one():
  """Why a continuous likelihood on binarised pixels is no density of them: at x = 1 the continuous Bernoulli's
  density is about its logit l, so p / 255 > 1 (a negative code length) once l > 255; a Gaussian with sigma = 1e-3
  centred on the pixel gives 1 / (sigma sqrt(2 pi)) ~ 399 > 255."""
  x = jnp.ones((1, 1))
  cb = float(objectives.recon_nll(jnp.full((1, 1), 600.0), x, "continuous_bernoulli")[0])
  gauss = float(objectives.recon_nll(x, x, "gaussian", jnp.asarray(2 * math.log(1e-3), jnp.float32))[0])
  for nll in (cb, gauss):
    bits = nll / math.log(2) + math.log2(255.0)  # -log2 of the "bin probability" p / 255
    assert bits < 0, nll


def _dcvae_with_prior_rows(seed):
  setup, params = _setup("dcvae", num_conditions=2)
  rng = np.random.default_rng(seed)
  rows = {k: jnp.asarray(rng.normal(size=(2, 4)), jnp.float32) for k in ("prior_mu", "prior_logvar")}
  return setup, {"params": dict(params["params"], **rows)}, rows


def test_learned_prior_of_the_zero_condition_is_the_standard_normal():
  setup, params, rows = _dcvae_with_prior_rows(7)
  mu, logvar = setup.module.apply(params, jnp.array([0, 1, 2, -1], jnp.int32), method=networks.VAE.prior)
  np.testing.assert_array_equal(mu[:2], rows["prior_mu"])
  np.testing.assert_array_equal(logvar[:2], rows["prior_logvar"])
  np.testing.assert_array_equal(mu[2:], 0.0)  # id C (the all-zero condition) and id -1 read no normal class's row
  np.testing.assert_array_equal(logvar[2:], 0.0)


def test_scores_under_the_zero_condition_do_not_read_any_learned_prior_row():
  """score_batch's last column (the all-zero condition) is the same whatever the learned rows are; the columns
  of the normal conditions follow their rows."""
  setup, params_a, _ = _dcvae_with_prior_rows(8)
  _, params_b, _ = _dcvae_with_prior_rows(9)
  x = jnp.asarray(np.random.default_rng(10).uniform(size=(5, SIZE, SIZE, 1)) > 0.5, jnp.float32)
  stats = jax.tree.map(lambda a: a[0], scoring._identity_nap(setup, jax.tree.map(lambda a: a[None], params_a)))
  score = jax.jit(lambda p: scoring.score_batch(setup, p, stats, x, jax.random.PRNGKey(0), 2, 4, 4))
  a, b = score(params_a), score(params_b)
  for name in ("nelbo", "iwae"):
    np.testing.assert_array_equal(a[name][:, -1], b[name][:, -1], err_msg=name)
    assert np.abs(np.asarray(a[name][:, :-1]) - np.asarray(b[name][:, :-1])).min() > 1e-3, name
