"""MNIST-family datasets (and procedural shapes) as numpy arrays: one loader, four sources.

``load_dataset(name, data_dir, ...)`` returns a :class:`Dataset` of uint8 images
(N, 28, 28) in upright orientation and int32 labels 0..num_classes-1.  The source is
chosen in this order:

0. ``name == "shapes"`` (or ``"shapes64"``): the procedural dSprites-like scenes of
   :mod:`dcvae_jax.data.shapes` (``source="procedural"``), rendered from a fixed seed in about a
   second, no files and no network (``data_dir`` is ignored: there is nothing to read).
   12,000 train / 3,000 test images, 28x28 (``shapes64``: 64x64); label = the shape factor
   (0 square, 1 ellipse, 2 heart).  These are the only datasets whose ground-truth
   generative factors are known: ``factors_train`` / ``factors_test`` (int32 (N, 5)) and
   ``factor_names`` (shape, scale, rotation, x, y) are set; every other source leaves them
   ``None``.

1. ``data_dir`` non-empty: a local directory (``source="dir:<abs path>"``) holding either
   * ``<stem>_train.npz`` and ``<stem>_test.npz`` (``stem`` is the name with "/" replaced
     by "_", e.g. ``emnist_letters_train.npz``), arrays ``x`` (N x 28 x 28, upright) and
     ``y`` (labels **already 0-based**, exactly what this module returns, so
     ``np.savez(path, x=ds.x_train, y=ds.y_train)`` round-trips); or
   * the dataset's IDX files as its authors distribute them, gzipped or not
     (``train-images-idx3-ubyte[.gz]`` ... for MNIST / Fashion-MNIST / KMNIST,
     ``emnist-<split>-train-images-idx3-ubyte[.gz]`` ... for EMNIST).  Raw conventions
     are undone here: EMNIST images are stored transposed (the character is mirrored and
     rotated 90 degrees) and are transposed back to upright; EMNIST letters labels 1..26
     are shifted to 0..25.
   The files are looked for in ``data_dir`` and then in ``data_dir/<stem>/``, so one
   folder can hold several datasets' IDX files in sub-folders.
2. ``name == "mnist5k"``: 5,000 real MNIST digits (500 per class) that ship inside this
   package (``dcvae_jax/data_files/mnist5k.npz``, no network), split 400 train / 100 test
   per class with a fixed seed (``source="embedded"``).
3. ``name == "folder"`` (checked right after the shapes; it always reads ``data_dir``): your own images
   (``source="folder:<abs path>"``; layout, classes and protocol in :mod:`dcvae_jax.data.folder_source`,
   pixels through :mod:`dcvae_jax.data.images`): PNG / JPEG / BMP files or npz arrays of any size, grey or
   colour, converted to ``image_size`` / ``channels`` (auto: the files' own, when they all agree). Its images
   are (N, H, W) when grey and (N, H, W, 3) when colour; its ``protocol_classes`` fix the protocol (normal =
   the train classes, anomalous = test/anomalous/); without a test set ``x_test`` is empty.
   ``normal_images_dataset`` builds the same dataset from normal images alone (an array, read as a folder's
   train.npz, or a folder laid out as train/), for ``dcvae_jax.Detector``.
4. TFDS (``source="tfds"``), imported lazily; it needs the ``tfds`` extra
   (``pip install -e ".[tfds]"``), and without it asking for a TFDS dataset is one
   :class:`DataError` line naming that extra.  A dataset that is not prepared is only
   downloaded when ``download=True`` and a socket probe (3 s) reaches the download host;
   otherwise a :class:`DataError` is raised at once, naming ``config.data.data_dir`` as
   the offline alternative.  TFDS stores EMNIST in the raw (transposed, 1-based letters)
   form too; the same conversion is applied.

Dtype policy (every source): images must be an integer array with values in 0..255; any
integer dtype is accepted and cast to uint8 (a lossless cast, checked).  Float, bool and
object arrays are rejected -- a float array is ambiguous ([0, 1] or [0, 255]) and
silently rescaling it hides mistakes.  Labels must be integers in range and become int32.
Shapes are strict: images (N, 28, 28) (shapes64: (N, 64, 64); folder: any (N, H, W[, 3])) with N >= 1, labels (N,).

Every failure is a :class:`DataError` (a ``ValueError``) with a one-line message that
names the file and what is wrong.

The readers of each source live in :mod:`dcvae_jax.data.sources`; this module checks what they
return and builds the :class:`Dataset`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from dcvae_jax.data import sources as data_sources
from dcvae_jax.data import tfds_source as data_tfds
from dcvae_jax.data.sources import (  # noqa: F401 - re-exported
  MNIST5K_FILE,
  DataError,
  DatasetSpec,
  read_idx,
)

__all__ = [
  "DATASETS",
  "DataError",
  "Dataset",
  "DatasetSpec",
  "load_dataset",
  "read_idx",
]


def _mnist_idx_names() -> dict:
  return {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
  }


def _emnist_idx_names(split: str) -> dict:
  return {
    "train_images": f"emnist-{split}-train-images-idx3-ubyte",
    "train_labels": f"emnist-{split}-train-labels-idx1-ubyte",
    "test_images": f"emnist-{split}-test-images-idx3-ubyte",
    "test_labels": f"emnist-{split}-test-labels-idx1-ubyte",
  }


_EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"

DATASETS: dict = {
  "mnist": DatasetSpec(
    "mnist",
    10,
    tfds_name="mnist",
    idx_files=_mnist_idx_names(),
    download_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
  ),
  "fashion_mnist": DatasetSpec(
    "fashion_mnist",
    10,
    tfds_name="fashion_mnist",
    idx_files=_mnist_idx_names(),
    download_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
  ),
  "kmnist": DatasetSpec(
    "kmnist",
    10,
    tfds_name="kmnist",
    idx_files=_mnist_idx_names(),
    download_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
  ),
  "emnist/byclass": DatasetSpec(
    "emnist/byclass",
    62,
    tfds_name="emnist/byclass",
    idx_files=_emnist_idx_names("byclass"),
    transpose=True,
    download_url=_EMNIST_URL,
  ),
  "emnist/digits": DatasetSpec(
    "emnist/digits",
    10,
    tfds_name="emnist/digits",
    idx_files=_emnist_idx_names("digits"),
    transpose=True,
    download_url=_EMNIST_URL,
  ),
  "emnist/letters": DatasetSpec(
    "emnist/letters",
    26,
    tfds_name="emnist/letters",
    idx_files=_emnist_idx_names("letters"),
    label_offset=1,
    transpose=True,
    download_url=_EMNIST_URL,
  ),
  "mnist5k": DatasetSpec("mnist5k", 10, embedded=True),
  "shapes": DatasetSpec("shapes", 3, procedural=True),
  "shapes64": DatasetSpec("shapes64", 3, image_shape=(64, 64), procedural=True),
  "folder": DatasetSpec("folder", 0, image_shape=(), folder=True),  # classes and image shape come from the files
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train/test pair of uint8 image arrays and int32 labels (and, once ``splits.split_validation`` has carved
  it out of the training split, a validation set).

  ``factors_train`` / ``factors_test``: the ground-truth generative factors of each image
  (int32 (N, K), columns named by ``factor_names``) where the source knows them (only
  the procedural shapes); ``None`` otherwise.

  ``eq=False``: equality is identity (element-wise array comparison has no single truth
  value).
  """

  name: str
  x_train: np.ndarray  # uint8 (N, H, W) (grey) or (N, H, W, C) (colour), upright ("original") orientation
  y_train: np.ndarray  # int32 (N,), labels 0..num_classes-1
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  source: str  # "embedded", "procedural", "dir:<path>", or "tfds"
  factors_train: np.ndarray | None = None  # int32 (N_train, K) or None
  factors_test: np.ndarray | None = None  # int32 (N_test, K) or None
  factor_names: tuple | None = None  # K names, or None
  class_names: tuple | None = None  # num_classes names where the source has them (folder), else None
  protocol_classes: tuple | None = None  # (normal, anomalous) classes when the data fixes the protocol (folder)

  # The validation split (splits.split_validation): images carved out of the training split; None without one.
  x_val: np.ndarray | None = None  # uint8 (N_val, H, W)
  y_val: np.ndarray | None = None  # int32 (N_val,)
  factors_val: np.ndarray | None = None
  train_indices: np.ndarray | None = None  # x_train = original x_train[train_indices]
  val_indices: np.ndarray | None = None  # x_val = original x_train[val_indices] (before add_ood)

  @property
  def image_shape(self) -> tuple:
    """(H, W, C) of one image as the model sees it (C = 1 for the (N, H, W) grey arrays)."""
    return image_shape(self.x_train)

  def __repr__(self) -> str:
    extra = f", factors={self.factor_names}" if self.factor_names else ""
    extra += f", x_val={self.x_val.shape}" if self.x_val is not None else ""
    return (
      f"Dataset(name={self.name!r}, x_train={self.x_train.shape}, "
      f"x_test={self.x_test.shape}, num_classes={self.num_classes}, "
      f"source={self.source!r}{extra})"
    )


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def image_shape(x) -> tuple:
  """(H, W, C) of a uint8 image array (N, H, W) (grey: C = 1) or (N, H, W, C)."""
  shape = tuple(int(s) for s in np.shape(x)[1:])
  return (*shape, 1) if len(shape) == 2 else shape


