"""The ``folder`` dataset: your own images, read from ``data.data_dir`` (behind
:func:`dcvae_jax.data.datasets.load_dataset`; the pixels come through :mod:`dcvae_jax.data.images`).

Layout (folders of PNG / JPEG / BMP files, or the same as npz arrays; not a mix of the two):

  DIR/train/                 normal training images: directly in train/ (one class, 0), or in one subfolder per
                             class (class k = the k-th subfolder in sorted order; images at any depth below it)
  DIR/test/normal/           optional, with test/anomalous/: normal test images (when train/ has class
                             subfolders, in subfolders named as train/'s, which give their class)
  DIR/test/anomalous/        anomalous test images (any depth below it), label K = the number of train classes

  DIR/train.npz              x uint8 (N, H, W) or (N, H, W, C); y (optional) int classes 0..K-1, each present
  DIR/test.npz               optional: x, anomalous (N,) bool or 0/1; y (optional; needed when K > 1) the class
                             of each normal image (ignored for the anomalous ones)

Without test/ (test.npz) the test set is empty: the runs train, and nothing is evaluated. The protocol is the
folder's own: normal = the K train classes, anomalous = {K} (``protocols.make_runs(..., fixed=...)``).
Sizes and channels: ``data.image_size`` / ``data.channels``, auto when () / 0 (see :mod:`dcvae_jax.data.images`);
under auto, train and test images must all agree. Every failure is one :class:`DataError` line naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib

import numpy as np

from dcvae_jax.data import images as images_lib
from dcvae_jax.errors import DataError

LAYOUT = "train/ [+ test/normal/, test/anomalous/] or train.npz [+ test.npz]"


@dataclasses.dataclass(frozen=True, eq=False)
class FolderData:
  x_train: np.ndarray  # uint8 (N, H, W, C)
  y_train: np.ndarray  # int32 (N,), classes 0..K-1
  x_test: np.ndarray  # uint8 (N_test, H, W, C); N_test = 0 without a test set
  y_test: np.ndarray  # int32: 0..K-1 normal, K anomalous
  class_names: tuple  # K train class names, then "anomalous" when there is a test set
  num_train_classes: int  # K
  where: str


def _rel(path: str, root: str) -> str:
  return os.path.relpath(path, root)


def _subdirs(folder: str) -> list:
  return sorted(d for d in os.listdir(folder) if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def _no_images(folder: str, root: str) -> DataError:
  others = images_lib.find_images(folder)[1]
  found = f" (found {len(others)} other file(s), e.g. {_rel(others[0], root)})" if others else ""
  exts = "/".join(e[1:] for e in images_lib.IMAGE_EXTENSIONS)
  return DataError(f"{folder} holds no images ({exts}){found}")


def _class_folders(folder: str, root: str, what: str) -> tuple:
  """(direct image files, {subfolder name: its image files}) of ``folder``, subfolders without images left out."""
  direct = images_lib.find_images(folder, recursive=False)[0]
  subs = {d: images_lib.find_images(os.path.join(folder, d))[0] for d in _subdirs(folder)}
  with_images = {d: f for d, f in subs.items() if f}
  if direct and with_images:
    raise DataError(
      f"{what} holds images both directly (e.g. {_rel(direct[0], root)}) and in subfolders "
      f"(e.g. {_rel(os.path.join(folder, next(iter(with_images))), root)}/): put all of them in class subfolders "
      "or all directly in it"
    )
  return direct, with_images, [d for d, f in subs.items() if not f]


def _train_files(folder: str, root: str) -> tuple:
  """(files, labels, class names) of train/."""
  direct, classes, empty = _class_folders(folder, root, folder)
  if direct:
    return direct, [0] * len(direct), ("normal",)
  if not classes:
    raise _no_images(folder, root)
  if empty:
    raise DataError(
      f"{os.path.join(folder, empty[0])} holds no images: every class subfolder of train/ needs at least one"
    )
  names = tuple(classes)
  files = [p for d in names for p in classes[d]]
  labels = [k for k, d in enumerate(names) for _ in classes[d]]
  return files, labels, names


def _test_files(test: str, root: str, class_names: tuple) -> tuple:
  """(files, labels) of test/normal/ (classes as in train/) and test/anomalous/ (label K)."""
  for part in ("normal", "anomalous"):
    if not os.path.isdir(os.path.join(test, part)):
      raise DataError(
        f"{test} lacks {part}/: a test set needs test/normal/ and test/anomalous/ (or no test/ folder at all: "
        "then the runs only train)"
      )
  normal_dir, anomalous_dir = os.path.join(test, "normal"), os.path.join(test, "anomalous")
  k = len(class_names)
  if k == 1:
    normal = images_lib.find_images(normal_dir)[0]
    labels = [0] * len(normal)
  else:
    direct, classes, _ = _class_folders(normal_dir, root, normal_dir)
    if direct:
      raise DataError(
        f"{normal_dir} holds images directly (e.g. {_rel(direct[0], root)}), but train/ has class subfolders: "
        f"put the normal test images in subfolders named as train/'s ({', '.join(class_names)})"
      )
    unknown = [d for d in classes if d not in class_names]
    if unknown:
      raise DataError(
        f"{os.path.join(normal_dir, unknown[0])}/ is not a class of train/ (its classes: {', '.join(class_names)})"
      )
    normal = [p for d in class_names for p in classes.get(d, [])]
    labels = [class_names.index(d) for d in class_names for _ in classes.get(d, [])]
  if not normal:
    raise _no_images(normal_dir, root)
  anomalous = images_lib.find_images(anomalous_dir)[0]
  if not anomalous:
    raise _no_images(anomalous_dir, root)
  return normal + anomalous, labels + [k] * len(anomalous)


def _load_all(files: list, image_size, channels) -> images_lib.Images:
  """Every one of ``files``, or a DataError naming the first unreadable one."""
  loaded = images_lib.load_images(files, image_size, channels)
  if loaded.errors:
    name, reason = loaded.errors[0]
    more = f" (and {len(loaded.errors) - 1} more unreadable file(s))" if len(loaded.errors) > 1 else ""
    raise DataError(f"{name}: {reason}{more}")
  return loaded


def _read_folders(root: str, image_size, channels) -> FolderData:
  train_files, train_labels, class_names = _train_files(os.path.join(root, "train"), root)
  test_dir = os.path.join(root, "test")
  test_files, test_labels = _test_files(test_dir, root, class_names) if os.path.isdir(test_dir) else ([], [])
  loaded = _load_all(train_files + test_files, image_size, channels)
  x = loaded.images
  n = len(train_files)
  return FolderData(
    x_train=x[:n],
    y_train=np.asarray(train_labels, np.int32),
    x_test=x[n:],
    y_test=np.asarray(test_labels, np.int32),
    class_names=class_names + (("anomalous",) if test_files else ()),
    num_train_classes=len(class_names),
    where=root,
  )


def _npz_arrays(path: str, required: tuple, optional: tuple) -> dict:
  try:
    with np.load(path, allow_pickle=False) as f:
      if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an npz archive (holds a single array)")
      missing = [k for k in required if k not in f.files]
      if missing:
        raise DataError(
          f"{path}: npz lacks array(s) {', '.join(missing)} (has {', '.join(f.files) or 'none'}; expected "
          f"{', '.join(required)}" + (f" and optionally {', '.join(optional)})" if optional else ")")
        )
      return {k: f[k] for k in required + optional if k in f.files}
  except DataError:
    raise
  except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise DataError(f"{path}: not a valid npz archive ({type(e).__name__}: {e})") from e


def _int_vector(a, n: int, path: str, what: str) -> np.ndarray:
  a = np.asarray(a)
  if a.dtype.kind not in "iub" or a.shape != (n,):
    raise DataError(f"{path}: {what} has dtype {a.dtype} and shape {a.shape}, expected integers of shape ({n},)")
  return a.astype(np.int64)


def _native(x: np.ndarray) -> tuple:
  """(h, w, channels) an npz image array has before conversion."""
  c = 1 if x.ndim == 3 or x.shape[-1] <= 2 else 3
  return (*x.shape[1:3], c)


def _train_arrays(raw, y, image_size, channels, where: str) -> tuple:
  """(x_train, y int64, K, class names) of normal images ``raw`` (N, H, W[, C]) with optional classes ``y``."""
  x_train = images_lib.convert_array(raw, image_size, channels, where=where)
  n = x_train.shape[0]
  y = _int_vector(y, n, where, "y") if y is not None else np.zeros(n, np.int64)
  if y.min() < 0:
    raise DataError(f"{where}: y has class {int(y.min())}; classes are 0..K-1")
  k = int(y.max()) + 1
  absent = np.flatnonzero(np.bincount(y, minlength=k) == 0)
  if absent.size:
    raise DataError(f"{where}: class {int(absent[0])} has no images (y must hold every class 0..{k - 1})")
  class_names = ("normal",) if k == 1 else tuple(str(c) for c in range(k))
  return x_train, y, k, class_names


def _untested(x_train, y, class_names, where: str) -> FolderData:
  """A folder without a test set: the runs only train (and set their thresholds on validation)."""
  return FolderData(
    x_train=x_train,
    y_train=np.asarray(y, np.int32),
    x_test=np.zeros((0, *x_train.shape[1:]), np.uint8),
    y_test=np.zeros((0,), np.int32),
    class_names=tuple(class_names),
    num_train_classes=len(class_names),
    where=where,
  )


def from_arrays(x, y=None, image_size=(), channels: int = 0, *, where: str = "in-memory array") -> FolderData:
  """Normal training images in memory, read as ``train.npz`` is (x uint8 (N, H, W) or (N, H, W, C); ``y``
  optional classes 0..K-1), converted to ``image_size`` / ``channels``; no test set."""
  x_train, y, _, class_names = _train_arrays(np.asarray(x), y, images_lib.image_size_arg(image_size), channels, where)
  return _untested(x_train, y, class_names, where)


def read_train_folder(folder: str, image_size=(), channels: int = 0) -> FolderData:
  """A folder laid out as ``train/`` (normal images directly in it, or one subfolder per class), read as the
  folder dataset's train/ is; no test set."""
  root = os.path.abspath(os.path.expanduser(str(folder)))
  if not os.path.isdir(root):
    raise DataError(f"{root} does not exist or is not a directory")
  files, labels, class_names = _train_files(root, root)
  loaded = _load_all(files, images_lib.image_size_arg(image_size), channels)
  return _untested(loaded.images, labels, class_names, root)


