"""data.name=folder: your own images through the whole pipeline (dcvae_jax.data.folder_source, the 'folder'
protocol, any H x W x C in every model and both architectures, colour in the scores and figures).

Every folder is generated here with Pillow in tmp_path; the expected labels are written into the pixels."""

import importlib.util
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dcvae_jax import experiment
from dcvae_jax.config import base_config
from dcvae_jax.data import input_pipeline, protocols
from dcvae_jax.data.datasets import load_dataset
from dcvae_jax.errors import ConfigError, ProtocolError, WorkdirError
from dcvae_jax.evaluators import anomaly_scores, metrics
from dcvae_jax.models import networks
from dcvae_jax.models import registry as models
from dcvae_jax.train import train_step, trainer
from dcvae_jax.validation import validate
from tests.cli import REPO, run_cli
from tests.data.helpers import raises
from tests.helpers import tiny_config


def _img(value, shape, seed=0):
  """An image whose first pixel is ``value`` (the label check) over random pixels."""
  a = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
  a[0, 0] = value
  return a


def _write(folder, values, shape, ext="png", seed=0):
  os.makedirs(folder, exist_ok=True)
  for i, v in enumerate(values):
    Image.fromarray(_img(v, shape, seed + i)).save(os.path.join(folder, f"{i:03d}.{ext}"))


def _make(root, *, train, normal=None, anomalous=None, shape=(6, 7), ext="png"):
  """train / normal: {class folder (or "" for none): [first-pixel values]}; anomalous: [values] or None."""
  for sub, values in train.items():
    _write(os.path.join(root, "train", sub), values, shape, ext, seed=1)
  if normal is not None:
    for sub, values in normal.items():
      _write(os.path.join(root, "test", "normal", sub), values, shape, ext, seed=50)
  if anomalous is not None:
    _write(os.path.join(root, "test", "anomalous", "kind"), anomalous, shape, ext, seed=90)  # any depth
  return str(root)