def load_dataset(
  name: str,
  data_dir: str = "",
  *,
  tfds_data_dir: str | None = None,
  download: bool = True,
  image_size=(),
  channels: int = 0,
) -> Dataset:
  """Loads ``name``: procedural shapes are rendered; your own images (``folder``) are read from ``data_dir`` at
  ``image_size`` / ``channels`` (auto: ``()`` / 0); otherwise from ``data_dir`` if given, else the embedded
  data, else TFDS.

  Raises:
    DataError: unknown name, missing/bad files, or a TFDS dataset that is not prepared
      and cannot be downloaded.
  """
  spec = _spec(name)
  if spec.procedural:
    return _load_shapes(spec)
  if spec.folder:
    return _load_folder(spec, data_dir, image_size, channels)
  if data_dir:
    source, parts, raw = data_sources.read_dir(spec, str(data_dir))
    return _finish(spec, source, parts, raw=raw)
  if spec.embedded:
    return _load_embedded(spec)
  return _finish(spec, "tfds", data_tfds.read_tfds(spec, tfds_data_dir, download), raw=True)


def needs_tfds(name: str, data_dir: str = "") -> bool:
  """Whether :func:`load_dataset` would read ``name`` from TFDS (checked before anything is loaded)."""
  spec = _spec(name)
  return not (spec.procedural or data_dir or spec.embedded)


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------


