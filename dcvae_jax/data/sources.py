"""The readers behind :func:`dcvae_jax.data.datasets.load_dataset`, one per source: a local directory
(npz or IDX), the embedded mnist5k, the procedural shapes (TFDS: :mod:`dcvae_jax.data.tfds_source`).

Each returns raw arrays and where they came from; :mod:`dcvae_jax.data.datasets` checks them and builds
the Dataset.  Nothing here imports :mod:`dcvae_jax.data.datasets`, which re-exports DataError and
DatasetSpec from here.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import zipfile
import zlib

import numpy as np

from dcvae_jax.errors import DataError

__all__ = [
  "MNIST5K_FILE",
  "DataError",
  "DatasetSpec",
  "mnist5k_split",
  "read_dir",
  "read_idx",
  "read_mnist5k",
  "render_shapes",
]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Static metadata of one dataset."""

  name: str
  num_classes: int
  image_shape: tuple = (28, 28)
  tfds_name: str | None = None  # None: not available from TFDS
  idx_files: dict | None = None  # role -> file name without ".gz"; None: no IDX
  label_offset: int = 0  # raw IDX/TFDS label = our label + label_offset
  transpose: bool = False  # raw IDX/TFDS images are stored transposed
  download_url: str | None = None  # host probed before a TFDS download
  embedded: bool = False
  procedural: bool = False  # rendered by dcvae_jax.data.shapes (known factors)
  folder: bool = False  # your own images in data_dir (dcvae_jax.data.folder_source): classes and sizes from the files

  @property
  def stem(self) -> str:
    """File-name stem: the name with "/" replaced by "_"."""
    return self.name.replace("/", "_")

  @property
  def npz_files(self) -> tuple:
    return (f"{self.stem}_train.npz", f"{self.stem}_test.npz")

  # Mapping-style access, e.g. DATASETS["mnist"]["num_classes"].
  def __getitem__(self, key):
    try:
      return getattr(self, key)
    except AttributeError:
      raise KeyError(key) from None


_ROLES = ("train_images", "train_labels", "test_images", "test_labels")


def _short(e: BaseException, limit: int = 200) -> str:
  """``Type: first line of the message``, cut to ``limit`` characters."""
  text = str(e).strip().splitlines()
  msg = f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
  return msg if len(msg) <= limit else msg[: limit - 3] + "..."


# --------------------------------------------------------------------------------------
# Source 1: a local directory (npz or IDX)
# --------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_MAX_BYTES = 1 << 34  # 16 GiB: a header claiming more is corrupt, not a dataset
_CHUNK = 1 << 24


