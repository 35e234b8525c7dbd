"""summaries.TensorBoardWriter: scalars written through tensorboardX read back, by our reader and by
TensorBoard's own EventAccumulator where the `tensorboard` extra is installed."""

import glob
import os

import numpy as np
import pytest

from dcvae_jax.evaluators import recon_grid
from dcvae_jax.train import tensorboard as summaries


def _write(logdir):
  with summaries.TensorBoardWriter(str(logdir)) as tb:
    for step in (1, 11, 21):
      tb.scalars("class0_seed0", step, {"loss": 100.0 / step, "kl": np.float32(0.5 * step)})
      tb.scalars("class1_seed0", step, {"loss": -1.25 * step})
    tb.flush(force=True)
    assert glob.glob(os.path.join(str(logdir), "class0_seed0", "events.out.tfevents.*"))


def test_scalars_read_back(tmp_path):
  _write(tmp_path / "tb")
  got = summaries.read_scalars(str(tmp_path / "tb"))
  assert sorted(got) == ["class0_seed0", "class1_seed0"]
  assert sorted(got["class0_seed0"]) == ["kl", "loss"]
  assert [s for s, _ in got["class0_seed0"]["loss"]] == [1, 11, 21]
  np.testing.assert_allclose([v for _, v in got["class0_seed0"]["loss"]], [100.0, 100 / 11, 100 / 21], rtol=1e-6)
  np.testing.assert_allclose([v for _, v in got["class0_seed0"]["kl"]], [0.5, 5.5, 10.5])
  assert got["class1_seed0"] == {"loss": [(1, -1.25), (11, -13.75), (21, -26.25)]}


