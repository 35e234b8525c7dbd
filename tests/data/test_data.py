"""Tests for dcvae_jax.data.datasets and its readers (dcvae_jax.data.sources): npz / IDX directories,
embedded mnist5k, procedural shapes, TFDS (mocked), errors.

Offline and fast: every file is generated in tmp_path; TFDS runs under its mock or on a
tiny builder prepared locally; the network probe is stubbed or aimed at localhost.
"""

import gzip
import struct

import numpy as np
import pytest

from dcvae_jax.data import datasets as data
from dcvae_jax.data import sources as data_sources
from dcvae_jax.data.datasets import DataError, load_dataset
from tests.data.helpers import (
  MNIST_IDX,
  _idx_dir,
  _npz_case,
  check_dataset,
  emnist_idx,
  idx_bytes,
  images,
  labels,
  raises,
  write_idx,
  write_idx_set,
  write_npz,
)


@pytest.mark.parametrize(
  "name,k,ydtype",
  [
    ("mnist", 10, np.int64),
    ("fashion_mnist", 10, np.uint8),
    ("kmnist", 10, np.int32),
    ("emnist/byclass", 62, np.int64),
    ("emnist/letters", 26, np.int16),
  ],
)
def test_npz_dir_loads(tmp_path, name, k, ydtype):
  stem = name.replace("/", "_")
  xtr, xte = images(70, 0), images(30, 1)
  ytr, yte = labels(70, k, 2).astype(ydtype), labels(30, k, 3).astype(ydtype)
  write_npz(tmp_path, stem, xtr, ytr, xte, yte)
  ds = load_dataset(name, str(tmp_path))
  check_dataset(ds, name, 70, 30, k)
  assert ds.source == f"dir:{tmp_path}"
  # npz is the canonical form: no transposition, no label shift, even for EMNIST.
  np.testing.assert_array_equal(ds.x_train, xtr)
  np.testing.assert_array_equal(ds.x_test, xte)
  np.testing.assert_array_equal(ds.y_train, ytr)
  np.testing.assert_array_equal(ds.y_test, yte)


def test_npz_round_trip_and_stem_alias(tmp_path):
  xtr, xte = images(20, 0), images(10, 1)
  ytr, yte = labels(20, 26, 0), labels(10, 26, 1)
  write_npz(tmp_path, "emnist_letters", xtr, ytr, xte, yte)
  ds = load_dataset("emnist_letters", str(tmp_path))  # file stem accepted as a name
  assert ds.name == "emnist/letters"
  out = tmp_path / "copy"
  write_npz(out, "emnist_letters", ds.x_train, ds.y_train, ds.x_test, ds.y_test)
  ds2 = load_dataset("emnist/letters", str(out))
  np.testing.assert_array_equal(ds2.y_train, ds.y_train)
  np.testing.assert_array_equal(ds2.x_test, ds.x_test)


def test_integer_images_are_cast(tmp_path):
  xtr = images(10, 0).astype(np.int64)
  write_npz(tmp_path, "mnist", xtr, labels(10, 10, 0), images(5, 1).astype(np.uint16), labels(5, 10, 1))
  ds = load_dataset("mnist", str(tmp_path))
  assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
  np.testing.assert_array_equal(ds.x_train, xtr)


def test_npz_in_subfolder(tmp_path):
  write_npz(tmp_path / "kmnist", "kmnist", images(8, 0), labels(8, 10, 0), images(4, 1), labels(4, 10, 1))
  check_dataset(load_dataset("kmnist", str(tmp_path)), "kmnist", 8, 4, 10)


