"""Known answers for the scores beyond the paper's (iwae, complexity, rapp) and the grey-level likelihoods."""

import io
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from dcvae_jax import experiment
from dcvae_jax.data import input_pipeline
from dcvae_jax.data.datasets import Dataset
from dcvae_jax.evaluators import anomaly_scores, scoring
from dcvae_jax.models import objectives
from dcvae_jax.models import registry as models
from dcvae_jax.options import DEFAULT_SCORES
from dcvae_jax.train import train_step
from tests.helpers import tiny_config

# ----------------------------------------------------------------------------------------------------------
# iwae on a linear-Gaussian model: z ~ N(0, I), x | z ~ N(W z + b, s2 I), so p(x) = N(b, W W^T + s2 I).


def _linear_gaussian(seed=0, d=2, p=3, s2=0.3):
  rng = np.random.default_rng(seed)
  w, b = rng.normal(size=(p, d)), rng.normal(size=p)
  x = rng.normal(size=(5, p)) * 2.0
  cov = w @ w.T + s2 * np.eye(p)
  diff = x - b
  exact = -0.5 * (
    np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff) + np.linalg.slogdet(cov)[1] + p * math.log(2 * math.pi)
  )
  # True posterior N(m, S); the proposal q is deliberately off: shifted mean, inflated diagonal variance.
  s_post = np.linalg.inv(np.eye(d) + w.T @ w / s2)
  m_post = (diff @ w / s2) @ s_post
  mu_q = m_post + 0.3
  logvar_q = np.log(np.diag(s_post) * 1.8)[None].repeat(5, 0)

  def log_joint_minus_q(z, log_q):
    mean = jnp.einsum("sbd,pd->sbp", z, w) + b
    log_px = -0.5 * (jnp.sum(jnp.square(x - mean), -1) / s2 + p * math.log(2 * math.pi * s2))
    log_pz = -0.5 * (jnp.sum(jnp.square(z), -1) + d * math.log(2 * math.pi))
    return log_px + log_pz - log_q

  return exact, log_joint_minus_q, jnp.asarray(mu_q, jnp.float32), jnp.asarray(logvar_q, jnp.float32)


def test_iwae_rises_with_k_and_reaches_the_exact_log_likelihood():
  exact, fn, mu, logvar = _linear_gaussian()
  expected = []  # E[log p_K(x)], averaged over 64 independent keys: a lower bound that rises with K
  for k in (1, 4, 32):
    draws = jax.vmap(lambda key, k=k: anomaly_scores.iwae_nll(fn, key, mu, logvar, num_samples=k, chunk=k))(
      jax.random.split(jax.random.PRNGKey(k), 256)
    )
    expected.append(-np.asarray(draws, np.float64).mean(axis=0))
  expected = np.stack(expected)
  assert np.all(expected[:-1] < expected[1:])  # tighter as K grows, for every example
  assert np.all(expected[:2] < exact)  # and below log p(x) (K = 32: within noise)
  large = -np.asarray(
    anomaly_scores.iwae_nll(fn, jax.random.PRNGKey(0), mu, logvar, num_samples=8192, chunk=1024), np.float64
  )
  np.testing.assert_allclose(large, exact, atol=0.05)  # within 0.05 nats at large K


def test_iwae_chunked_has_the_spread_of_k_samples_not_of_one_chunk():
  """K = 64 in chunks of 16 is a K = 64 bound: across 512 fixed keys its spread matches the unchunked K = 64 and
  is half that of K = 16 (the spread falls as 1/sqrt(K)). Chunks that shared one key would give K = 16's."""
  _, fn, mu, logvar = _linear_gaussian(seed=1)
  keys = jax.random.split(jax.random.PRNGKey(11), 512)

  def spread(k, chunk):
    draws = jax.vmap(lambda key: anomaly_scores.iwae_nll(fn, key, mu, logvar, num_samples=k, chunk=chunk))(keys)
    return np.asarray(draws, np.float64).std(axis=0)

  chunked, whole, small = spread(64, 16), spread(64, 64), spread(16, 16)
  assert np.all(chunked < 0.7 * small), (chunked, small)  # measured: 0.45-0.5 x
  np.testing.assert_allclose(chunked, whole, rtol=0.2)  # measured: within 6%
  with pytest.raises(ValueError, match="multiple"):
    anomaly_scores.iwae_nll(fn, jax.random.PRNGKey(3), mu, logvar, num_samples=60, chunk=16)


