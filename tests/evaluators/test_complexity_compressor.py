"""eval.complexity_compressor: the compressor whose code length L(x) the complexity score subtracts reaches every
path that computes it (reference, validation, test, new images). The reference alone, without training:
test_wiring.test_reference_complexity_reads_binarised_images_as_the_model_sees_them."""

import json
import math

import numpy as np
import pytest

from dcvae_jax import experiment, predict, validation
from dcvae_jax.config import base_config
from dcvae_jax.data import protocols, splits
from dcvae_jax.errors import ConfigError
from dcvae_jax.evaluators import anomaly_scores, detection
from tests.helpers import tiny_config, toy_dataset

PIXELS = 8 * 8


def _j2k(x):
  return anomaly_scores.length_bits(x, "jpeg2000")


@pytest.fixture(scope="module")
def j2k_workdir(tmp_path_factory):
  """A tiny VAE (Gaussian per-pixel, dequantised grey levels) trained and scored with jpeg2000, with a validation
  split; every call of length_bits is recorded."""
  ds = toy_dataset()
  config = tiny_config("vae", num_epochs=1)
  config.protocol.name = "split"
  config.protocol.normal, config.protocol.anomalous = (0,), (1, 2)
  config.data.binarize = False
  config.data.dequantize = True
  config.model.likelihood = "gaussian"
  config.model.gaussian_variance = "per_pixel"
  config.eval.iwae_samples = config.eval.iwae_chunk = 4
  config.eval.rapp_fit_examples = 32
  config.eval.reference_examples = 20
  config.data.validation_fraction = 0.25
  config.eval.complexity_compressor = "jpeg2000"
  calls = []
  original = anomaly_scores.length_bits

  def recording(images, compressor):
    calls.append((compressor, len(images)))
    return original(images, compressor)

  workdir = tmp_path_factory.mktemp("j2k") / "wd"
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(anomaly_scores, "length_bits", recording)
    experiment.train_and_evaluate(config, str(workdir), dataset=ds, log=lambda *_: None)
    run = protocols.make_runs(config.protocol, ds.num_classes, config.seed)[0]
    p = predict.load_predictor(str(workdir), run.name)
    new = p.scores(ds.x_test[:10])
  saved = dict(np.load(workdir / "scores" / f"{run.name}.npz"))
  state = dict(np.load(workdir / "scoring" / f"{run.name}.npz"))
  with open(workdir / "runs" / f"{run.name}.json") as f:
    run_result = json.load(f)
  _, val = splits.validation_indices(ds.y_train, 0.25, config.seed, ds.num_classes)
  return dict(ds=ds, config=config, calls=calls, saved=saved, state=state, new=new, run_result=run_result, val=val)


@pytest.mark.slow
def test_every_length_bits_call_uses_the_configured_compressor(j2k_workdir):
  calls = j2k_workdir["calls"]
  assert calls and {c for c, _ in calls} == {"jpeg2000"}
  # test, validation, the reference and the predictor's new images: four image sets
  assert len(calls) >= 4


@pytest.mark.slow
def test_saved_length_bits_are_the_jpeg2000_bits_of_the_test_and_validation_images(j2k_workdir):
  t = j2k_workdir
  ds, saved = t["ds"], t["saved"]
  np.testing.assert_array_equal(saved["length_bits"], _j2k(ds.x_test))
  rows = np.flatnonzero(np.isin(ds.y_train[t["val"]], [0, 1, 2]))
  np.testing.assert_array_equal(saved["val_length_bits"], _j2k(ds.x_train[t["val"]][rows]))
  assert not np.array_equal(saved["length_bits"], anomaly_scores.png_bits(ds.x_test))


@pytest.mark.slow
def test_complexity_and_new_images_read_the_jpeg2000_length(j2k_workdir):
  t = j2k_workdir
  ds, saved, r = t["ds"], t["saved"], t["run_result"]
  want = saved["iwae"][:, 0].astype(np.float64) / math.log(2) + PIXELS * 8.0 - _j2k(ds.x_test)
  normal = ds.y_test == 0
  np.testing.assert_allclose(r["complexity_mean_normal"], want[normal].mean(), rtol=1e-9)
  np.testing.assert_allclose(r["complexity_mean_anomalous"], want[~normal].mean(), rtol=1e-9)
  np.testing.assert_allclose(t["new"]["complexity"], want[:10], rtol=1e-6)


def test_image_bits_follow_the_config():
  x = np.random.default_rng(0).integers(0, 256, (3, 8, 8)).astype(np.uint8)
  config = base_config()
  config.data.binarize = False
  np.testing.assert_array_equal(detection.image_bits(config, x), anomaly_scores.png_bits(x))
  config.eval.complexity_compressor = "jpeg2000"
  np.testing.assert_array_equal(detection.image_bits(config, x), _j2k(x))
  config.data.binarize = True
  np.testing.assert_array_equal(detection.image_bits(config, x), _j2k(np.where(x > 127, 255, 0).astype(np.uint8)))


def test_an_unknown_compressor_or_a_pillow_without_openjpeg_is_a_one_line_config_error(monkeypatch):
  config = base_config()
  config.eval.complexity_compressor = "flif"
  with pytest.raises(ConfigError, match=r"^eval.complexity_compressor must be one of png, jpeg2000, got 'flif'$"):
    validation.validate(config)
  config.eval.complexity_compressor = "jpeg2000"
  validation.validate(config)
  from PIL import features

  monkeypatch.setattr(features, "check_codec", lambda name: name != "jpg_2000")
  with pytest.raises(ConfigError, match="needs Pillow built with OpenJPEG") as e:
    validation.validate(config)
  assert "\n" not in str(e.value)
  config.eval.complexity_compressor = "png"
  validation.validate(config)  # PNG needs nothing more