def test_idx_gz_and_raw_load_identically(tmp_path):
  xtr, xte = images(50, 0), images(20, 1)
  ytr, yte = labels(50, 10, 2), labels(20, 10, 3)
  write_idx_set(tmp_path / "gz", MNIST_IDX, xtr, ytr, xte, yte, gz=True)
  write_idx_set(tmp_path / "raw", MNIST_IDX, xtr, ytr, xte, yte, gz=False)
  write_npz(tmp_path / "npz", "mnist", xtr, ytr, xte, yte)
  a = load_dataset("mnist", str(tmp_path / "gz"))
  b = load_dataset("mnist", str(tmp_path / "raw"))
  c = load_dataset("mnist", str(tmp_path / "npz"))
  for ds in (a, b, c):
    check_dataset(ds, "mnist", 50, 20, 10)
    np.testing.assert_array_equal(ds.x_train, xtr)
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.x_test, xte)
    np.testing.assert_array_equal(ds.y_test, yte)
  assert a.x_train.flags.writeable and a.x_train.flags.c_contiguous


def test_idx_mixed_gz_and_raw(tmp_path):
  xtr, xte = images(6, 0), images(4, 1)
  ytr, yte = labels(6, 10, 2), labels(4, 10, 3)
  for i, (name, arr) in enumerate(zip(MNIST_IDX, (xtr, ytr, xte, yte), strict=True)):
    write_idx(tmp_path / name, arr, gz=bool(i % 2))
  ds = load_dataset("fashion_mnist", str(tmp_path))
  np.testing.assert_array_equal(ds.x_test, xte)
  np.testing.assert_array_equal(ds.y_train, ytr)


def test_read_idx_other_dtypes(tmp_path):
  for arr in (
    np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
    np.arange(5, dtype=np.int32) * 100_000,
    np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 2, 2),
  ):
    p = write_idx(tmp_path / f"a{arr.dtype}", arr, gz=False)
    out = data.read_idx(p)
    assert out.dtype == arr.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("gz", [True, False])
def test_emnist_idx_transposed_and_letters_shifted(tmp_path, gz):
  # Upright images with a bar along the top row; EMNIST stores them transposed, i.e.
  # with the bar in the left column.
  upright = np.zeros((26, 28, 28), np.uint8)
  upright[:, 0, :] = 255
  upright[:, 5, 3] = np.arange(26)  # something asymmetric and per-image
  raw = np.ascontiguousarray(upright.transpose(0, 2, 1))
  assert raw[0, :, 0].min() == 255 and raw[0, 0, 1:].max() == 0
  raw_labels = (np.arange(26) + 1).astype(np.uint8)  # EMNIST letters: 1..26
  write_idx_set(tmp_path, emnist_idx("letters"), raw, raw_labels, raw[:5], raw_labels[:5], gz)
  ds = load_dataset("emnist/letters", str(tmp_path))
  check_dataset(ds, "emnist/letters", 26, 5, 26)
  np.testing.assert_array_equal(ds.x_train, upright)
  np.testing.assert_array_equal(ds.y_train, np.arange(26))
  assert ds.x_train.flags.c_contiguous


@pytest.mark.parametrize("name,k", [("emnist/byclass", 62), ("emnist/digits", 10)])
def test_emnist_idx_unshifted_labels(tmp_path, name, k):
  split = name.split("/")[1]
  xtr, ytr = images(k * 2, 0), labels(k * 2, k, 0)
  write_idx_set(tmp_path, emnist_idx(split), xtr, ytr, xtr[:3], ytr[:3], gz=True)
  ds = load_dataset(name, str(tmp_path))
  check_dataset(ds, name, 2 * k, 3, k)
  np.testing.assert_array_equal(ds.y_train, ytr)
  np.testing.assert_array_equal(ds.x_train, xtr.transpose(0, 2, 1))


def test_data_reexports_the_readers_names():
  """dcvae_jax.data.datasets is the public surface; the definitions live in data_sources (one-way)."""
  assert data.DataError is data_sources.DataError and issubclass(DataError, ValueError)
  assert data.DatasetSpec is data_sources.DatasetSpec
  assert data.read_idx is data_sources.read_idx
  assert data.MNIST5K_FILE == data_sources.MNIST5K_FILE
  assert not hasattr(data_sources, "data") and not hasattr(data_sources, "Dataset")


def test_unknown_name():
  msg = raises("unknown dataset", load_dataset, "cifar10")
  for known in data.DATASETS:
    assert known in msg