def _spec(name: str) -> DatasetSpec:
  key = str(name).strip().lower()
  if key in DATASETS:
    return DATASETS[key]
  for spec in DATASETS.values():  # also accept the file stem, e.g. "emnist_letters"
    if spec.stem == key:
      return spec
  raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


# --------------------------------------------------------------------------------------
# Validation shared by every source
# --------------------------------------------------------------------------------------


def _check_images(x, where: str, spec: DatasetSpec) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype == np.uint8:
    pass
  elif x.dtype.kind in "iu":
    if x.size:
      lo, hi = int(x.min()), int(x.max())
      if lo < 0 or hi > 255:
        raise DataError(f"{where}: images have values {lo}..{hi}, expected uint8 pixels 0..255")
    x = x.astype(np.uint8)
  elif x.dtype.kind == "f":
    flo, fhi = (float(np.nanmin(x)), float(np.nanmax(x))) if x.size else (0.0, 0.0)
    raise DataError(
      f"{where}: images have float dtype {x.dtype} (values {flo:g}..{fhi:g}); "
      "expected uint8 pixels 0..255 (convert with "
      "np.round(x * 255).astype(np.uint8) if they are in [0, 1])"
    )
  else:
    raise DataError(f"{where}: images have dtype {x.dtype}, expected uint8 pixels 0..255")
  if x.ndim != 3 or tuple(x.shape[1:]) != tuple(spec.image_shape):
    h, w = spec.image_shape
    raise DataError(f"{where}: images have shape {x.shape}, expected (N, {h}, {w})")
  if x.shape[0] == 0:
    raise DataError(f"{where}: holds no images (N = 0)")
  return x


def _check_labels(y, n: int, where: str, spec: DatasetSpec, offset: int) -> np.ndarray:
  """Validates raw labels (``label + offset``) and returns 0-based int32 labels."""
  y = np.asarray(y)
  if y.dtype.kind not in "iu":
    raise DataError(f"{where}: labels have dtype {y.dtype}, expected integers")
  if y.ndim != 1:
    raise DataError(f"{where}: labels have shape {y.shape}, expected ({n},)")
  if y.shape[0] != n:
    raise DataError(f"{where}: {y.shape[0]} labels for {n} images (x/y length mismatch)")
  lo_ok, hi_ok = offset, spec.num_classes - 1 + offset
  lo, hi = int(y.min()), int(y.max())
  if lo < lo_ok or hi > hi_ok:
    hint = ""
    if offset == 0 and spec.label_offset and lo >= 1 and hi == hi_ok + spec.label_offset:
      hint = (
        f" (npz labels are 0-based: subtract {spec.label_offset} from the raw "
        f"{lo_ok + spec.label_offset}..{hi_ok + spec.label_offset} labels)"
      )
    raise DataError(
      f"{where}: labels span {lo}..{hi}, expected {lo_ok}..{hi_ok} for {spec.name} ({spec.num_classes} classes){hint}"
    )
  if offset:
    return (y - offset).astype(np.int32)
  return y.astype(np.int32, copy=False)