def test_class_subfolders_give_sorted_labels(tmp_path):
  # classes "a" (0) and "b" (1); first pixel = 10 x class + 1 (normal) or 200 (anomalous)
  root = _make(
    tmp_path,
    train={"b": [11] * 3, "a": [1] * 2},
    normal={"a": [1], "b": [11, 11]},
    anomalous=[200] * 2,
  )
  ds = load_dataset("folder", root)
  assert ds.x_train.shape == (5, 6, 7) and ds.x_test.shape == (5, 6, 7)  # grey: (N, H, W), as every source
  assert ds.image_shape == (6, 7, 1) and ds.source == f"folder:{os.path.abspath(root)}"
  assert ds.class_names == ("a", "b", "anomalous") and ds.num_classes == 3
  assert ds.protocol_classes == ((0, 1), (2,))
  np.testing.assert_array_equal(ds.y_train, ds.x_train[:, 0, 0] // 10)
  np.testing.assert_array_equal(ds.y_test, np.where(ds.x_test[:, 0, 0] == 200, 2, ds.x_test[:, 0, 0] // 10))
  assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  (run,) = experiment.make_runs(tiny_config(), ds)  # any protocol.name: the folder's own
  assert (run.name, run.label, run.normal, run.anomalous) == ("folder_seed0", "folder", (0, 1), (2,))
  cfg = tiny_config()
  assert experiment.run_protocol(cfg, ds).name == "folder" and cfg.protocol.name == "leave_one_out"


def test_flat_colour_folder_and_no_test_set(tmp_path):
  root = _make(tmp_path, train={"": [0] * 4}, shape=(5, 9, 3), ext="bmp")
  ds = load_dataset("folder", root)
  assert ds.x_train.shape == (4, 5, 9, 3) and ds.x_test.shape == (0, 5, 9, 3) and ds.y_test.shape == (0,)
  assert ds.class_names == ("normal",) and ds.protocol_classes == ((0,), ())
  (run,) = protocols.make_runs(base_config().protocol, ds.num_classes, 0, fixed=ds.protocol_classes)
  assert run.normal == (0,) and run.anomalous == ()
  x = np.asarray(Image.open(os.path.join(root, "train", "002.bmp")))
  np.testing.assert_array_equal(ds.x_train[2], x)  # BMP is lossless


def test_protocol_folder_needs_folder_data():
  p = base_config().protocol
  p.name = "folder"
  with pytest.raises(ProtocolError, match="data.name=folder"):
    protocols.make_runs(p, 10, 0)


def test_mixed_sizes_need_image_size(tmp_path):
  for i, (h, w) in enumerate([(8, 8), (12, 5), (8, 8)]):
    _write(os.path.join(tmp_path, "train"), [i], (h, w), "jpg", seed=i)
    os.rename(os.path.join(tmp_path, "train", "000.jpg"), os.path.join(tmp_path, "train", f"im{i}.jpg"))
  raises(["differ in size", "im1.jpg", "12x5", "data.image_size"], load_dataset, "folder", str(tmp_path))
  ds = load_dataset("folder", str(tmp_path), image_size=(6, 4), channels=3)
  assert ds.x_train.shape == (3, 6, 4, 3)


@pytest.mark.parametrize(
  "layout, match",
  [
    ({}, ["no train/"]),
    ({"train/notes.txt": ""}, ["holds no images", "notes.txt"]),
    ({"train/a.png": 1, "train/c/b.png": 1}, ["both directly", "class subfolders"]),
    ({"train/c/b.png": 1, "train/d/": None}, ["train/d holds no images"]),
    ({"train/a.png": 1, "test/normal/b.png": 1}, ["lacks anomalous/"]),
    ({"train/a.png": 1, "test/normal/": None, "test/anomalous/b.png": 1}, ["normal holds no images"]),
    ({"train/a.png": 1, "test/normal/b.png": 1, "test/anomalous/": None}, ["anomalous holds no images"]),
    ({"train/c/a.png": 1, "train/d/a.png": 1, "test/normal/b.png": 1, "test/anomalous/b.png": 1}, ["subfolders named"]),
    (
      {"train/c/a.png": 1, "train/d/a.png": 1, "test/normal/e/b.png": 1, "test/anomalous/b.png": 1},
      ["e/ is not a class"],
    ),
    ({"train/a.png": 1, "train/b.png": "corrupt"}, ["train/b.png", "cannot read image"]),
    ({"train/a.png": 1, "train.npz": "npz"}, ["both train/ and train.npz"]),
    ({"train/a.png": 1, "test.npz": "npz"}, ["mixes folders and npz"]),
    ({"train": "file"}, ["is not a folder"]),
  ],
)
def test_folder_errors_are_one_line(tmp_path, layout, match):
  for rel, what in layout.items():
    path = os.path.join(tmp_path, rel)
    os.makedirs(path if rel.endswith("/") else os.path.dirname(path), exist_ok=True)
    if what == 1:
      Image.fromarray(_img(0, (4, 4))).save(path)
    elif what == "corrupt":
      with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    elif what == "npz":
      np.savez(path, x=np.zeros((2, 4, 4), np.uint8))
    elif what in ("", "file"):
      with open(path, "w") as f:
        f.write(what)
  raises(match, load_dataset, "folder", str(tmp_path))


def test_folder_needs_an_existing_data_dir(tmp_path):
  raises(["needs data.data_dir"], load_dataset, "folder", "")
  raises(["does not exist"], load_dataset, "folder", str(tmp_path / "nowhere"))


def test_npz_layout(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (6, 5, 8, 3), dtype=np.uint8)
  y = np.array([1, 0, 1, 1, 0, 0])
  xt = rng.integers(0, 256, (4, 5, 8, 3), dtype=np.uint8)
  np.savez(tmp_path / "train.npz", x=x, y=y)
  np.savez(tmp_path / "test.npz", x=xt, anomalous=np.array([0, 1, 0, 1]), y=np.array([1, 7, 0, 7]))
  ds = load_dataset("folder", str(tmp_path))
  np.testing.assert_array_equal(ds.x_train, x)
  np.testing.assert_array_equal(ds.x_test, xt)
  np.testing.assert_array_equal(ds.y_train, y)
  np.testing.assert_array_equal(ds.y_test, [1, 2, 0, 2])  # anomalous = K = 2, their y ignored
  assert ds.class_names == ("0", "1", "anomalous") and ds.protocol_classes == ((0, 1), (2,))
  grey = load_dataset("folder", str(tmp_path), image_size=4, channels=1)
  assert grey.x_train.shape == (6, 4, 4) and grey.x_test.shape == (4, 4, 4)

  np.savez(tmp_path / "test.npz", x=xt, anomalous=np.array([0, 1, 0, 1]))
  raises(["lacks y"], load_dataset, "folder", str(tmp_path))
  np.savez(tmp_path / "test.npz", x=xt, y=y[:4])
  raises(["lacks array", "anomalous"], load_dataset, "folder", str(tmp_path))
  np.savez(tmp_path / "test.npz", x=xt[:, :4], anomalous=np.array([0, 1, 0, 1]), y=np.array([1, 7, 0, 7]))
  raises(["4x8", "5x8", "data.image_size"], load_dataset, "folder", str(tmp_path))
  np.savez(tmp_path / "test.npz", x=xt, anomalous=np.array([0, 0, 0, 0]), y=np.zeros(4, int))
  raises(["both normal and anomalous"], load_dataset, "folder", str(tmp_path))
  np.savez(tmp_path / "train.npz", x=x, y=np.array([2, 0, 2, 2, 0, 0]))
  raises(["class 1 has no images"], load_dataset, "folder", str(tmp_path))
  np.savez(tmp_path / "train.npz", x=x.astype(np.float32), y=y)
  raises(["dtype float32"], load_dataset, "folder", str(tmp_path))
  os.remove(tmp_path / "test.npz")
  np.savez(tmp_path / "train.npz", x=x[..., 0])  # no y: one class; no test.npz: no test set
  ds = load_dataset("folder", str(tmp_path))
  assert ds.x_train.shape == (6, 5, 8) and ds.x_test.shape == (0, 5, 8) and ds.protocol_classes == ((0,), ())


def test_config_fields_are_validated():
  c = base_config()
  validate(c)
  for field, value, match in [
    ("image_size", (16, 16), "data.name=folder"),
    ("channels", 3, "data.name=folder"),
    ("channels", 2, "data.channels"),
    ("image_size", (0, 5), "data.image_size"),
    ("image_size", (1, 2, 3), "data.image_size"),
  ]:
    c = base_config()
    setattr(c.data, field, value)
    if match != "data.name=folder":
      c.data.name = "folder"
    with pytest.raises(ConfigError, match=match):
      validate(c)
  c = base_config()
  c.data.name, c.data.image_size, c.data.channels = "folder", (16,), 1
  validate(c)


def test_folder_config_file():
  spec = importlib.util.spec_from_file_location("folder_config", os.path.join(REPO, "configs", "folder.py"))
  folder = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(folder)
  for arg in ("", "smoke"):
    c = folder.get_config(arg)
    validate(c)
    assert c.data.name == "folder" and c.protocol.name == "folder" and not c.data.binarize
  with pytest.raises(ValueError):
    folder.get_config("best")


def test_png_bits_of_colour_images_is_their_png_file_size(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
  rgb[1] = 128  # flat: far cheaper than noise
  bits = anomaly_scores.png_bits(rgb)
  for img, b in zip(rgb, bits, strict=True):
    path = tmp_path / "x.png"
    Image.fromarray(img).save(path)  # an RGB PNG, written independently
    assert b == 8 * os.path.getsize(path)
    assert Image.open(io.BytesIO(path.read_bytes())).mode == "RGB"
  assert bits[1] < bits[0] / 3
  grey = rgb[..., 0]
  np.testing.assert_array_equal(anomaly_scores.png_bits(grey[..., None]), anomaly_scores.png_bits(grey))
  with pytest.raises(ValueError, match="N, H, W, 3"):
    anomaly_scores.png_bits(np.zeros((1, 4, 4, 2), np.uint8))


def test_preprocess_takes_the_models_channels():
  x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
  want = (x.astype(np.float32) / 255.0)[..., None]
  np.testing.assert_allclose(input_pipeline.preprocess(x, False), want)  # grey, no shape: as before
  np.testing.assert_allclose(input_pipeline.preprocess(x, False, image_shape=(3, 4, 1)), want)
  np.testing.assert_allclose(input_pipeline.preprocess(x[..., None], False, image_shape=(3, 4, 1)), want)
  rgb = np.stack([x, x // 2, 255 - x], axis=-1)
  np.testing.assert_allclose(input_pipeline.preprocess(rgb, False, image_shape=(3, 4, 3)), rgb / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(input_pipeline.preprocess(rgb, True, image_shape=(3, 4, 3)), rgb > 127.5)
  with pytest.raises(ValueError, match="image shape"):
    input_pipeline.preprocess(x, False, image_shape=(3, 4, 3))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 64, 1), (20, 36, 3), (11, 19, 1), (1, 5, 3)])
def test_decoder_output_has_the_input_shape(arch, shape):
  hidden = (8, 8, 8, 16) if arch == "conv" else (16, 8)  # conv: three stride-2 layers
  module = networks.VAE(arch, hidden, 3, shape, num_conditions=2)
  x = jnp.zeros((2, *shape), jnp.float32)
  c = jax.nn.one_hot(jnp.array([0, 1]), 2)
  params = module.init(jax.random.PRNGKey(0), x, c)
  mu, logvar, logits, *_ = module.apply(params, x, c)
  assert mu.shape == logvar.shape == (2, 3) and logits.shape == (2, *shape)
  if arch == "conv":
    h, w, _ = shape
    hs, ws = networks.conv_sides(h, 3), networks.conv_sides(w, 3)
    assert hs == [h, -(-h // 2), -(-h // 4), -(-h // 8)]  # ceil(s / 2) per layer
    dense = params["params"]["decoder"]["Dense_1"]["kernel"]
    assert dense.shape == (16, hs[-1] * ws[-1] * 8)  # 28: 4 x 4 cells of 8 channels (28 -> 14 -> 7 -> 4)
    hiddens = module.apply(params, x, c, method=networks.VAE.encode_hidden)
    assert [a.shape[1] for a in hiddens[:3]] == [hs[k] * ws[k] * 8 for k in (1, 2, 3)]


MODEL_NAMES = sorted(models.MODELS)


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
  """8 colour 11 x 19 training images in two class folders (odd sides: the conv decoder crops)."""
  root = tmp_path_factory.mktemp("colour")
  _make(root, train={"a": [0] * 4, "b": [0] * 4}, shape=(11, 19, 3))
  return load_dataset("folder", str(root))


# Every model with the conv net (whose strides and crops depend on the size); the MLP only flattens, so one
# conditional model with it (test_decoder_output_has_the_input_shape covers both nets on every shape).
@pytest.mark.parametrize("model, arch", [(m, "conv") for m in MODEL_NAMES] + [("dcvae", "mlp")])
def test_one_training_step_of_every_model_on_a_colour_folder(colour_folder, tmp_path, model, arch):
  ds = colour_folder
  config = tiny_config(model, batch_size=8, steps_per_call=1)
  config.model.arch = arch
  config.model.hidden = (8, 8, 16) if arch == "conv" else (16, 8)
  config.model.latent_dim = 3
  config.data.binarize = False
  (run,) = experiment.make_runs(config, ds)
  log = tmp_path / "metrics.jsonl"
  with open(log, "w") as f:
    state, _, steps = trainer.train_runs(
      config,
      ds.x_train,
      ds.y_train,
      [run],
      str(tmp_path / "ckpt"),
      image_shape=ds.image_shape,
      num_conditions=len(run.normal),
      log_file=f,
      log=lambda *_: None,
    )
  assert steps == 1 and int(np.asarray(state.step)[0]) == 1
  (rec,) = [json.loads(line) for line in log.read_text().splitlines()]
  assert np.isfinite(rec["loss"]) and rec["grad_norm"] > 0
  setup = train_step.make_setup(config, ds.image_shape, len(run.normal), 1)
  fresh = train_step.init_state(setup, train_step.run_key(run), ds.image_shape)
  trained = train_step.unstack(state.params, 0)
  assert jax.tree.structure(fresh.params) == jax.tree.structure(trained)
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(fresh.params), jax.tree.leaves(trained), strict=True)]
  assert any(moved)


def test_without_a_test_set_the_runs_train_and_results_say_so(tmp_path):
  root = _make(tmp_path / "data", train={"": [0] * 10}, shape=(6, 10, 3))
  config = tiny_config("vae", batch_size=8, steps_per_call=1)
  config.data.name, config.data.data_dir = "folder", root
  config.eval.iwae_samples = config.eval.iwae_chunk = 4
  workdir = str(tmp_path / "wd")
  res = experiment.train_and_evaluate(config, workdir, log=lambda *_: None)
  assert res["protocol"] == "folder" and res["auroc_mean"] is None and res["auroc_per_class"] == {}
  assert "no test images" in res["note"] and res["image_shape"] == [6, 10, 3]
  assert res["runs"][0]["num_test_normal"] == 0 and "auroc" not in res["runs"][0]
  # the decision threshold is still set on the validation image (a new image can be judged: --mode=predict)
  assert res["threshold"]["runs"]["folder_seed0"]["n_val_normal"] == 1 and res["threshold"]["test_f1_mean"] is None
  assert os.path.exists(os.path.join(workdir, "thresholds.json"))
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["note"] == res["note"]
  assert "no test images" in metrics.format_table(res)
  from dcvae_jax.report import html as report

  with pytest.raises(WorkdirError, match="rescore"):
    report.make_report(workdir)
  # A test set added later: the next run evaluates the finished runs (no retraining).
  _make(tmp_path / "data", train={}, normal={"": [0] * 4}, anomalous=[255] * 4, shape=(6, 10, 3))
  res = experiment.train_and_evaluate(config, workdir, log=lambda *_: None)
  assert 0.0 <= res["auroc_mean"] <= 1.0 and "note" not in res
  assert res["runs"][0]["num_test_normal"] == 4 and res["runs"][0]["num_test_anomalous"] == 4


def test_cli_end_to_end_on_a_colour_folder_then_report(tmp_path):
  """The default config's smoke run with data.name=folder: results.json, then the figures of colour images.
  complexity's L(x) is the lossless JPEG 2000 length of the colour images as the model sees them (`:best`'s and the
  Detector's compressor, here on an odd 12 x 20 RGB shape)."""
  root = tmp_path / "data"
  rng = np.random.default_rng(0)
  test_images = []
  for split, n in (("train", 16), ("test/normal", 8), ("test/anomalous", 8)):
    os.makedirs(root / split)
    for i in range(n):
      a = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)  # binarised: eight saturated colours
      if split == "test/anomalous":
        a[:, :10] = 255  # half the image white
      Image.fromarray(a).save(root / split / f"{i}.png")
      if split != "train":
        test_images.append(a)
  workdir = tmp_path / "wd"
  proc = run_cli(
    "--config=configs/default.py:smoke",
    "--config.data.name=folder",
    f"--config.data.data_dir={root}",
    f"--workdir={workdir}",
    "--config.model.hidden=(16,8)",
    "--config.train.batch_size=8",
    "--config.eval.iwae_samples=8",
    "--config.eval.iwae_chunk=8",
    "--config.eval.complexity_compressor=jpeg2000",
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"results: {workdir}/results.json" in proc.stdout
  saved = np.load(workdir / "scores" / "folder_seed0.npz")["length_bits"]
  seen = anomaly_scores.model_view_images(np.stack(test_images), True)  # the smoke config binarises
  want = anomaly_scores.length_bits(seen, "jpeg2000")
  np.testing.assert_array_equal(np.sort(saved), np.sort(want))
  assert not np.array_equal(np.sort(saved), np.sort(anomaly_scores.png_bits(seen)))
  with open(workdir / "results.json") as f:
    res = json.load(f)
  assert res["dataset"] == "folder" and res["protocol"] == "folder" and res["image_shape"] == [12, 20, 3]
  assert res["num_runs"] == 1 and res["runs"][0]["num_test_normal"] == 8 and res["runs"][0]["num_test_anomalous"] == 8
  assert set(res["auroc_by_score"]) >= {"recon", "complexity", "sap_complexity"}
  assert all(0.0 <= v <= 1.0 for v in res["auroc_by_score"].values())
  from dcvae_jax.report import html as report

  report.make_report(str(workdir), log=lambda *_: None)
  figs = workdir / "figures" / "folder_seed0"
  for name in ("reconstructions", "latent", "manifold", "traversals", "histograms"):
    assert (figs / f"{name}.png").stat().st_size > 0
  drawn = np.asarray(Image.open(figs / "reconstructions.png").convert("RGB")).astype(int)
  assert (np.abs(drawn[..., 0] - drawn[..., 1]) > 200).any()  # the inputs are drawn in colour, not grey