def _read_npz(root: str, image_size, channels) -> FolderData:
  train_path = os.path.join(root, "train.npz")
  a = _npz_arrays(train_path, ("x",), ("y",))
  raw = np.asarray(a["x"])
  x_train, y, k, class_names = _train_arrays(raw, a.get("y"), image_size, channels, train_path)
  test_path = os.path.join(root, "test.npz")
  x_test, y_test = np.zeros((0, *x_train.shape[1:]), np.uint8), np.zeros((0,), np.int64)
  if os.path.isfile(test_path):
    t = _npz_arrays(test_path, ("x", "anomalous"), ("y",))
    raw_t = np.asarray(t["x"])
    if raw_t.ndim in (3, 4) and raw_t.ndim == raw.ndim:
      first, other = _native(raw), _native(raw_t)
      if (not image_size and first[:2] != other[:2]) or (not channels and first[2] != other[2]):
        raise DataError(
          f"{test_path}: images are {other[0]}x{other[1]} with {other[2]} channel(s), {train_path}'s "
          f"{first[0]}x{first[1]} with {first[2]}; {images_lib.SHAPE_HINT}"
        )
    x_test = images_lib.convert_array(raw_t, x_train.shape[1:3], x_train.shape[3], where=test_path)
    m = x_test.shape[0]
    anomalous = _int_vector(t["anomalous"], m, test_path, "anomalous")
    if not np.isin(anomalous, (0, 1)).all():
      raise DataError(f"{test_path}: anomalous must be 0/1 (or bool), got values {np.unique(anomalous)[:5]}")
    anomalous = anomalous.astype(bool)
    if anomalous.all() or not anomalous.any():
      raise DataError(f"{test_path}: a test set needs both normal and anomalous images (anomalous = 0 and 1)")
    if "y" in t:
      y_t = _int_vector(t["y"], m, test_path, "y")
      bad = (~anomalous) & ((y_t < 0) | (y_t >= k))
      if bad.any():
        raise DataError(f"{test_path}: a normal image has class {int(y_t[bad][0])}, outside train.npz's 0..{k - 1}")
    elif k > 1:
      raise DataError(f"{test_path}: lacks y, the class of each normal test image ({train_path} has {k} classes)")
    else:
      y_t = np.zeros(m, np.int64)
    y_test = np.where(anomalous, k, y_t)
  return FolderData(
    x_train=x_train,
    y_train=y.astype(np.int32),
    x_test=x_test,
    y_test=y_test.astype(np.int32),
    class_names=class_names + (("anomalous",) if y_test.size else ()),
    num_train_classes=k,
    where=root,
  )


