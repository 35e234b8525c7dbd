"""--mode=predict (dcvae_jax/predict.py): a trained workdir scores new images with nothing but the workdir.

The key check: predict's scores of a workdir's test images equal the scores experiment saved in scores/<run>.npz
for the same images (the same compiled program, preprocessing, eval settings and seed), so every score's AUROC
from the predictions CSV is the AUROC results.json reports. Every workdir is trained here on generated images,
whose training folder is moved away before predicting."""

import csv
import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from dcvae_jax import experiment, predict
from dcvae_jax.config import folder_config
from dcvae_jax.errors import ConfigError, DataError, WorkdirError
from dcvae_jax.options import DEFAULT_SCORES, SCORES  # SCORES: what the best detector (folder_config) scores
from tests.cli import error_line, run_cli
from tests.helpers import tiny_config, toy_dataset

COLUMNS = ["image", *SCORES, "score", "anomalous"]  # a folder_config workdir's predictions.csv
DEFAULT_COLUMNS = ["image", *DEFAULT_SCORES, "score", "anomalous"]  # a default config's (tiny_config)


def quiet(*_):
  pass


def tiny_folder_config(root, **data):
  """configs/folder.py:smoke (the best detector: per-pixel Gaussian on dequantised grey levels, sap_complexity_knn),
  shrunk to seconds, with a threshold target that a few validation images resolve."""
  c = folder_config("smoke")
  c.data.data_dir = str(root)
  c.model.hidden = (16, 8)
  c.model.latent_dim = 4
  c.train.batch_size = 8
  c.train.steps_per_call = 4
  c.train.tensorboard = False
  c.eval.batch_size = 64
  c.eval.iwae_samples = c.eval.iwae_chunk = 8
  c.eval.rapp_fit_examples = 40
  c.eval.reference_examples = 20
  c.eval.threshold_fpr = 0.2
  c.data.validation_fraction = 0.25
  for k, v in data.items():
    setattr(c.data, k, v)
  return c


def square_image(rng, shape):
  """A dark image with one bright square (normal), grey (H, W) or colour (H, W, 3)."""
  a = rng.integers(0, 40, shape, dtype=np.uint8)
  h, w = shape[:2]
  r, c = rng.integers(0, h - 4), rng.integers(0, w - 4)
  a[r : r + 4, c : c + 4] = rng.integers(180, 256, (3,) if len(shape) == 3 else (), dtype=np.uint8)
  return a


def write_images(folder, images, ext="png"):
  os.makedirs(folder, exist_ok=True)
  for i, a in enumerate(images):
    Image.fromarray(a).save(os.path.join(folder, f"{i:03d}.{ext}"))


def make_folder(root, rng, shapes, ext="png", n_train=40, n_test=8):
  """train/ (squares), test/normal/ (squares) and test/anomalous/ (noise); ``shapes``: the image shapes, cycled."""
  pick = lambda i: shapes[i % len(shapes)]  # noqa: E731
  write_images(os.path.join(root, "train"), [square_image(rng, pick(i)) for i in range(n_train)], ext)
  write_images(os.path.join(root, "test", "normal"), [square_image(rng, pick(i)) for i in range(n_test)], ext)
  noise = [rng.integers(0, 256, pick(i), dtype=np.uint8) for i in range(n_test)]
  write_images(os.path.join(root, "test", "anomalous"), noise, ext)


def copy_test_images(root, dest):
  """The test images in experiment's order (test/normal/, then test/anomalous/) under names that sort so."""
  shutil.copytree(os.path.join(root, "test", "normal"), os.path.join(dest, "a_normal"))
  shutil.copytree(os.path.join(root, "test", "anomalous"), os.path.join(dest, "b_anomalous"))


def read_csv(path):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def robust_z(values, reference):
  reference = np.asarray(reference, np.float64)
  med = np.median(reference)
  return (np.asarray(values, np.float64) - med) / (1.4826 * np.median(np.abs(reference - med)))