def test_iwae_is_the_numpy_bound_over_the_k_distinct_samples_it_drew():
  """Every code the chunks hand to log p(x, z) - log q(z|x) is recorded: there are K distinct ones per example,
  log q is the encoder's density at each, and the result is -log (1/K) sum_k w_k over exactly those, in numpy."""
  _, fn, mu, logvar = _linear_gaussian(seed=2)
  seen = []

  def recording(z, log_q):
    jax.debug.callback(lambda a, b: seen.append((np.asarray(a, np.float64), np.asarray(b, np.float64))), z, log_q)
    return fn(z, log_q)

  got = np.asarray(anomaly_scores.iwae_nll(recording, jax.random.PRNGKey(5), mu, logvar, num_samples=64, chunk=16))
  assert len(seen) == 4 and all(z.shape == (16, 5, 2) for z, _ in seen)
  z = np.concatenate([a for a, _ in seen])  # (K, B, d)
  log_q = np.concatenate([b for _, b in seen])
  for i in range(z.shape[1]):
    assert np.unique(z[:, i], axis=0).shape[0] == 64, i  # 64 different codes, not 16 drawn four times
  mu64, var64 = np.asarray(mu, np.float64), np.exp(np.asarray(logvar, np.float64))
  want_log_q = -0.5 * np.sum(np.log(2 * np.pi * var64) + (z - mu64) ** 2 / var64, axis=-1)
  np.testing.assert_allclose(log_q, want_log_q, rtol=1e-5, atol=1e-4)
  log_w = np.asarray(fn(jnp.asarray(z, jnp.float32), jnp.asarray(want_log_q, jnp.float32)), np.float64)
  top = log_w.max(0)
  want = -(top + np.log(np.exp(log_w - top).sum(0)) - np.log(64))
  np.testing.assert_allclose(got, want, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Likelihoods.


@pytest.mark.parametrize("lam", [0.02, 0.3, 0.4999, 0.5, 0.5004, 0.5 - 1e-3, 0.8, 0.97])
def test_continuous_bernoulli_integrates_to_one(lam):
  logit = jnp.asarray([[math.log(lam) - math.log1p(-lam)]], jnp.float32)
  grid = np.linspace(0.0, 1.0, 20001)
  nll = np.array(
    [
      float(objectives.recon_nll(logit, jnp.asarray([[v]], jnp.float32), "continuous_bernoulli")[0])
      for v in grid[::200]
    ]
  )
  # The density is exp(-nll); its log is linear in x, so 101 points and the trapezoid rule on the exact
  # exponential of the interpolated line are enough: integrate the closed form of each segment.
  xs = grid[::200]
  logp = -nll
  seg = np.where(
    np.abs(np.diff(logp)) < 1e-9,
    np.exp(logp[:-1]) * np.diff(xs),
    np.diff(np.exp(logp)) / np.where(np.abs(np.diff(logp)) < 1e-9, 1.0, np.diff(logp) / np.diff(xs)),
  )
  assert abs(seg.sum() - 1.0) < 1e-4


def test_continuous_bernoulli_log_norm_matches_the_closed_form_and_is_smooth_at_one_half():
  lam = np.array([0.01, 0.2, 0.45, 0.4999, 0.55, 0.9])
  logits = jnp.asarray(np.log(lam) - np.log1p(-lam), jnp.float32)
  closed = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
  np.testing.assert_allclose(objectives.continuous_bernoulli_log_norm(logits), closed, rtol=1e-4)
  near = objectives.continuous_bernoulli_log_norm(jnp.asarray([-0.1001, -0.0999, 0.0, 0.0999, 0.1001]))
  assert np.all(np.isfinite(near)) and abs(float(near[2]) - math.log(2.0)) < 1e-7
  assert abs(float(near[0] - near[1])) < 1e-4 and abs(float(near[3] - near[4])) < 1e-4
  g = jax.grad(lambda l: objectives.continuous_bernoulli_log_norm(l))(0.0)
  assert np.isfinite(g)


def test_continuous_bernoulli_mean():
  lam = np.array([0.1, 0.3, 0.5, 0.7])
  logits = jnp.asarray(np.log(lam) - np.log1p(-lam), jnp.float32)
  xs = np.linspace(0, 1, 200001)
  want = []
  for l in lam:
    dens = l**xs * (1 - l) ** (1 - xs)
    want.append(np.trapezoid(xs * dens, xs) / np.trapezoid(dens, xs))
  np.testing.assert_allclose(objectives.mean_image(logits, "continuous_bernoulli"), want, atol=1e-5)


def test_gaussian_learned_variance_nll_is_the_normal_density():
  x = jnp.asarray([[0.2, 0.9]])
  mean = jnp.asarray([[0.25, 0.5]])
  logvar = jnp.asarray([-3.0, -1.0])
  want = -np.sum(
    [
      -0.5 * ((0.2 - 0.25) ** 2 / math.exp(-3.0) + -3.0 + math.log(2 * math.pi)),
      -0.5 * ((0.9 - 0.5) ** 2 / math.exp(-1.0) + -1.0 + math.log(2 * math.pi)),
    ]
  )
  np.testing.assert_allclose(objectives.recon_nll(mean, x, "gaussian", logvar), [want], rtol=1e-6)


def test_preprocess_dequantize():
  x = np.array([[0, 255]], np.uint8)
  np.testing.assert_allclose(input_pipeline.preprocess(x, False, True)[..., 0], [[0.5 / 256, 255.5 / 256]])
  np.testing.assert_allclose(
    input_pipeline.preprocess(x, False, True, noise=jnp.array([[0.0, 0.999]]))[..., 0],
    [[0.0, 255.999 / 256]],
    rtol=1e-6,
  )


# ----------------------------------------------------------------------------------------------------------
# Complexity.


@pytest.mark.parametrize("compressor, pil_format, options", [("png", "PNG", {}), ("jpeg2000", "JPEG2000", {})])
def test_length_bits_blank_below_noise_and_equals_the_compressor_bytes(compressor, pil_format, options):
  """L(x) is 8 x the bytes Pillow writes for that format, grey and colour; a blank image codes shorter than noise.
  JPEG 2000 is written reversibly (lossless): decoding the same settings gives the image back exactly."""
  rng = np.random.default_rng(0)
  blank = np.zeros((28, 28), np.uint8)
  noise = rng.integers(0, 256, (28, 28)).astype(np.uint8)
  colour = rng.integers(0, 256, (2, 28, 28, 3)).astype(np.uint8)
  bits = anomaly_scores.length_bits(np.stack([blank, noise]), compressor)
  assert bits.dtype == np.float64 and bits[0] < bits[1]
  for img, b in zip((blank, noise, *colour), (*bits, *anomaly_scores.length_bits(colour, compressor)), strict=True):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=pil_format, **options)
    # the JPEG 2000 default of Pillow is already reversible: the kwarg irreversible=False changes no byte
    assert b == 8 * len(buf.getvalue())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(buf.getvalue()))), img)  # lossless
  np.testing.assert_array_equal(anomaly_scores.length_bits(noise[None, ..., None], compressor), bits[1:])
  with pytest.raises(ValueError, match="length_bits needs uint8 images, got float32"):
    anomaly_scores.length_bits(np.zeros((1, 4, 4), np.float32), compressor)
  with pytest.raises(ValueError, match="length_bits needs images"):
    anomaly_scores.length_bits(np.zeros((1, 4, 4, 2), np.uint8), compressor)