def _readinto_exact(f, buf: memoryview) -> int:
  n = 0
  while n < len(buf):
    k = f.readinto(buf[n : n + _CHUNK])
    if not k:
      break
    n += k
  return n


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (gzipped if the name ends in ".gz") into a native-endian array.

  IDX: two zero bytes, a dtype code (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32,
  0x0D float32, 0x0E float64), the number of dims, then each dim as a big-endian uint32,
  then the data, big-endian, C order.  The header and the exact data size are checked.
  """
  path = str(path)
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      head = f.read(4)
      if len(head) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(head)}-byte header, need at least 4)")
      if head[0] or head[1]:
        raise DataError(f"{path}: not an IDX file (magic number 0x{head.hex()} does not start with two zero bytes)")
      code, ndim = head[2], head[3]
      if code not in _IDX_DTYPES:
        raise DataError(f"{path}: corrupt IDX header (unknown dtype code 0x{code:02x})")
      if ndim == 0:
        raise DataError(f"{path}: corrupt IDX header (0 dimensions)")
      dims_b = f.read(4 * ndim)
      if len(dims_b) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({ndim} dims need {4 * ndim} bytes, found {len(dims_b)})")
      dims = struct.unpack(f">{ndim}I", dims_b)
      dtype = np.dtype(_IDX_DTYPES[code])
      nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
      header = 4 + 4 * ndim
      if nbytes > _IDX_MAX_BYTES:
        raise DataError(f"{path}: corrupt IDX header (dims {dims} imply {nbytes} bytes)")
      if opener is open:
        size = os.fstat(f.fileno()).st_size
        if size != header + nbytes:
          raise DataError(
            f"{path}: IDX file is {size} bytes, header says {dims} "
            f"{dtype.name} = {header + nbytes} bytes "
            f"({'truncated' if size < header + nbytes else 'trailing data'})"
          )
      buf = np.empty(nbytes, np.uint8)
      got = _readinto_exact(f, buf.data)
      if got < nbytes:
        raise DataError(
          f"{path}: truncated IDX file (header says {dims} {dtype.name} = {nbytes} data bytes, found {got})"
        )
      if f.read(1):
        raise DataError(f"{path}: IDX file has trailing data after the {dims} {dtype.name} array the header describes")
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{path}: cannot read IDX file ({_short(e)})") from e
  arr = buf.view(dtype).reshape(dims)
  if dtype.itemsize > 1:
    arr = arr.astype(dtype.newbyteorder("="))
  return arr


def _load_npz(path: str) -> tuple:
  try:
    obj = np.load(path, allow_pickle=False)
    if not isinstance(obj, np.lib.npyio.NpzFile):
      raise DataError(f"{path}: not an npz archive (holds a single array)")
    with obj as f:
      missing = [k for k in ("x", "y") if k not in f.files]
      if missing:
        raise DataError(
          f"{path}: npz lacks array(s) {', '.join(missing)} (has {', '.join(f.files) or 'none'}; expected x and y)"
        )
      return f["x"], f["y"]
  except DataError:
    raise
  except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise DataError(f"{path}: not a valid npz archive ({_short(e)})") from e


def _find(folder: str, fname: str) -> str | None:
  """The raw IDX file if present (faster), else its .gz."""
  for cand in (fname, fname + ".gz"):
    p = os.path.join(folder, cand)
    if os.path.isfile(p):
      return p
  return None


def read_dir(spec: DatasetSpec, data_dir: str) -> tuple:
  """``(source, parts, raw)`` of the first folder with complete data: parts maps split ->
  (x, y, where); raw is True for IDX files (raw conventions), False for npz."""
  root = os.path.abspath(os.path.expanduser(data_dir))
  source = f"dir:{root}"
  wanted = f"{' + '.join(spec.npz_files)}"
  if spec.idx_files:
    wanted += f" or IDX files {', '.join(spec.idx_files[r] + '[.gz]' for r in _ROLES)}"
  if not os.path.isdir(root):
    raise DataError(f"data_dir {root} does not exist or is not a directory (looked for {wanted})")
  folders = [root]
  sub = os.path.join(root, spec.stem)
  if os.path.isdir(sub):
    folders.append(sub)

  found_any = []
  for folder in folders:
    npz = [os.path.join(folder, f) for f in spec.npz_files]
    have = [p for p in npz if os.path.isfile(p)]
    if len(have) == 2:
      parts = {}
      for split, p in zip(("train", "test"), npz, strict=True):
        x, y = _load_npz(p)
        parts[split] = (x, y, p)
      return source, parts, False
    found_any += have
    if spec.idx_files:
      located = {r: _find(folder, spec.idx_files[r]) for r in _ROLES}
      paths = {r: p for r, p in located.items() if p}
      if len(paths) == len(located):
        arrays = {r: read_idx(p) for r, p in paths.items()}
        parts = {
          s: (
            arrays[f"{s}_images"],
            arrays[f"{s}_labels"],
            f"{paths[s + '_images']} + {os.path.basename(paths[s + '_labels'])}",
          )
          for s in ("train", "test")
        }
        return source, parts, True
      found_any += list(paths.values())
  where = root if len(folders) == 1 else f"{root} and {folders[1]}"
  partial = f"; found only {', '.join(os.path.relpath(p, root) for p in found_any)}" if found_any else ""
  raise DataError(f"data_dir {where} has no complete {spec.name} data: looked for {wanted}{partial}")


# --------------------------------------------------------------------------------------
# Source 2: embedded (mnist5k, package data)
# --------------------------------------------------------------------------------------

_MNIST5K_SEED = 20_240_917
_MNIST5K_TEST_FRACTION = 5  # 1 in 5 per class -> 400 train / 100 test
MNIST5K_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data_files", "mnist5k.npz")


def read_mnist5k() -> tuple:
  """(5000, 28, 28) uint8 pixels and labels of the embedded MNIST subset, sorted by class
  (the order of the 5,000-digit CSV it was made from; see data_files/README.md)."""
  if not os.path.isfile(MNIST5K_FILE):
    raise DataError(
      f"{MNIST5K_FILE} is missing: the package was installed without its "
      "data files (reinstall it, e.g. pip install -e .)"
    )
  x, y = _load_npz(MNIST5K_FILE)
  return x, y, MNIST5K_FILE


def mnist5k_split(y: np.ndarray, num_classes: int) -> tuple:
  """(train, test) indices of the embedded digits: 4 in 5 of each class train, 1 in 5 test."""
  # Deterministic stratified split with a private generator (no global RNG state).
  rng = np.random.default_rng(_MNIST5K_SEED)
  tr_parts, te_parts = [], []
  for c in range(num_classes):
    idx = rng.permutation(np.flatnonzero(y == c))
    n_test = len(idx) // _MNIST5K_TEST_FRACTION
    te_parts.append(idx[:n_test])
    tr_parts.append(idx[n_test:])
  tr = rng.permutation(np.concatenate(tr_parts))  # mix the classes (the CSV is sorted by class)
  te = rng.permutation(np.concatenate(te_parts))
  return tr, te


# --------------------------------------------------------------------------------------
# Source 0: procedural shapes (dcvae_jax.data.shapes), known generative factors
# --------------------------------------------------------------------------------------

_SHAPES_SEED = 20_250_305
_SHAPES_SIZES = (12_000, 3_000)  # train, test


def render_shapes(spec: DatasetSpec) -> tuple:
  """(train, test, factor_names): 12,000 / 3,000 scenes from a fixed seed."""
  from dcvae_jax.data import shapes  # numpy only; imported here to keep this module's imports light

  size = spec.image_shape[0]
  train, test = shapes.shapes_dataset(*_SHAPES_SIZES, seed=_SHAPES_SEED, image_size=size)
  return train, test, tuple(shapes.FACTOR_NAMES)