def check_against_experiment(workdir, header, rows, run="folder_seed0"):
  """Every score predict wrote for the first len(y_test) rows (the test images, in experiment's order) equals
  what experiment saved, or, for complexity and sap_complexity, what numpy computes from it; every score's AUROC
  equals the run's."""
  assert header == COLUMNS
  saved = np.load(os.path.join(workdir, "scores", f"{run}.npz"))
  state = np.load(os.path.join(workdir, "scoring", f"{run}.npz"))
  y = saved["y_test"]
  n = y.size
  got = {name: np.array([float(r[header.index(name)]) for r in rows[:n]]) for name in SCORES}
  for name in ("recon", "nelbo", "iwae", "rapp", "rapp_sap"):  # unconditional: one column per image
    np.testing.assert_array_equal(got[name], saved[name][:, 0].astype(np.float64), err_msg=name)
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  pixels = int(np.prod(json.load(open(os.path.join(workdir, "scoring", "input.json")))["image_shape"]))
  offset = pixels * 8.0 if config["model"]["likelihood"] != "bernoulli" and config["data"]["dequantize"] else 0.0
  complexity = saved["iwae"][:, 0].astype(np.float64) / math.log(2.0) + offset - saved["length_bits"]
  np.testing.assert_allclose(got["complexity"], complexity, rtol=1e-12)
  sap_complexity = robust_z(saved["rapp_sap"][:, 0], state["reference_rapp_sap"]) + robust_z(
    complexity, state["reference_complexity"]
  )
  np.testing.assert_allclose(got["sap_complexity"], sap_complexity, rtol=1e-9, atol=1e-9)
  if "sap_complexity_knn" in got:  # the best detector's headline: the nearest-code distance standardised too
    want = sap_complexity + robust_z(saved["latent_knn"][:, 0], state["reference_latent_knn"])
    np.testing.assert_allclose(got["sap_complexity_knn"], want, rtol=1e-9, atol=1e-9)
  with open(os.path.join(workdir, "runs", f"{run}.json")) as f:
    result = json.load(f)
  is_anomaly = np.isin(y, result["anomalous"])
  for name in SCORES:
    assert roc_auc_score(is_anomaly, got[name]) == result[f"{name}_auroc"], name
  return got