def test_missing_and_empty_data_dir(tmp_path):
  raises(
    ["does not exist", "mnist_train.npz", "train-images-idx3-ubyte"], load_dataset, "mnist", str(tmp_path / "nope")
  )
  raises(
    ["looked for", "emnist_digits_train.npz", "emnist-digits-train-images-idx3-ubyte"],
    load_dataset,
    "emnist/digits",
    str(tmp_path),
  )
  raises(["mnist5k_train.npz"], load_dataset, "mnist5k", str(tmp_path))


def test_incomplete_data_dir_names_what_was_found(tmp_path):
  np.savez(tmp_path / "mnist_train.npz", x=images(3, 0), y=labels(3, 10, 0))
  write_idx(tmp_path / MNIST_IDX[0], images(3, 0), gz=True)
  raises(
    ["found only", "mnist_train.npz", "train-images-idx3-ubyte.gz", "mnist_test.npz"],
    load_dataset,
    "mnist",
    str(tmp_path),
  )


@pytest.mark.parametrize(
  "x,y,match",
  [
    (images(5, 0).astype(np.float32) * 2.0, labels(5, 10, 0), ["float", "uint8"]),
    (images(5, 0) / 255.0, labels(5, 10, 0), ["float", "0..255"]),
    (np.full((5, 28, 28), 300, np.int16), labels(5, 10, 0), ["300", "0..255"]),
    (np.full((5, 28, 28), -1, np.int32), labels(5, 10, 0), ["-1", "0..255"]),
    (images(5, 0) > 100, labels(5, 10, 0), ["dtype bool"]),
    (images(5, 0)[..., None], labels(5, 10, 0), ["shape (5, 28, 28, 1)", "(N, 28, 28)"]),
    (images(5, 0).reshape(5, 784), labels(5, 10, 0), ["shape (5, 784)"]),
    (images(5, 0)[:, :27, :], labels(5, 10, 0), ["shape (5, 27, 28)"]),
    (images(0, 0), labels(0, 10, 0), ["no images"]),
    (images(5, 0), labels(4, 10, 0), ["4 labels for 5 images", "mismatch"]),
    (images(5, 0), np.array([0, 1, 2, 3, 10]), ["labels span 0..10", "0..9"]),
    (images(5, 0), np.array([-1, 1, 2, 3, 4]), ["labels span -1..4"]),
    (images(5, 0), labels(5, 10, 0).astype(np.float64), ["labels have dtype float64"]),
    (images(5, 0), labels(5, 10, 0)[:, None], ["labels have shape (5, 1)"]),
  ],
)
def test_bad_npz_contents(tmp_path, x, y, match):
  d = _npz_case(tmp_path, x, y)
  raises(["mnist_train.npz"] + match, load_dataset, "mnist", d)


def test_bad_test_split_is_named(tmp_path):
  d = _npz_case(tmp_path, images(5, 0), labels(5, 10, 0), yt=np.array([0, 1, 2, 99]))
  raises(["mnist_test.npz", "99"], load_dataset, "mnist", d)


def test_letters_npz_with_raw_labels_gets_a_hint(tmp_path):
  y = labels(26, 26, 0, offset=1)  # raw 1..26 in an npz (which must be 0-based)
  d = _npz_case(tmp_path, images(26, 0), y, yt=labels(4, 26, 1), name="emnist/letters")
  raises(["emnist_letters_train.npz", "1..26", "0..25", "0-based"], load_dataset, "emnist/letters", d)


def test_letters_idx_label_zero_is_out_of_range(tmp_path):
  y = labels(26, 26, 0)  # 0..25, but raw EMNIST letters labels are 1..26
  write_idx_set(tmp_path, emnist_idx("letters"), images(26, 0), y, images(2, 1), np.array([1, 2], np.uint8), gz=False)
  raises(
    ["emnist-letters-train-images-idx3-ubyte", "labels span 0..25", "1..26"],
    load_dataset,
    "emnist/letters",
    str(tmp_path),
  )


