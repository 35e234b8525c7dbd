"""Helpers of the data tests (test_data.py, test_data_sources.py, ...): synthetic images and labels, IDX and npz
writers, a fake TFDS builder, dataset checks. Their fixtures are in conftest.py."""

import gzip
import hashlib
import os
import struct

import numpy as np
import pytest

from dcvae_jax.data.datasets import DataError, Dataset
from tests.cli import REPO

SHARED = os.path.join(REPO, "..", "shared", "data")


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
  for name, arr in zip(names, (xtr, ytr, xte, yte), strict=True):
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


def _npz_case(tmp_path, x, y, xt=None, yt=None, name="mnist"):
  stem = name.replace("/", "_")
  np.savez(tmp_path / f"{stem}_train.npz", x=x, y=y)
  np.savez(
    tmp_path / f"{stem}_test.npz", x=images(4, 9) if xt is None else xt, y=labels(4, 10, 9) if yt is None else yt
  )
  return str(tmp_path)


def _idx_dir(tmp_path, gz=False):
  write_idx_set(tmp_path, MNIST_IDX, images(6, 0), labels(6, 10, 0), images(3, 1), labels(3, 10, 1), gz)
  return str(tmp_path)


def _sha256(a) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


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
