"""dcvae_jax.Detector (dcvae_jax/detector.py): fit on normal images in memory or in a folder, scikit-learn / PyOD
methods, the threshold set on held-out normal validation images, save / load.

The expected values come from what the training job saved (scores/<run>.npz: the validation images' scores,
scoring/<run>.npz: the sap_complexity reference) and numpy: the validation split is recomputed with
splits.validation_indices, sap_complexity with numpy's median, the threshold with numpy's inverted-CDF quantile."""

import json
import math
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image
from sklearn.exceptions import NotFittedError

import dcvae_jax
from dcvae_jax.config import folder_config
from dcvae_jax.data import images as images_lib
from dcvae_jax.data.splits import validation_indices
from dcvae_jax.errors import ConfigError, WorkdirError
from dcvae_jax.options import SCORES  # what the best detector (folder_config) scores: all ten

FRACTION, FPR, N = 0.25, 0.2, 48
TINY = {  # a few seconds of training: configs/folder.py's detector, shrunk
  "model__hidden": (16, 8),
  "model__latent_dim": 4,
  "train__num_epochs": 1,
  "train__batch_size": 8,
  "train__steps_per_call": 4,
  "train__tensorboard": False,
  "eval.batch_size": 64,  # the dotted form is the same key
  "eval.iwae_samples": 8,
  "eval.iwae_chunk": 8,
  "eval.rapp_fit_examples": 40,
  "eval.reference_examples": 20,
  "eval.threshold_fpr": FPR,
  "data.validation_fraction": FRACTION,
}


def quiet(*_):
  pass


def squares(rng, n, shape=(12, 12)):
  """Dark images with one bright 4 x 4 square each."""
  x = rng.integers(0, 40, (n, *shape), dtype=np.uint8)
  for a in x:
    r, c = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
    a[r : r + 4, c : c + 4] = 220
  return x


def robust_z(values, reference):
  reference = np.asarray(reference, np.float64)
  med = np.median(reference)
  return (np.asarray(values, np.float64) - med) / (1.4826 * np.median(np.abs(reference - med)))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
  x = squares(np.random.default_rng(0), N)
  det = dcvae_jax.Detector(workdir=str(tmp_path_factory.mktemp("det") / "wd"), **TINY)
  assert det.fit(x, log=quiet) is det
  return det, x


def test_fit_on_arrays_gives_every_score_the_chosen_one_and_the_decision(fitted):
  det, _ = fitted
  x_new = np.concatenate([squares(np.random.default_rng(5), 6), np.random.default_rng(6).integers(0, 256, (6, 12, 12))])
  x_new = x_new.astype(np.uint8)
  scores = det.score_samples(x_new)
  assert list(scores) == list(SCORES) == list(det.score_names_)
  assert all(v.shape == (12,) and v.dtype == np.float64 for v in scores.values())
  # the headline: Fashion-MNIST one-vs-rest's validation choice (BEST_DETECTOR)
  assert det.score_name_ == "sap_complexity_knn" and det.run_name_ == "folder_seed0" and det.image_shape_ == (12, 12, 1)
  np.testing.assert_array_equal(det.decision_function(x_new), scores["sap_complexity_knn"])
  with open(os.path.join(det.workdir_, "thresholds.json")) as f:
    saved = json.load(f)
  assert det.threshold_ == saved["runs"]["folder_seed0"]["threshold"] and det.threshold_method_ == ("fpr", FPR)
  labels = det.predict(x_new)
  np.testing.assert_array_equal(labels, (scores["sap_complexity_knn"] > det.threshold_).astype(int))
  assert labels.dtype.kind == "i" and set(np.unique(labels)) <= {0, 1}


def test_the_threshold_is_set_on_held_out_normal_validation_images(fitted):
  """threshold_ is the order statistic of the validation images' sap_complexity_knn (z(rapp_sap) + z(complexity)
  + z(latent_knn), each robust z on the reference images) that flags at most FPR of them;
  those images are the validation split (no run trained on them) and the detector scores them as training did."""
  det, x = fitted
  _, val_idx = validation_indices(np.zeros(N, int), FRACTION, 0, 1)
  assert val_idx.size == 12
  saved = np.load(os.path.join(det.workdir_, "scores", "folder_seed0.npz"))
  state = np.load(os.path.join(det.workdir_, "scoring", "folder_seed0.npz"))
  np.testing.assert_array_equal(saved["y_val"], np.zeros(12))
  # recon is deterministic: the detector gives the validation images the scores training saved for them
  np.testing.assert_array_equal(det.score_samples(x[val_idx])["recon"], saved["val_recon"][:, 0])
  offset = 12 * 12 * 8.0  # a density on [0, 1] of dequantised grey levels: 8 bits per pixel
  complexity = saved["val_iwae"][:, 0].astype(np.float64) / math.log(2.0) + offset - saved["val_length_bits"]
  val = (
    robust_z(saved["val_rapp_sap"][:, 0], state["reference_rapp_sap"])
    + robust_z(complexity, state["reference_complexity"])
    + robust_z(saved["val_latent_knn"][:, 0], state["reference_latent_knn"])
  )
  t = np.quantile(val, 1 - FPR, method="inverted_cdf")
  assert det.threshold_ == pytest.approx(t, rel=1e-12)
  fpr = np.mean(val > t)
  assert fpr <= FPR and fpr == math.floor(FPR * 12) / 12  # at most the target, up to the quantile's steps