def test_png_bits_is_length_bits_under_png_and_an_unknown_compressor_is_refused():
  x = np.random.default_rng(1).integers(0, 256, (3, 8, 8)).astype(np.uint8)
  np.testing.assert_array_equal(anomaly_scores.png_bits(x), anomaly_scores.length_bits(x, "png"))
  assert not np.array_equal(anomaly_scores.length_bits(x, "jpeg2000"), anomaly_scores.length_bits(x, "png"))
  with pytest.raises(ValueError, match="^unknown compressor 'gif': expected one of png, jpeg2000$"):
    anomaly_scores.length_bits(x, "gif")


def test_complexity_is_iwae_in_bits_plus_offset_minus_length():
  s = anomaly_scores.complexity(np.array([math.log(2) * 100.0]), np.array([30.0]), offset_bits=5.0)
  np.testing.assert_allclose(s, [75.0])
  assert anomaly_scores.density_offset_bits(4, is_continuous=True, dequantize=True) == 32.0
  assert anomaly_scores.density_offset_bits(4, is_continuous=True, dequantize=False) == 4 * math.log2(255.0)
  assert anomaly_scores.density_offset_bits(4, is_continuous=False, dequantize=False) == 0.0
  assert anomaly_scores.density_offset_bits(4, is_continuous=False, dequantize=True) == 0.0
  # float32 iwae values (as the device returns them) are read exactly: the arithmetic is float64
  iwae = np.array([3000.123, 1234.567], np.float32)
  want = iwae.astype(np.float64) / math.log(2.0) + 6272.0 - np.array([800.0, 900.0])
  got = anomaly_scores.complexity(iwae, np.array([800, 900], np.int64), 6272.0)
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, want, rtol=1e-15)