def read_folder(data_dir: str, image_size=(), channels: int = 0) -> FolderData:
  """The images of ``data_dir`` (module docstring), converted to ``image_size`` / ``channels``."""
  if not data_dir:
    raise DataError(f"data.name=folder needs data.data_dir=DIR, a folder holding {LAYOUT}")
  root = os.path.abspath(os.path.expanduser(str(data_dir)))
  if not os.path.isdir(root):
    raise DataError(f"data_dir {root} does not exist or is not a directory (data.name=folder expects {LAYOUT})")
  image_size = images_lib.image_size_arg(image_size)
  has = {p: os.path.exists(os.path.join(root, p)) for p in ("train", "train.npz", "test", "test.npz")}
  if has["train"] and has["train.npz"]:
    raise DataError(f"{root} holds both train/ and train.npz: keep one")
  if has["test"] and has["test.npz"]:
    raise DataError(f"{root} holds both test/ and test.npz: keep one")
  if not has["train"] and not has["train.npz"]:
    raise DataError(f"{root} has no train/ folder (nor train.npz): put the normal training images in {root}/train/")
  if (has["train"] and has["test.npz"]) or (has["train.npz"] and has["test"]):
    raise DataError(f"{root} mixes folders and npz (train/ with test.npz, or train.npz with test/): use one kind")
  for part in ("train", "test"):
    if has[part] and not os.path.isdir(os.path.join(root, part)):
      raise DataError(f"{os.path.join(root, part)} is not a folder")
  if has["train"]:
    return _read_folders(root, image_size, channels)
  return _read_npz(root, image_size, channels)