def test_tensorboard_reads_them(tmp_path):
  event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
  _write(tmp_path / "tb")
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "class0_seed0"))
  acc.Reload()
  assert sorted(acc.Tags()["scalars"]) == ["kl", "loss"]
  events = acc.Scalars("loss")
  assert [e.step for e in events] == [1, 11, 21]
  np.testing.assert_allclose([e.value for e in events], [100.0, 100 / 11, 100 / 21], rtol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# Evaluation: AUROC / AUPR of every score and the reconstructions, per run and the mean.


def test_evaluation_scalars_names():
  result = {
    "run": "class0_seed0",
    "auroc": 0.9,  # the headline: the same number as its score's, not repeated
    "recon_auroc": 0.75,
    "rapp_sap_aupr": 0.5,
    "val_sap_complexity_auroc": 0.625,  # sap_complexity's, not complexity's
    "complexity_auroc": 0.25,
    "recon_mean_normal": 3.0,
    "auroc_by_score": {"nelbo": 0.125},
    "auroc_per_class_by_score": {"nelbo": {"0": 1.0}},  # nested: left out
    "skipped_updates": 0,
  }
  assert summaries.evaluation_scalars(result) == {
    "auroc_by_score/recon": 0.75,
    "aupr_by_score/rapp_sap": 0.5,
    "val_auroc_by_score/sap_complexity": 0.625,
    "auroc_by_score/complexity": 0.25,
    "auroc_by_score/nelbo": 0.125,
  }


def test_reconstruction_grid_layout():
  inputs = np.stack([np.full((3, 2), v, np.float32) for v in (0.1, 0.2, 0.3)])
  recons = inputs + 0.5
  grid = recon_grid.reconstruction_grid(inputs, recons, np.array([False, True, False]), per_group=2)
  assert grid.shape == (4 * 4 + 1, 2 * 3 + 1)  # 4 rows of 3-pixel tiles, 2 columns of 2, 1-pixel lines
  tile = lambda r, c: grid[1 + 4 * r : 4 + 4 * r, 1 + 3 * c : 3 + 3 * c]  # noqa: E731
  np.testing.assert_allclose(tile(0, 0), 0.1)  # normal inputs: images 0 and 2
  np.testing.assert_allclose(tile(0, 1), 0.3)
  np.testing.assert_allclose(tile(1, 1), 0.8)  # their reconstructions
  np.testing.assert_allclose(tile(2, 0), 0.2)  # the anomalous input, its reconstruction
  np.testing.assert_allclose(tile(3, 0), 0.7)
  np.testing.assert_allclose(tile(2, 1), 1.0)  # one anomaly only: a white cell
  assert (grid[0] == 1).all() and (grid[:, 0] == 1).all()


@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_training_writes_evaluation_summaries(tmp_path, model):
  """Each run's event file holds the AUROC and AUPR of every score (equal to runs/<run>.json) and an image of
  test images over their reconstructions (equal to a reconstruction recomputed from the saved checkpoint); the
  ``mean`` run holds results.json's *_by_score dicts."""
  event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
  import io
  import json

  from PIL import Image

  from dcvae_jax import experiment
  from dcvae_jax.data import input_pipeline
  from dcvae_jax.models import inference
  from tests.helpers import tiny_config, toy_dataset

  toy = toy_dataset()
  config = tiny_config(model)
  config.protocol.classes = (0, 2)
  config.train.tensorboard = True
  results = experiment.train_and_evaluate(config, str(tmp_path), dataset=toy, log=lambda *a: None)
  trained = experiment.load_trained(str(tmp_path), dataset=toy)
  pictures = inference.Model(trained.setup, mesh=trained.mesh)

  def events(run):
    acc = event_accumulator.EventAccumulator(
      str(tmp_path / "tensorboard" / run), size_guidance={event_accumulator.IMAGES: 0, event_accumulator.SCALARS: 0}
    )
    acc.Reload()
    return acc

  for run in trained.runs:
    saved = json.load(open(tmp_path / "runs" / f"{run.name}.json"))
    acc = events(run.name)
    last = max(e.step for e in acc.Scalars("loss"))
    for score in ("recon", "nelbo", "iwae", "complexity", "rapp", "rapp_sap", "sap_complexity"):
      for metric in ("auroc", "aupr"):
        (event,) = acc.Scalars(f"{metric}_by_score/{score}")
        assert event.step == last
        np.testing.assert_allclose(event.value, saved[f"{score}_{metric}"], rtol=1e-6)
    (image,) = acc.Images("reconstructions")
    assert image.step == last
    got = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("L"), np.float32) / 255

    # The same picture, independently: the first 8 normal and anomalous test images of the run, each under the
    # condition with the lowest saved recon score, through the restored parameters.
    with np.load(tmp_path / "scores" / f"{run.name}.npz") as f:
      recon = f["recon"]
    rows = np.flatnonzero(np.isin(toy.y_test, run.normal + run.anomalous))
    anomalous = np.isin(toy.y_test[rows], run.anomalous)
    pick = np.concatenate([rows[~anomalous][:8], rows[anomalous][:8]])
    cond = recon[pick, :-1].argmin(1) if model == "cvae" else np.zeros(len(pick), np.int32)
    x = np.asarray(input_pipeline.preprocess(toy.x_test[pick], True))[..., 0]
    r = pictures.reconstruct(trained.params[run.name], toy.x_test[pick], cond)
    want = np.ones((4 * 9 + 1, 8 * 9 + 1))
    for i in range(8):
      for row, image_ in ((0, x[i]), (1, r[i]), (2, x[8 + i]), (3, r[8 + i])):
        want[1 + 9 * row : 9 + 9 * row, 1 + 9 * i : 9 + 9 * i] = image_
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1 / 255 + 1e-6)

  mean = events("mean")
  for name in ("auroc_by_score", "auroc_std_by_score", "aupr_by_score"):
    for score, value in results[name].items():
      (event,) = mean.Scalars(f"{name}/{score}")
      np.testing.assert_allclose(event.value, value, rtol=1e-6)


def test_image_read_back_with_nan_drawn_black(tmp_path):
  event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
  import io
  import warnings

  from PIL import Image

  image = np.array([[0.0, 1.0, np.nan], [0.5, 2.0, -1.0]], np.float32)  # NaN: a diverged model's pixel
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    with summaries.TensorBoardWriter(str(tmp_path)) as tb:
      tb.image("class0_seed0", 7, "reconstructions", image)
  acc = event_accumulator.EventAccumulator(str(tmp_path / "class0_seed0"))
  acc.Reload()
  (event,) = acc.Images("reconstructions")
  got = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("L"))
  assert event.step == 7 and (event.width, event.height) == (3, 2)
  np.testing.assert_allclose(got, [[0, 255, 0], [127, 255, 0]], atol=1)