# ----------------------------------------------------------------------------------------------------------
# RaPP on a 2-layer encoder, by hand.


def test_rapp_sap_and_nap_equal_a_hand_computation():
  config = ml_collections.ConfigDict(
    {
      "name": "vae",
      "arch": "mlp",
      "hidden": (3,),
      "latent_dim": 2,
      "likelihood": "bernoulli",
      "compute_dtype": "float32",
    }
  )
  spec = models.get_model("vae")
  module = models.make_module(spec, config, (2, 2, 1), 1)
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 1)), None, jnp.zeros((1,), jnp.int32))
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(4, 2, 2, 1)).astype(np.float32)
  p = jax.tree.map(np.asarray, params)["params"]
  enc, dec = p["encoder"], p["decoder"]
  relu = lambda a: np.maximum(a, 0)  # noqa: E731

  def encode(v):
    h = relu(v.reshape(v.shape[0], -1) @ enc["Dense_0"]["kernel"] + enc["Dense_0"]["bias"])
    return h, h @ enc["mu"]["kernel"] + enc["mu"]["bias"]

  h_x, mu_x = encode(x)
  g = relu(mu_x @ dec["Dense_0"]["kernel"] + dec["Dense_0"]["bias"])
  x_hat = (1 / (1 + np.exp(-(g @ dec["Dense_1"]["kernel"] + dec["Dense_1"]["bias"])))).reshape(x.shape)
  h_r, mu_r = encode(x_hat)
  d = np.concatenate([(x - x_hat).reshape(4, -1), h_x - h_r, mu_x - mu_r], axis=1)
  sap_want = np.sum(d**2, axis=1)

  setup = train_step.ModelSetup(
    spec=spec,
    module=module,
    disc=None,
    tx=None,
    disc_tx=None,
    model_cfg=config,
    num_conditions=1,
    binarize=False,
    dequantize=False,
    groups=1,
    skip_nonfinite=False,
  )
  d_got = scoring.rapp_differences_batch(setup, params, jnp.asarray(x), jnp.zeros((4,), jnp.int32))
  np.testing.assert_allclose(d_got, d, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(anomaly_scores.sap(d_got), sap_want, rtol=1e-5)

  # NAP: normalisation fitted on other "training" differences, by hand with numpy's SVD.
  d_fit = rng.normal(size=(20, d.shape[1])) * np.linspace(0.5, 3.0, d.shape[1])
  stats = anomaly_scores.fit_nap(d_fit)
  mean = d_fit.mean(0)
  _, s, vt = np.linalg.svd(d_fit - mean, full_matrices=False)
  nap_want = np.sum((((d - mean) @ vt.T) / s) ** 2, axis=1)
  np.testing.assert_allclose(anomaly_scores.nap(jnp.asarray(d), stats), nap_want, rtol=1e-4)


def test_fit_nap_drops_directions_without_spread():
  d = np.zeros((10, 4))
  d[:, 0] = np.arange(10)
  stats = anomaly_scores.fit_nap(d)
  assert stats["basis"].shape == (4, 4) and np.count_nonzero(stats["inv_scale"]) == 1
  assert np.all(np.isfinite(anomaly_scores.nap(jnp.ones((2, 4)), stats)))


def _two_scales(ratio, n=40):
  """Differences (n, 2) whose centred singular values are about sqrt(n) x (1, ratio)."""
  rng = np.random.default_rng(7)
  a, b = rng.normal(size=(2, n))
  a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
  b = b - a * (a @ b) / (a @ a)  # orthogonal to a: the singular values are the columns' norms
  return np.stack([a, ratio * b / b.std()], axis=1)


@pytest.mark.parametrize("ratio,kept", [(1e-6, 1), (1e-4, 2)])
def test_fit_nap_drops_a_direction_by_its_spread_relative_to_the_largest(ratio, kept):
  """rtol = 1e-5 is relative to the largest singular value s_0, at any scale of the differences."""
  for scale in (1e-3, 1.0, 1e3):
    stats = anomaly_scores.fit_nap(scale * _two_scales(ratio))
    assert np.count_nonzero(stats["inv_scale"]) == kept, (scale, stats["inv_scale"])
    s = np.sqrt(40) * scale * np.array([1.0, ratio])
    np.testing.assert_allclose(stats["inv_scale"][:kept], 1 / s[:kept], rtol=1e-4)


def test_nap_is_invariant_to_the_scale_of_the_differences():
  """NAP is a Mahalanobis-like norm: scaling both the fit and the scored differences by c changes nothing."""
  rng = np.random.default_rng(8)
  d_fit = _two_scales(1e-3) @ np.array([[1.0, 0.5, -0.2], [0.3, -1.0, 2.0]])
  d = rng.normal(size=(5, 3)) @ np.diag([1.0, 0.1, 0.01])
  want = np.asarray(anomaly_scores.nap(jnp.asarray(d), anomaly_scores.fit_nap(d_fit)))
  for c in (1e-4, 1e4):
    got = np.asarray(anomaly_scores.nap(jnp.asarray(c * d), anomaly_scores.fit_nap(c * d_fit)))
    np.testing.assert_allclose(got, want, rtol=2e-3)


def test_fit_nap_keeps_float64_accuracy_on_float32_differences():
  """The device hands float32 differences; the mean and SVD run in float64 (a float32 mean of values near 1e4
  would be off by about 1e-3, a tenth of this spread). The statistics come back as float32."""
  rng = np.random.default_rng(9)
  d32 = (1e4 + 1e-2 * rng.normal(size=(200, 4)) * np.array([1.0, 2.0, 3.0, 4.0])).astype(np.float32)
  got, want = anomaly_scores.fit_nap(d32), anomaly_scores.fit_nap(d32.astype(np.float64))
  for k in ("mean", "basis", "inv_scale"):
    assert got[k].dtype == np.float32, k
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  _, s, _ = np.linalg.svd(d32.astype(np.float64) - d32.astype(np.float64).mean(0), full_matrices=False)
  np.testing.assert_allclose(got["inv_scale"], 1 / s, rtol=1e-6)


def test_fit_nap_rank_cuts_or_pads_the_basis():
  d = np.random.default_rng(10).normal(size=(20, 6))
  full = anomaly_scores.fit_nap(d)
  assert full["basis"].shape == (6, 6) and np.all(full["inv_scale"] > 0)
  cut = anomaly_scores.fit_nap(d, rank=3)
  assert cut["basis"].shape == (6, 3) and cut["inv_scale"].shape == (3,)
  np.testing.assert_array_equal(cut["basis"], full["basis"][:, :3])
  np.testing.assert_array_equal(cut["inv_scale"], full["inv_scale"][:3])
  padded = anomaly_scores.fit_nap(d[:4], rank=6)  # 4 rows: 4 directions (3 with spread), 2 zero columns
  assert padded["basis"].shape == (6, 6) and np.count_nonzero(padded["inv_scale"]) == 3
  np.testing.assert_array_equal(padded["basis"][:, 4:], 0.0)


# ----------------------------------------------------------------------------------------------------------
# Direction: every score is larger for anomalies (here: noise images against a model of blank-ish images).


def _blank_vs_noise(n_train=512, n_test=64, size=8, seed=0):
  rng = np.random.default_rng(seed)
  x_train = np.zeros((n_train, size, size), np.uint8)
  x_train[:, 2:6, 2:6] = rng.integers(150, 256, (n_train, 4, 4))
  y_train = np.zeros(n_train, np.int32)
  x_norm = np.zeros((n_test, size, size), np.uint8)
  x_norm[:, 2:6, 2:6] = rng.integers(150, 256, (n_test, 4, 4))
  x_anom = rng.integers(0, 256, (n_test, size, size)).astype(np.uint8)
  y_test = np.concatenate([np.zeros(n_test, np.int32), np.ones(n_test, np.int32)])
  return Dataset("blank_vs_noise", x_train, y_train, np.concatenate([x_norm, x_anom]), y_test, 2, source="toy")


@pytest.mark.slow
@pytest.mark.parametrize("model,likelihood", [("vae", "continuous_bernoulli"), ("cvae", "gaussian")])
def test_every_score_ranks_anomalies_higher(tmp_path, model, likelihood):
  ds = _blank_vs_noise()
  config = tiny_config(model, num_epochs=30, batch_size=64, steps_per_call=8)
  config.protocol.name = "split"
  config.protocol.normal = (0,)
  config.protocol.anomalous = (1,)
  config.data.binarize = False
  config.data.dequantize = True
  config.model.likelihood = likelihood
  config.model.gaussian_variance = "per_pixel"
  config.eval.iwae_samples = 16
  config.eval.iwae_chunk = 8
  config.eval.rapp_fit_examples = 128
  config.eval.scores = ()  # all of them, the latent_knn family included
  results = experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=ds, log=lambda *_: None)
  assert set(results["auroc_by_score"]) == set(scoring.SCORES)
  for name, auroc in results["auroc_by_score"].items():
    # complexity needs a density that beats the PNG coder on the anomalies; the briefly trained Gaussian
    # (its learned variance still near its start) does not, and then noise, expensive for PNG, ranks as normal.
    if name == "complexity" and likelihood == "gaussian":
      continue
    assert auroc > 0.9, (name, auroc)
  assert "dequantised" in results["complexity_likelihood"]
  assert results["auroc_per_class_by_score"]["iwae"]["split"] == results["auroc_by_score"]["iwae"]


