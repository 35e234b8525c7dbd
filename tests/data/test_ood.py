"""The cross-dataset protocol (protocol.name="ood"): train on every class of one dataset, anomalies from the test
split of another of the same image shape; validation anomalies from that other dataset's TRAINING split only."""

import os

import numpy as np
import pytest

from dcvae_jax import experiment
from dcvae_jax.data import datasets, protocols, splits
from dcvae_jax.data.datasets import Dataset
from dcvae_jax.errors import ConfigError, DataError
from dcvae_jax.validation import validate
from tests.helpers import tiny_config, toy_dataset


def _marked(n, num_classes, value, size=28, seed=0):
  """n images of one constant grey ``value`` + a per-image index in the corner (so each is recognisable), and
  balanced labels."""
  x = np.full((n, size, size), value, np.uint8)
  x[:, 0, 0] = np.arange(n) % 256
  x[:, 0, 1] = np.arange(n) // 256
  return x, np.random.default_rng(seed).permutation(np.arange(n) % num_classes).astype(np.int64)


def test_add_ood_appends_test_anomalies_and_validation_anomalies_from_the_ood_training_split():
  ds = splits.split_validation(toy_dataset(n_train=200, n_test=40, size=28), 0.1, 0)
  x_tr, y_tr = _marked(300, 4, 77)
  x_te, y_te = _marked(50, 4, 99, seed=1)
  ood = Dataset("other", x_tr, y_tr.astype(np.int32), x_te, y_te.astype(np.int32), 4, source="toy")
  both = splits.add_ood(ds, ood, 0.1, 0)
  k = ds.num_classes
  assert both.num_classes == k + 1 and both.name == ds.name and both.x_train is ds.x_train
  np.testing.assert_array_equal(both.x_test, np.concatenate([ds.x_test, x_te]))
  np.testing.assert_array_equal(both.y_test, np.r_[ds.y_test, np.full(50, k)])
  n_val = ds.x_val.shape[0]
  np.testing.assert_array_equal(both.x_val[:n_val], ds.x_val)
  ood_val = both.x_val[n_val:]
  assert np.all(both.y_val[n_val:] == k) and np.all(both.y_val[:n_val] < k)
  assert np.all(ood_val[:, 5, 5] == 77)  # from the ood TRAINING split, never its test split (grey 99)
  _, va = splits.validation_indices(y_tr, 0.1, 0, 4)
  np.testing.assert_array_equal(ood_val, x_tr[va])  # the same rule (fraction, seed, stratified) as in-distribution
  config = tiny_config("vae")
  config.protocol.name = "ood"
  (run,) = protocols.make_runs(config.protocol, both.num_classes, 0)
  assert run.name == "ood_seed0" and run.normal == tuple(range(k)) and run.anomalous == (k,)


def test_shape_mismatch_is_one_line():
  ds = toy_dataset(n_train=100, size=8)
  x, y = _marked(20, 2, 5)
  ood = Dataset("big", x, y.astype(np.int32), x, y.astype(np.int32), 2, source="toy")
  with pytest.raises(DataError) as e:
    splits.add_ood(ds, ood, 0.0, 0)
  assert "\n" not in str(e.value) and "28x28" in str(e.value) and "8x8" in str(e.value)


def test_config_needs_an_other_dataset():
  c = tiny_config()
  c.protocol.name = "ood"
  with pytest.raises(ConfigError, match="ood_dataset"):
    validate(c)
  c.protocol.ood_dataset = "mnist5k"
  with pytest.raises(ConfigError, match="differ"):
    validate(c)
  c.protocol.ood_dataset = "shapes"
  validate(c)


def _npz_dataset(folder, name, value, n_train=120, n_test=30):
  for split, n, seed in (("train", n_train, 2), ("test", n_test, 3)):
    x, y = _marked(n, 10, value, seed=seed)
    np.savez(os.path.join(folder, f"{name}_{split}.npz"), x=x, y=y)


def test_prepare_data_reads_the_ood_dataset_from_its_folder(tmp_path):
  _npz_dataset(str(tmp_path), "fashion_mnist", 123)
  config = tiny_config()
  config.data.name = "mnist5k"
  config.protocol.name = "ood"
  config.protocol.ood_dataset = "fashion_mnist"
  config.protocol.ood_data_dir = str(tmp_path)
  ds = experiment.prepare_data(config)
  base = datasets.load_dataset("mnist5k")
  assert ds.x_train.shape[0] == 3600 and ds.x_test.shape[0] == 1000 + 30
  assert np.sum(ds.y_test == 10) == 30 and np.all(ds.x_test[-30:, 5, 5] == 123)
  assert np.sum(ds.y_val == 10) == np.sum(
    splits.validation_counts(np.load(tmp_path / "fashion_mnist_train.npz")["y"], 0.1, 10)
  )
  assert np.all(ds.x_val[ds.y_val == 10][:, 5, 5] == 123) and ds.x_val.shape[0] == 400 + np.sum(ds.y_val == 10)
  np.testing.assert_array_equal(ds.x_test[:1000], base.x_test)
  # An in-distribution dataset of another shape: one line.
  config.data.name = "toy"
  with pytest.raises(DataError, match="same image shape"):
    experiment.prepare_data(config, toy_dataset(n_train=100, size=8))


def test_mnist5k_against_shapes_end_to_end(tmp_path):
  """Train on the embedded digits, anomalies = the procedural shapes' test images."""
  config = tiny_config("vae")
  config.data.name = "mnist5k"
  config.protocol.name = "ood"
  config.protocol.ood_dataset = "shapes"
  config.protocol.score = "auto"
  config.eval.iwae_samples = 8
  config.eval.iwae_chunk = 8
  config.eval.rapp_fit_examples = 100
  wd = str(tmp_path / "wd")
  results = experiment.train_and_evaluate(config, wd, log=lambda *_: None)
  (run,) = results["runs"]
  assert results["protocol"] == "ood" and results["ood_dataset"] == "shapes" and run["run"] == "ood_seed0"
  assert run["normal"] == list(range(10)) and run["anomalous"] == [10]
  assert (run["num_test_normal"], run["num_test_anomalous"]) == (1000, 3000)  # mnist5k test, shapes test
  shapes_val = int(splits.validation_counts(datasets.load_dataset("shapes").y_train, 0.1, 3).sum())
  assert 1195 <= shapes_val <= 1205  # 10% of each class of its 12,000 training images, rounded per class
  assert (run["num_val_normal"], run["num_val_anomalous"]) == (400, shapes_val)
  assert results["score_selection"] == "validation" and results["score"] in results["val_auroc_by_score"]
  saved = np.load(os.path.join(wd, "scores", "ood_seed0.npz"))
  assert np.sum(saved["y_test"] == 10) == 3000 and saved["val_recon"].shape == (400 + shapes_val, 1)
  assert 0.0 <= results["auroc_mean"] <= 1.0 and results["threshold"]["runs"]["ood_seed0"]["n_val_normal"] == 400