@pytest.fixture(scope="module")
def colour_workdir(tmp_path_factory):
  """A workdir trained on a folder of colour 12 x 12 PNGs (one size, auto), then the folder moved away; and a
  folder of the test images (in experiment's order) with a corrupt PNG, a text file, a good and a bad npz."""
  base = tmp_path_factory.mktemp("colour")
  root, workdir, pred = base / "data", base / "wd", base / "pred"
  rng = np.random.default_rng(0)
  make_folder(root, rng, [(12, 12, 3)])
  experiment.train_and_evaluate(tiny_folder_config(root), str(workdir), log=quiet)
  copy_test_images(root, pred)
  (pred / "b_anomalous" / "zzz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  (pred / "notes.txt").write_text("not an image")
  extra = np.stack([square_image(rng, (20, 16, 3)) for _ in range(3)])  # another size: resized to 12 x 12
  np.savez(pred / "c_more.npz", x=extra)
  np.savez(pred / "d_float.npz", x=extra.astype(np.float32))
  shutil.move(str(root), str(base / "moved"))  # predict needs the workdir alone
  return workdir, pred, extra


def test_cli_predict_on_a_folder_equals_experiments_scores(colour_workdir, tmp_path):
  workdir, pred, extra = colour_workdir
  proc = run_cli("--mode=predict", f"--workdir={workdir}", f"--input={pred}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  header, rows = read_csv(workdir / "predictions.csv")
  check_against_experiment(str(workdir), header, rows)
  names = [r[0] for r in rows]
  assert names[:8] == [f"a_normal/{i:03d}.png" for i in range(8)]
  assert names[8:] == [f"b_anomalous/{i:03d}.png" for i in range(8)] + [f"c_more.npz[{i}]" for i in range(3)]
  # the bad files are named, one line each, and the rest is scored
  skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
  assert len(skipped) == 3, proc.stderr
  assert any(line.startswith("skipped b_anomalous/zzz_corrupt.png: cannot read image") for line in skipped)
  assert any(line.startswith("skipped d_float.npz: images have dtype float32") for line in skipped)
  assert any(line.startswith("skipped notes.txt: not an image") for line in skipped)
  # the decision: the chosen score (results.json) against the run's threshold (thresholds.json)
  with open(workdir / "thresholds.json") as f:
    t = json.load(f)
  assert t["score"] == json.load(open(workdir / "results.json"))["score"] == "sap_complexity_knn"
  t_run = t["runs"]["folder_seed0"]["threshold"]
  chosen = np.array([float(r[COLUMNS.index("score")]) for r in rows])
  np.testing.assert_array_equal(chosen, [float(r[COLUMNS.index("sap_complexity_knn")]) for r in rows])
  flags = np.array([int(r[COLUMNS.index("anomalous")]) for r in rows])
  np.testing.assert_array_equal(flags, (chosen > t_run).astype(int))
  out = proc.stdout
  assert f"predict: 19 image(s) of {pred} scored by run folder_seed0 of {workdir}, 3 skipped" in out
  assert f"anomalous: {flags.sum()} of 19 ({100 * flags.sum() / 19:.1f}%)" in out
  assert f"threshold: sap_complexity_knn > {t_run:.6g}, set on the run's" in out and "eval.threshold_fpr" in out
  assert f"predictions: {workdir}/predictions.csv" in out


def test_deterministic_scores_do_not_depend_on_the_other_images(colour_workdir, tmp_path):
  """recon, rapp and rapp_sap of one image alone equal its scores among the others; --output is honoured;
  an npz of another size is resized as the folder dataset resizes (images.convert_array)."""
  workdir, pred, extra = colour_workdir
  p = predict.load_predictor(str(workdir))
  lines = predict.predict(str(workdir), str(pred / "a_normal" / "003.png"), output=str(tmp_path / "one.csv"))
  assert lines[0].startswith("predict: 1 image(s)")
  one_header, (one,) = read_csv(tmp_path / "one.csv")
  assert one_header == COLUMNS and one[0] == "003.png"
  images, names, _ = p.load(str(pred))
  together = p.scores(images)
  alone = p.scores(p.convert(extra))
  assert names[3] == "a_normal/003.png" and names[-3:] == ["c_more.npz[0]", "c_more.npz[1]", "c_more.npz[2]"]
  for name in ("recon", "rapp", "rapp_sap"):
    assert float(one[COLUMNS.index(name)]) == together[name][3], name
    np.testing.assert_array_equal(alone[name], together[name][-3:], err_msg=name)


def test_grey_jpegs_of_mixed_sizes_with_image_size(tmp_path):
  """data.image_size=(12, 12) on grey JPEGs of three sizes: predict resizes the new images the same way."""
  root, workdir = tmp_path / "data", tmp_path / "wd"
  make_folder(root, np.random.default_rng(1), [(14, 10), (12, 12), (9, 15)], ext="jpg")
  config = tiny_folder_config(root, image_size=(12, 12))
  experiment.train_and_evaluate(config, str(workdir), log=quiet)
  copy_test_images(root, tmp_path / "pred")
  shutil.rmtree(root)
  warnings = []
  lines = predict.predict(str(workdir), str(tmp_path / "pred"), warn=warnings.append)
  assert not warnings and lines[-1] == f"predictions: {workdir}/predictions.csv"
  header, rows = read_csv(workdir / "predictions.csv")
  assert json.load(open(workdir / "scoring" / "input.json"))["image_shape"] == [12, 12, 1]
  check_against_experiment(str(workdir), header, rows)


@pytest.fixture(scope="module")
def multi_run_workdir(tmp_path_factory):
  """leave_one_out on a 3-class toy dataset (8 x 8, in memory): three runs in one compiled program."""
  base = tmp_path_factory.mktemp("multi")
  config = tiny_config("vae")
  config.eval.iwae_samples = config.eval.iwae_chunk = 8
  config.eval.rapp_fit_examples = 40
  config.train.tensorboard = False
  ds = toy_dataset(n_train=120, n_test=24)
  experiment.train_and_evaluate(config, str(base / "wd"), dataset=ds, log=quiet)
  np.savez(base / "test.npz", x=ds.x_test)
  return base / "wd", base / "test.npz"


def test_several_runs_need_run(multi_run_workdir, tmp_path):
  workdir, test_npz = multi_run_workdir
  proc = run_cli("--mode=predict", f"--workdir={workdir}", f"--input={test_npz}")
  line = error_line(proc)
  assert line == (
    f"error: {workdir} holds 3 runs: choose one with --run=NAME (run= in Python): "
    "class0_seed0, class1_seed0, class2_seed0"
  )
  with pytest.raises(ConfigError, match="has no run 'class7_seed0'; its runs: class0_seed0, class1_seed0"):
    predict.load_predictor(str(workdir), "class7_seed0")


def test_one_of_several_runs_scores_as_experiment_did(multi_run_workdir, tmp_path):
  """The run's scores of the test images, with its own parameters, NAP statistics and references; the training
  program scored three runs together (lax.map over models), predict scores one, so the float32 device scores
  agree to rounding."""
  workdir, test_npz = multi_run_workdir
  out = tmp_path / "p.csv"
  predict.predict(str(workdir), str(test_npz), output=str(out), run="class1_seed0")
  header, rows = read_csv(out)
  assert header == DEFAULT_COLUMNS and [r[0] for r in rows] == [f"test.npz[{i}]" for i in range(24)]
  saved = np.load(workdir / "scores" / "class1_seed0.npz")
  for name in ("recon", "nelbo", "iwae", "rapp", "rapp_sap"):
    got = np.array([float(r[header.index(name)]) for r in rows])
    np.testing.assert_allclose(got, saved[name][:, 0], rtol=1e-6, atol=0, err_msg=name)
  complexity = np.array([float(r[header.index("complexity")]) for r in rows])
  # binarised pixels, Bernoulli likelihood: no density offset
  np.testing.assert_allclose(complexity, saved["iwae"][:, 0] / math.log(2.0) - saved["length_bits"], rtol=1e-6)


def test_cli_errors(colour_workdir, tmp_path):
  workdir, pred, _ = colour_workdir
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"garbage")
  proc = run_cli("--mode=predict", f"--workdir={workdir}", f"--input={bad}")
  assert error_line(proc) == f"error: no image of {bad} could be scored (1 skipped, listed above)"
  assert proc.returncode == 1 and "skipped bad.png: cannot read image" in proc.stderr
  proc = run_cli("--mode=predict", f"--workdir={workdir}")
  assert "needs --input=PATH" in error_line(proc)


def test_a_workdir_without_threshold_or_scoring_state(colour_workdir, tmp_path):
  """No thresholds.json (data.validation_fraction=0): every score, an empty decision column and a summary that
  says so. No scoring/<run>.npz (a workdir scored before it existed): one line naming --mode=rescore."""
  workdir, pred, _ = colour_workdir
  copy = tmp_path / "wd"
  shutil.copytree(workdir, copy)
  os.remove(copy / "thresholds.json")
  lines = predict.predict(str(copy), str(pred / "a_normal"), warn=quiet)
  assert lines[1].startswith("no decision threshold in the workdir (data.validation_fraction=0")
  header, rows = read_csv(copy / "predictions.csv")
  assert header == COLUMNS and len(rows) == 8 and all(r[-1] == "" for r in rows)
  with pytest.raises(WorkdirError, match="has no decision threshold"):
    predict.load_predictor(str(copy)).flagged(np.zeros(1))
  os.remove(copy / "scoring" / "folder_seed0.npz")
  with pytest.raises(WorkdirError, match="folder_seed0.npz is missing; .* run --mode=rescore"):
    predict.load_predictor(str(copy))


def test_load_input_reports_and_keeps_order(tmp_path):
  rng = np.random.default_rng(0)
  write_images(tmp_path / "in" / "sub", [rng.integers(0, 256, (5, 7), dtype=np.uint8) for _ in range(2)])
  (tmp_path / "in" / "sub" / "001.png").write_bytes(b"broken")
  np.savez(tmp_path / "in" / "wrong.npz", x=np.zeros((2, 3), np.uint8))
  images, names, skipped = predict.load_input(str(tmp_path / "in"), (4, 4), 3)
  assert images.shape == (1, 4, 4, 3) and names == ["sub/000.png"]
  assert [s[0] for s in skipped] == ["sub/001.png", "wrong.npz"]
  assert "expected (N, H, W) or (N, H, W, C)" in skipped[1][1]
  with pytest.raises(DataError, match="does not exist"):
    predict.load_input(str(tmp_path / "nothing"), (4, 4), 3)
  os.makedirs(tmp_path / "empty")
  with pytest.raises(DataError, match="holds no images"):
    predict.load_input(str(tmp_path / "empty"), (4, 4), 3)


def test_a_workdir_evaluated_without_detection_is_one_line_naming_the_rescore(tmp_path):
  """results.json without a headline score (eval.evaluators left detection out): nothing to predict with."""
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "config.json").write_text(tiny_config().to_json())
  (wd / "results.json").write_text(json.dumps({"model": "vae", "runs": []}))
  with pytest.raises(WorkdirError) as e:
    predict.load_predictor(str(wd))
  assert str(e.value) == (
    f"{wd} was evaluated without the detection evaluator (eval.evaluators): score it first with "
    f"--mode=rescore --workdir={wd} (the default eval.evaluators include it)"
  )