def test_npz_structural_errors(tmp_path):
  good = _npz_case(tmp_path, images(5, 0), labels(5, 10, 0))
  p = tmp_path / "mnist_train.npz"
  np.savez(p, x=images(5, 0), labels=labels(5, 10, 0))
  raises(["mnist_train.npz", "lacks", "y"], load_dataset, "mnist", good)
  p.write_bytes(b"this is not a zip file at all" * 10)
  raises(["mnist_train.npz", "not a valid npz"], load_dataset, "mnist", good)
  np.savez_compressed(p, x=images(500, 0), y=labels(500, 10, 0))
  blob = p.read_bytes()
  p.write_bytes(blob[: len(blob) // 2])  # truncated
  raises(["mnist_train.npz"], load_dataset, "mnist", good)
  np.savez(p, x=np.array([object(), 1], dtype=object), y=labels(2, 10, 0))
  raises(["mnist_train.npz", "not a valid npz"], load_dataset, "mnist", good)
  with open(p, "wb") as f:  # a plain .npy under an .npz name
    np.save(f, images(5, 0))
  raises(["mnist_train.npz", "not an npz archive"], load_dataset, "mnist", good)


def test_idx_corruption(tmp_path):
  d = _idx_dir(tmp_path)
  img = tmp_path / MNIST_IDX[0]
  good = img.read_bytes()

  img.write_bytes(b"\x01" + good[1:])
  raises([MNIST_IDX[0], "magic"], load_dataset, "mnist", d)
  img.write_bytes(good[:2] + b"\x07" + good[3:])
  raises([MNIST_IDX[0], "dtype code 0x07"], load_dataset, "mnist", d)
  img.write_bytes(good[:3])
  raises([MNIST_IDX[0], "truncated"], load_dataset, "mnist", d)
  img.write_bytes(good[:10])
  raises([MNIST_IDX[0], "truncated IDX header"], load_dataset, "mnist", d)
  img.write_bytes(good[:-7])
  raises([MNIST_IDX[0], "truncated"], load_dataset, "mnist", d)
  img.write_bytes(good + b"\x00\x00")
  raises([MNIST_IDX[0], "trailing data"], load_dataset, "mnist", d)
  img.write_bytes(good[:4] + struct.pack(">3I", 1 << 31, 1 << 16, 1 << 8) + good[16:])
  raises([MNIST_IDX[0], "corrupt IDX header"], load_dataset, "mnist", d)
  img.write_bytes(idx_bytes(images(6, 0).reshape(6, 784)))  # wrong rank
  raises([MNIST_IDX[0], "shape (6, 784)"], load_dataset, "mnist", d)
  img.write_bytes(idx_bytes(images(6, 0).astype(np.float32)))
  raises([MNIST_IDX[0], "float"], load_dataset, "mnist", d)
  img.write_bytes(idx_bytes(images(5, 0)))  # 5 images, 6 labels
  raises([MNIST_IDX[0], MNIST_IDX[1], "mismatch"], load_dataset, "mnist", d)


def test_idx_gz_corruption(tmp_path):
  d = _idx_dir(tmp_path, gz=True)
  lab = tmp_path / (MNIST_IDX[3] + ".gz")
  blob = lab.read_bytes()
  lab.write_bytes(blob[: len(blob) - 12])  # gzip stream cut short
  raises([MNIST_IDX[3] + ".gz", "cannot read IDX"], load_dataset, "mnist", d)
  lab.write_bytes(b"not gzip at all, just bytes")
  raises([MNIST_IDX[3] + ".gz", "cannot read IDX"], load_dataset, "mnist", d)
  with gzip.open(lab, "wb") as f:  # a complete gzip stream holding a short payload
    f.write(idx_bytes(labels(3, 10, 1))[:-1])
  raises([MNIST_IDX[3] + ".gz", "truncated"], load_dataset, "mnist", d)
  with gzip.open(lab, "wb") as f:
    f.write(idx_bytes(labels(3, 10, 1)) + b"\x01")
  raises([MNIST_IDX[3] + ".gz", "trailing data"], load_dataset, "mnist", d)