def test_save_and_load_give_identical_scores(fitted, tmp_path):
  det, _ = fitted
  x_new = squares(np.random.default_rng(9), 10)
  path = det.save(str(tmp_path / "saved"))
  det2 = dcvae_jax.Detector.load(path)
  assert det2.workdir_ == path and os.path.exists(os.path.join(path, "scoring", "input.json"))
  assert (det2.threshold_, det2.score_name_, det2.run_name_) == (det.threshold_, det.score_name_, det.run_name_)
  a, b = det.score_samples(x_new), det2.score_samples(x_new)
  for name in SCORES:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  np.testing.assert_array_equal(det.predict(x_new), det2.predict(x_new))
  with pytest.raises(WorkdirError, match="exists"):
    det.save(path)


def test_other_sizes_and_colour_are_converted_as_the_folder_source_converts(fitted):
  det, _ = fitted
  colour = np.random.default_rng(3).integers(0, 256, (4, 20, 16, 3), dtype=np.uint8)
  grey = images_lib.convert_array(colour, (12, 12), 1)[..., 0]
  np.testing.assert_array_equal(det.score_samples(colour)["recon"], det.score_samples(grey)["recon"])


def test_a_workdir_that_holds_a_detector_is_not_fitted_again(fitted):
  det, x = fitted
  with pytest.raises(WorkdirError, match="already holds a detector"):
    dcvae_jax.Detector(workdir=det.workdir_, **TINY).fit(x)


def test_config_overrides_and_unfitted_detector():
  c = dcvae_jax.Detector(model__hidden=[8, 4], **{"train.num_epochs": 3}).get_config()
  assert c.model.hidden == (8, 4) and c.train.num_epochs == 3
  assert c.data.name == c.protocol.name == "folder" and c.protocol.score == folder_config().protocol.score
  mine = folder_config("smoke")
  c = dcvae_jax.Detector(config=mine, model__latent_dim=3, data__name="mnist").get_config()
  assert c.model.latent_dim == 3 and mine.model.latent_dim != 3 and c.data.name == "folder"
  with pytest.raises(ConfigError, match="unknown config field 'model.nme'"):
    dcvae_jax.Detector(model__nme="vae").get_config()
  with pytest.raises(ConfigError, match="train.num_epochs"):
    dcvae_jax.Detector(train__num_epochs="many").get_config()
  with pytest.raises(ConfigError, match="config must be"):
    dcvae_jax.Detector(config=3).get_config()
  assert isinstance(dcvae_jax.Detector(config=ml_collections.ConfigDict(mine.to_dict())).get_config(), type(mine))
  with pytest.raises(NotFittedError):
    dcvae_jax.Detector().predict(np.zeros((1, 12, 12), np.uint8))


def test_import_dcvae_jax_does_not_start_jax():
  code = (
    "import sys, dcvae_jax\n"
    "assert 'jax' not in sys.modules, 'jax imported'\n"
    "assert dcvae_jax.Detector.__module__ == 'dcvae_jax.detector'\n"
    "assert 'jax' in sys.modules\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_fit_dir_with_class_subfolders_and_a_conditional_model(tmp_path):
  """A folder laid out as train/ with two class subfolders, a CVAE: each image is scored under both normal
  conditions and the minimum kept (protocol.score_condition=min), as training scored its validation images."""
  rng = np.random.default_rng(1)
  x = np.concatenate([squares(rng, 20), 255 - squares(rng, 20)])  # class b: the negatives
  y = np.repeat([0, 1], 20)
  for k, name in enumerate(("a", "b")):
    os.makedirs(tmp_path / "normal" / name)
    for i, a in enumerate(x[y == k]):
      Image.fromarray(a).save(tmp_path / "normal" / name / f"{i:02d}.png")
  det = dcvae_jax.Detector(workdir=str(tmp_path / "wd"), model__name="cvae", **TINY)
  det.fit_dir(str(tmp_path / "normal"), log=quiet)
  with open(os.path.join(det.workdir_, "scoring", "input.json")) as f:
    assert json.load(f)["class_names"] == ["a", "b"]
  _, val_idx = validation_indices(y, FRACTION, 0, 2)
  saved = np.load(os.path.join(det.workdir_, "scores", "folder_seed0.npz"))
  np.testing.assert_array_equal(saved["y_val"], y[val_idx])
  assert saved["val_recon"].shape == (10, 3)  # conditions a, b and the all-zero one
  got = det.score_samples(x[val_idx])
  for name in ("recon", "rapp", "rapp_sap"):
    np.testing.assert_array_equal(got[name], saved[f"val_{name}"][:, :2].min(axis=1), err_msg=name)