def test_fit_nap_ignores_non_finite_rows():
  rng = np.random.default_rng(0)
  d = rng.normal(size=(30, 5))
  with_nan = np.concatenate([d, np.full((3, 5), np.nan)])
  a, b = anomaly_scores.fit_nap(d, rank=5), anomaly_scores.fit_nap(with_nan, rank=5)
  np.testing.assert_allclose(a["inv_scale"], b["inv_scale"], rtol=1e-5)


@pytest.mark.parametrize("finite_rows", [0, 1])
def test_nap_without_two_finite_fit_rows_is_nan_not_zero(finite_rows):
  """No spread to normalise by: every statistic and so NAP of every image is NaN (counted as non-finite), never a
  silent 0. Two finite rows are enough for a finite NAP."""
  rng = np.random.default_rng(1)
  d_fit = np.full((4, 5), np.nan)
  d_fit[:finite_rows] = rng.normal(size=(finite_rows, 5))
  empty = anomaly_scores.fit_nap(d_fit)
  assert empty["basis"].shape == (5, 4) and empty["inv_scale"].shape == (4,) and empty["mean"].shape == (5,)
  for k, v in empty.items():
    assert v.dtype == np.float32 and np.isnan(v).all(), k
  d = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  got = np.asarray(anomaly_scores.nap(d, empty))
  assert got.shape == (3,) and np.isnan(got).all()
  d_fit[: finite_rows + 2] = rng.normal(size=(finite_rows + 2, 5))
  assert np.isfinite(np.asarray(anomaly_scores.nap(d, anomaly_scores.fit_nap(d_fit)))).all()