def _finish(spec: DatasetSpec, source: str, parts: dict, *, raw: bool) -> Dataset:
  """parts: split -> (x, y, where).  raw: undo the raw EMNIST conventions."""
  out = {}
  for split in ("train", "test"):
    x, y, where = parts[split]
    x = _check_images(x, where, spec)
    y = _check_labels(y, x.shape[0], where, spec, spec.label_offset if raw else 0)
    if raw and spec.transpose:
      x = np.ascontiguousarray(x.transpose(0, 2, 1))
    out[split] = (x, y)
  return Dataset(
    name=spec.name,
    x_train=out["train"][0],
    y_train=out["train"][1],
    x_test=out["test"][0],
    y_test=out["test"][1],
    num_classes=spec.num_classes,
    source=source,
  )


# --------------------------------------------------------------------------------------
# Sources 0 and 2: checked here, then split (mnist5k) or given their factors (shapes)
# --------------------------------------------------------------------------------------


def _load_embedded(spec: DatasetSpec) -> Dataset:
  x, y, where = data_sources.read_mnist5k()
  x = _check_images(x, where, spec)
  y = _check_labels(y, x.shape[0], where, spec, 0)
  tr, te = data_sources.mnist5k_split(y, spec.num_classes)
  return Dataset(
    name=spec.name,
    x_train=x[tr],
    y_train=y[tr],
    x_test=x[te],
    y_test=y[te],
    num_classes=spec.num_classes,
    source="embedded",
  )


def _load_shapes(spec: DatasetSpec) -> Dataset:
  """12,000 / 3,000 scenes from a fixed seed; labels = the shape factor (column 0)."""
  train, test, factor_names = data_sources.render_shapes(spec)
  where = f"procedural {spec.name}"
  x_tr = _check_images(train.images, where, spec)
  x_te = _check_images(test.images, where, spec)
  y_tr = _check_labels(train.labels, x_tr.shape[0], where, spec, 0)
  y_te = _check_labels(test.labels, x_te.shape[0], where, spec, 0)
  return Dataset(
    name=spec.name,
    x_train=x_tr,
    y_train=y_tr,
    x_test=x_te,
    y_test=y_te,
    num_classes=spec.num_classes,
    source="procedural",
    factors_train=train.factors,
    factors_test=test.factors,
    factor_names=factor_names,
  )


# --------------------------------------------------------------------------------------
# Source 3: your own images (folder)
# --------------------------------------------------------------------------------------


def _load_folder(spec: DatasetSpec, data_dir: str, image_size, channels: int) -> Dataset:
  from dcvae_jax.data import folder_source  # Pillow, imported only for this source

  return folder_dataset(folder_source.read_folder(data_dir, image_size, channels))


def normal_images_dataset(source, classes=None, image_size=(), channels: int = 0) -> Dataset:
  """The ``folder`` dataset of normal images only (no test set): ``source`` a uint8 array (N, H, W) or
  (N, H, W, C) with optional ``classes`` 0..K-1 (read as a folder's train.npz), or the path of a folder laid out
  as a folder's train/ (``classes`` must then be None: its class subfolders give them)."""
  from dcvae_jax.data import folder_source

  if isinstance(source, (str, os.PathLike)):
    if classes is not None:
      raise DataError("classes of a folder's images come from its class subfolders, not from classes=")
    return folder_dataset(folder_source.read_train_folder(os.fspath(source), image_size, channels))
  return folder_dataset(folder_source.from_arrays(source, classes, image_size, channels))


def folder_dataset(f) -> Dataset:
  """The Dataset of a ``folder_source.FolderData``. Grey images are kept as (N, H, W), as every other source's;
  colour ones as (N, H, W, 3)."""
  x_train, x_test = f.x_train, f.x_test
  if x_train.shape[-1] == 1:
    x_train, x_test = x_train[..., 0], x_test[..., 0]
  k = f.num_train_classes
  anomalous = (k,) if f.y_test.size else ()
  return Dataset(
    name=DATASETS["folder"].name,
    x_train=x_train,
    y_train=f.y_train,
    x_test=x_test,
    y_test=f.y_test,
    num_classes=len(f.class_names),
    source=f"folder:{f.where}",
    class_names=f.class_names,
    protocol_classes=(tuple(range(k)), anomalous),
  )
