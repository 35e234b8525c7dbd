"""The whole pipeline in-process: one training step on TFDS mock data, and the loss going down on real digits."""

import json

import numpy as np
import pytest

from dcvae_jax import experiment
from dcvae_jax.data import datasets as data
from dcvae_jax.data import tfds_source as data_tfds
from tests.helpers import tiny_config


def test_train_step_on_tfds_mock_data(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  monkeypatch.setattr(data_tfds, "_network_reachable", lambda *a, **k: True)  # the mock never downloads
  config = tiny_config("cvae", batch_size=8)
  config.data.name = "mnist"
  config.data.tfds_data_dir = str(tmp_path / "tfds")
  config.data.validation_fraction = 0.0  # the mock's ~10 images a class are too few to hold some out
  config.protocol.name = "split"
  config.protocol.normal = (0, 1, 2, 3, 4)
  config.protocol.anomalous = (5, 6, 7, 8, 9)
  with tfds.testing.mock_data(num_examples=96):
    ds = experiment.load_data(config)
  assert ds.source == "tfds" and ds.x_train.shape == (96, 28, 28)
  assert np.isin(ds.y_train, config.protocol.normal).sum() >= 8  # the mock's labels are uniform over 0..9
  results = experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=ds, log=lambda *_: None)
  lines = [json.loads(l) for l in open(tmp_path / "wd" / "metrics.jsonl")]
  assert lines and lines[0]["step"] >= 1 and np.isfinite(lines[0]["loss"])
  assert results["dataset"] == "mnist" and 0 <= results["auroc_mean"] <= 1


def test_loss_goes_down_on_real_digits(tmp_path):
  ds = data.load_dataset("mnist5k")
  config = tiny_config("vae", num_epochs=4, batch_size=64, log_every_steps=1, steps_per_call=28)
  config.model.hidden = (128, 64)
  config.model.latent_dim = 8
  config.protocol.classes = (0,)
  results = experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=ds, log=lambda *_: None)
  loss = np.array([json.loads(l)["loss"] for l in open(tmp_path / "wd" / "metrics.jsonl")])
  assert loss.size == 4 * (3240 // 64)  # 9 classes x 360 training images (40 of 400 are validation)
  first, last = loss[:20].mean(), loss[-20:].mean()
  assert last < 0.5 * first, (first, last)  # ~540 nats -> ~150 nats
  # Real digits, trained a little: held-out 0s are already more anomalous than the other digits.
  assert results["auroc_mean"] > 0.7


def test_results_gain_disentanglement_metrics_on_shapes(tmp_path):
  ds = data.load_dataset("shapes")
  config = tiny_config("beta_tcvae", batch_size=64, steps_per_call=25)
  config.data.name = "shapes"
  config.protocol.classes = (0,)
  results = experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=ds, log=lambda *_: None)
  for key in (
    "dis_mig_mean",
    "dis_factor_vae_mean",
    "dis_dci_disentanglement_mean",
    "dis_sap_mean",
    "dis_mig_x_mean",
    "class_mig_mean",
  ):
    assert 0.0 <= results[key] <= 1.0, key
  run = json.load(open(tmp_path / "wd" / "runs" / "class0_seed0.json"))
  assert run["dis_num_images"] == int(np.isin(ds.y_test, (1, 2)).sum())
  assert np.load(tmp_path / "wd" / "scores" / "class0_seed0.npz")["codes"].shape == (ds.x_test.shape[0], 4)


def test_tensorboard_event_files_hold_the_logged_metrics(tmp_path):
  """train.tensorboard=True: each run's event files carry exactly the steps and values of metrics.jsonl."""
  from dcvae_jax.train import tensorboard as summaries
  from tests.helpers import toy_dataset

  config = tiny_config("factor_vae", num_epochs=2, log_every_steps=3)
  config.train.tensorboard = True
  config.protocol.classes = (0, 2)
  experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=toy_dataset(), log=lambda *_: None)
  lines = [json.loads(l) for l in open(tmp_path / "wd" / "metrics.jsonl")]
  events = summaries.read_scalars(str(tmp_path / "wd" / "tensorboard"))
  assert sorted({l["run"] for l in lines}) == ["class0_seed0", "class2_seed0"]
  assert sorted(events) == ["class0_seed0", "class2_seed0", "mean"]  # mean: the evaluation's mean over runs
  for run, tags in events.items():
    if run == "mean":
      continue
    mine = [l for l in lines if l["run"] == run]
    assert {"loss", "recon", "kl", "tc_d", "disc_loss", "grad_norm"} <= set(tags)
    for tag in ("loss", "disc_loss"):
      assert [s for s, _ in tags[tag]] == [l["step"] for l in mine]
      np.testing.assert_allclose([v for _, v in tags[tag]], [l[tag] for l in mine], rtol=1e-6)