def test_nap_projects_at_highest_precision():
  """DEFAULT precision rounds a float32 matmul to bfloat16 on a TPU; the projection asks for HIGHEST."""
  stats = anomaly_scores.fit_nap(np.random.default_rng(2).normal(size=(20, 6)))
  jaxpr = jax.make_jaxpr(anomaly_scores.nap)(jnp.ones((3, 6), jnp.float32), stats)
  dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
  assert dots and all(e.params["precision"] == (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST) for e in dots), (
    dots
  )


def test_robust_standardise_and_sap_complexity_by_hand():
  ref = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # median 3, MAD 1
  np.testing.assert_allclose(anomaly_scores.robust_standardise([3.0, 4.4826], ref), [0.0, 1.0])
  sap_ref, comp_ref = np.array([0.0, 1.0, 2.0]), np.array([10.0, 20.0, 30.0])  # MADs 1 and 10
  got = anomaly_scores.sap_complexity(np.array([1.0 + 1.4826]), np.array([20.0 - 14.826]), sap_ref, comp_ref)
  np.testing.assert_allclose(got, [0.0], atol=1e-12)  # +1 sd in one, -1 sd in the other
  empty = anomaly_scores.robust_standardise([1.0, 2.0, 3.0], [np.nan])
  assert empty.shape == (3,) and np.isnan(empty).all()


@pytest.mark.parametrize("c", [1e-6, 1e-3, 1e3])
def test_robust_standardise_is_invariant_to_the_scale(c):
  """A z-score has no unit: scaling the values and the reference alike leaves it unchanged (MADs far below 1)."""
  ref = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
  values = np.array([3.0, 4.4826, -1.0])
  np.testing.assert_allclose(anomaly_scores.robust_standardise(c * values, c * ref), [0.0, 1.0, -4 / 1.4826])


@pytest.mark.slow
def test_rescore_recomputes_scores_from_checkpoints(tmp_path):
  ds = _blank_vs_noise()
  config = tiny_config("vae", num_epochs=2, batch_size=64, steps_per_call=8)
  config.protocol.name = "split"
  config.protocol.normal = (0,)
  config.protocol.anomalous = (1,)
  config.eval.iwae_samples = 8
  config.eval.iwae_chunk = 8
  config.eval.rapp_fit_examples = 64
  first = experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=ds, log=lambda *_: None)
  steps_logged = len(open(tmp_path / "wd" / "metrics.jsonl").readlines())
  # complexity's L(x) is the PNG length of the image the model sees: binarised pixels as 0 / 255
  saved = np.load(tmp_path / "wd" / "scores" / "split_seed0.npz")
  binary = np.where(ds.x_test > 127, 255, 0).astype(np.uint8)
  np.testing.assert_array_equal(saved["length_bits"], anomaly_scores.png_bits(binary))
  assert np.abs(anomaly_scores.png_bits(ds.x_test) - saved["length_bits"]).max() > 8
  config.eval.reference_examples = 50
  again = experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=ds, log=lambda *_: None, rescore=True)
  assert again["auroc_by_score"]["recon"] == first["auroc_by_score"]["recon"]  # same model, same score
  assert len(open(tmp_path / "wd" / "metrics.jsonl").readlines()) == steps_logged  # nothing was retrained
  assert set(again["auroc_by_score"]) == set(DEFAULT_SCORES)
