"""MNIST-family datasets (and procedural shapes) as numpy arrays: one loader, four sources.

``load_dataset(name, data_dir, ...)`` returns a :class:`Dataset` of uint8 images
(N, 28, 28) in upright orientation and int32 labels 0..num_classes-1.  The source is
chosen in this order:

0. ``name == "shapes"`` (or ``"shapes64"``): the procedural dSprites-like scenes of
   :mod:`dcvae_jax.shapes` (``source="procedural"``), rendered from a fixed seed in about a
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
3. TFDS (``source="tfds"``), imported lazily; it needs the ``tfds`` extra
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
Shapes are strict: images (N, 28, 28) (shapes64: (N, 64, 64)) with N >= 1, labels (N,).

Every failure is a :class:`DataError` (a ``ValueError``) with a one-line message that
names the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import socket
import struct
import threading
import urllib.parse
import zipfile
import zlib
from typing import Optional

import numpy as np

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetSpec",
    "load_dataset",
    "read_idx",
    "to_float",
]


class DataError(ValueError):
    """Bad/missing data; message is one clear line."""

    def __init__(self, message: str):
        # One line, always: collapse whatever an underlying exception contributed.
        super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Static metadata of one dataset."""

    name: str
    num_classes: int
    image_shape: tuple = (28, 28)
    tfds_name: Optional[str] = None       # None: not available from TFDS
    idx_files: Optional[dict] = None      # role -> file name without ".gz"; None: no IDX
    label_offset: int = 0                 # raw IDX/TFDS label = our label + label_offset
    transpose: bool = False               # raw IDX/TFDS images are stored transposed
    download_url: Optional[str] = None    # host probed before a TFDS download
    embedded: bool = False
    procedural: bool = False              # rendered by dcvae_jax.shapes (known factors)

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
        "mnist", 10, tfds_name="mnist", idx_files=_mnist_idx_names(),
        download_url="https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", 10, tfds_name="fashion_mnist", idx_files=_mnist_idx_names(),
        download_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "kmnist": DatasetSpec(
        "kmnist", 10, tfds_name="kmnist", idx_files=_mnist_idx_names(),
        download_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
    "emnist/byclass": DatasetSpec(
        "emnist/byclass", 62, tfds_name="emnist/byclass",
        idx_files=_emnist_idx_names("byclass"), transpose=True, download_url=_EMNIST_URL),
    "emnist/digits": DatasetSpec(
        "emnist/digits", 10, tfds_name="emnist/digits",
        idx_files=_emnist_idx_names("digits"), transpose=True, download_url=_EMNIST_URL),
    "emnist/letters": DatasetSpec(
        "emnist/letters", 26, tfds_name="emnist/letters",
        idx_files=_emnist_idx_names("letters"), label_offset=1, transpose=True,
        download_url=_EMNIST_URL),
    "mnist5k": DatasetSpec("mnist5k", 10, embedded=True),
    "shapes": DatasetSpec("shapes", 3, procedural=True),
    "shapes64": DatasetSpec("shapes64", 3, image_shape=(64, 64), procedural=True),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair of uint8 image arrays and int32 labels.

    ``factors_train`` / ``factors_test``: the ground-truth generative factors of each image
    (int32 (N, K), columns named by ``factor_names``) where the source knows them (only
    the procedural shapes); ``None`` otherwise.

    ``eq=False``: equality is identity (element-wise array comparison has no single truth
    value).
    """

    name: str
    x_train: np.ndarray  # uint8 (N, H, W), upright ("original") orientation
    y_train: np.ndarray  # int32 (N,), labels 0..num_classes-1
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str          # "embedded", "procedural", "dir:<path>", or "tfds"
    factors_train: Optional[np.ndarray] = None  # int32 (N_train, K) or None
    factors_test: Optional[np.ndarray] = None   # int32 (N_test, K) or None
    factor_names: Optional[tuple] = None        # K names, or None

    def __repr__(self) -> str:
        extra = f", factors={self.factor_names}" if self.factor_names else ""
        return (f"Dataset(name={self.name!r}, x_train={self.x_train.shape}, "
                f"x_test={self.x_test.shape}, num_classes={self.num_classes}, "
                f"source={self.source!r}{extra})")


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def load_dataset(name: str, data_dir: str = "", *, tfds_data_dir: str | None = None,
                 download: bool = True) -> Dataset:
    """Loads ``name``: procedural shapes are rendered; otherwise from ``data_dir`` if given,
    else the embedded data, else TFDS.

    Raises:
      DataError: unknown name, missing/bad files, or a TFDS dataset that is not prepared
        and cannot be downloaded.
    """
    spec = _spec(name)
    if spec.procedural:
        return _load_shapes(spec)
    if data_dir:
        return _load_dir(spec, str(data_dir))
    if spec.embedded:
        return _load_embedded(spec)
    return _load_tfds(spec, tfds_data_dir, download)


def to_float(x_uint8: np.ndarray, *, binarize: bool = False) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 1) -> float32 (N, H, W, 1) in [0, 1].

    ``binarize``: pixel/255 > 0.5 -> 1.0 else 0.0 (i.e. raw value >= 128), as in the paper.
    """
    x = np.asarray(x_uint8)
    if x.dtype != np.uint8:
        raise DataError(f"to_float expects uint8 images, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    elif not (x.ndim == 4 and x.shape[-1] == 1):
        raise DataError(f"to_float expects shape (N, H, W) or (N, H, W, 1), got {x.shape}")
    if binarize:
        return (x > 127).astype(np.float32)  # x/255 > 0.5  <=>  x > 127.5
    out = x.astype(np.float32)
    out /= np.float32(255.0)  # division (not * 1/255) keeps 255 -> exactly 1.0
    return out


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------


def _short(e: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    text = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
    return msg if len(msg) <= limit else msg[:limit - 3] + "..."


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
                raise DataError(f"{where}: images have values {lo}..{hi}, expected uint8 "
                                "pixels 0..255")
        x = x.astype(np.uint8)
    elif x.dtype.kind == "f":
        lo, hi = (float(np.nanmin(x)), float(np.nanmax(x))) if x.size else (0.0, 0.0)
        raise DataError(f"{where}: images have float dtype {x.dtype} (values {lo:g}..{hi:g}); "
                        "expected uint8 pixels 0..255 (convert with "
                        "np.round(x * 255).astype(np.uint8) if they are in [0, 1])")
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
            hint = (f" (npz labels are 0-based: subtract {spec.label_offset} from the raw "
                    f"{lo_ok + spec.label_offset}..{hi_ok + spec.label_offset} labels)")
        raise DataError(f"{where}: labels span {lo}..{hi}, expected {lo_ok}..{hi_ok} for "
                        f"{spec.name} ({spec.num_classes} classes){hint}")
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
    return Dataset(name=spec.name, x_train=out["train"][0], y_train=out["train"][1],
                   x_test=out["test"][0], y_test=out["test"][1],
                   num_classes=spec.num_classes, source=source)


# --------------------------------------------------------------------------------------
# Source 1: a local directory (npz or IDX)
# --------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_MAX_BYTES = 1 << 34  # 16 GiB: a header claiming more is corrupt, not a dataset
_CHUNK = 1 << 24


def _readinto_exact(f, buf: memoryview) -> int:
    n = 0
    while n < len(buf):
        k = f.readinto(buf[n:n + _CHUNK])
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
                raise DataError(f"{path}: truncated IDX file ({len(head)}-byte header, "
                                "need at least 4)")
            if head[0] or head[1]:
                raise DataError(f"{path}: not an IDX file (magic number 0x{head.hex()} does "
                                "not start with two zero bytes)")
            code, ndim = head[2], head[3]
            if code not in _IDX_DTYPES:
                raise DataError(f"{path}: corrupt IDX header (unknown dtype code 0x{code:02x})")
            if ndim == 0:
                raise DataError(f"{path}: corrupt IDX header (0 dimensions)")
            dims_b = f.read(4 * ndim)
            if len(dims_b) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header ({ndim} dims need {4 * ndim} "
                                f"bytes, found {len(dims_b)})")
            dims = struct.unpack(f">{ndim}I", dims_b)
            dtype = np.dtype(_IDX_DTYPES[code])
            nbytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            header = 4 + 4 * ndim
            if nbytes > _IDX_MAX_BYTES:
                raise DataError(f"{path}: corrupt IDX header (dims {dims} imply {nbytes} bytes)")
            if opener is open:
                size = os.fstat(f.fileno()).st_size
                if size != header + nbytes:
                    raise DataError(f"{path}: IDX file is {size} bytes, header says {dims} "
                                    f"{dtype.name} = {header + nbytes} bytes "
                                    f"({'truncated' if size < header + nbytes else 'trailing data'})")
            buf = np.empty(nbytes, np.uint8)
            got = _readinto_exact(f, memoryview(buf))
            if got < nbytes:
                raise DataError(f"{path}: truncated IDX file (header says {dims} {dtype.name} "
                                f"= {nbytes} data bytes, found {got})")
            if f.read(1):
                raise DataError(f"{path}: IDX file has trailing data after the {dims} "
                                f"{dtype.name} array the header describes")
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
                raise DataError(f"{path}: npz lacks array(s) {', '.join(missing)} "
                                f"(has {', '.join(f.files) or 'none'}; expected x and y)")
            return f["x"], f["y"]
    except DataError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: not a valid npz archive ({_short(e)})") from e


def _find(folder: str, fname: str) -> Optional[str]:
    """The raw IDX file if present (faster), else its .gz."""
    for cand in (fname, fname + ".gz"):
        p = os.path.join(folder, cand)
        if os.path.isfile(p):
            return p
    return None


def _load_dir(spec: DatasetSpec, data_dir: str) -> Dataset:
    root = os.path.abspath(os.path.expanduser(data_dir))
    source = f"dir:{root}"
    wanted = f"{' + '.join(spec.npz_files)}"
    if spec.idx_files:
        wanted += f" or IDX files {', '.join(spec.idx_files[r] + '[.gz]' for r in _ROLES)}"
    if not os.path.isdir(root):
        raise DataError(f"data_dir {root} does not exist or is not a directory "
                        f"(looked for {wanted})")
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
            for split, p in zip(("train", "test"), npz):
                x, y = _load_npz(p)
                parts[split] = (x, y, p)
            return _finish(spec, source, parts, raw=False)
        found_any += have
        if spec.idx_files:
            paths = {r: _find(folder, spec.idx_files[r]) for r in _ROLES}
            if all(paths.values()):
                arrays = {r: read_idx(p) for r, p in paths.items()}
                parts = {s: (arrays[f"{s}_images"], arrays[f"{s}_labels"],
                             f"{paths[s + '_images']} + {os.path.basename(paths[s + '_labels'])}")
                         for s in ("train", "test")}
                return _finish(spec, source, parts, raw=True)
            found_any += [p for p in paths.values() if p]
    where = root if len(folders) == 1 else f"{root} and {folders[1]}"
    partial = (f"; found only {', '.join(os.path.relpath(p, root) for p in found_any)}"
               if found_any else "")
    raise DataError(f"data_dir {where} has no complete {spec.name} data: looked for "
                    f"{wanted}{partial}")


# --------------------------------------------------------------------------------------
# Source 2: embedded (mnist5k, package data)
# --------------------------------------------------------------------------------------

_MNIST5K_SEED = 20_240_917
_MNIST5K_TEST_FRACTION = 5  # 1 in 5 per class -> 400 train / 100 test
MNIST5K_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_files", "mnist5k.npz")


def _read_mnist5k() -> tuple:
    """(5000, 28, 28) uint8 pixels and labels of the embedded MNIST subset, sorted by class
    (the order of the 5,000-digit CSV it was made from; see data_files/README.md)."""
    if not os.path.isfile(MNIST5K_FILE):
        raise DataError(f"{MNIST5K_FILE} is missing: the package was installed without its "
                        "data files (reinstall it, e.g. pip install -e .)")
    x, y = _load_npz(MNIST5K_FILE)
    return x, y, MNIST5K_FILE


def _load_embedded(spec: DatasetSpec) -> Dataset:
    x, y, where = _read_mnist5k()
    x = _check_images(x, where, spec)
    y = _check_labels(y, x.shape[0], where, spec, 0)
    # Deterministic stratified split with a private generator (no global RNG state).
    rng = np.random.default_rng(_MNIST5K_SEED)
    tr, te = [], []
    for c in range(spec.num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = len(idx) // _MNIST5K_TEST_FRACTION
        te.append(idx[:n_test])
        tr.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(tr))  # mix the classes (the CSV is sorted by class)
    te = rng.permutation(np.concatenate(te))
    return Dataset(name=spec.name, x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te],
                   num_classes=spec.num_classes, source="embedded")


# --------------------------------------------------------------------------------------
# Source 0: procedural shapes (dcvae_jax.shapes), known generative factors
# --------------------------------------------------------------------------------------

_SHAPES_SEED = 20_250_305
_SHAPES_SIZES = (12_000, 3_000)  # train, test


def _load_shapes(spec: DatasetSpec) -> Dataset:
    """12,000 / 3,000 scenes from a fixed seed; labels = the shape factor (column 0)."""
    from dcvae_jax import shapes  # numpy only; imported here to keep this module's imports light

    size = spec.image_shape[0]
    train, test = shapes.shapes_dataset(*_SHAPES_SIZES, seed=_SHAPES_SEED, image_size=size)
    where = f"procedural {spec.name}"
    x_tr = _check_images(train.images, where, spec)
    x_te = _check_images(test.images, where, spec)
    y_tr = _check_labels(train.labels, x_tr.shape[0], where, spec, 0)
    y_te = _check_labels(test.labels, x_te.shape[0], where, spec, 0)
    return Dataset(name=spec.name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                   num_classes=spec.num_classes, source="procedural",
                   factors_train=train.factors, factors_test=test.factors,
                   factor_names=tuple(shapes.FACTOR_NAMES))


# --------------------------------------------------------------------------------------
# Source 3: TFDS
# --------------------------------------------------------------------------------------

_PROBE_TIMEOUT_S = 3.0


def _probe_target(url: str) -> tuple:
    """(host, port) a download of ``url`` connects to first: the proxy if one is set."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme or "https"
    for var in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        proxy = os.environ.get(var)
        if proxy:
            p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            if p.hostname:
                return p.hostname, p.port or (443 if p.scheme == "https" else 80)
    return parsed.hostname or "", parsed.port or (443 if scheme == "https" else 80)


def _network_reachable(host: str, port: int, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to host:port opens within ``timeout`` seconds.

    Runs in a daemon thread so that a hanging DNS lookup cannot exceed the timeout.
    """
    result = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except (OSError, ValueError):
            result.append(False)

    t = threading.Thread(target=probe, name="dcvae-net-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _offline_hint(spec: DatasetSpec) -> str:
    alt = f"{spec.npz_files[0]}/{spec.npz_files[1]}"
    if spec.idx_files:
        alt += f" or the IDX files ({spec.idx_files['train_images']}[.gz], ...)"
    return f"set config.data.data_dir to a folder with {alt}"


def _tfds_to_numpy(tfds, builder, split: str) -> tuple:
    try:
        n = int(builder.info.splits[split].num_examples)
    except Exception:  # noqa: BLE001 - split sizes unknown (e.g. a mocked builder)
        n = 0
    if n > 0:
        x, y = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1,
                                                as_supervised=True))
    else:
        # batch_size=-1 batches by the recorded split size; without one TFDS would try a
        # batch of sys.maxsize.  Read in chunks instead.
        xs, ys = [], []
        for xb, yb in tfds.as_numpy(builder.as_dataset(split=split, batch_size=8192,
                                                       as_supervised=True)):
            xs.append(xb)
            ys.append(yb)
        if not xs:
            raise DataError(f"TFDS {builder.name} split {split!r} is empty")
        x, y = np.concatenate(xs), np.concatenate(ys)
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    return x, y


def _load_tfds(spec: DatasetSpec, tfds_data_dir: Optional[str], download: bool) -> Dataset:
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise DataError(f"dataset {spec.name} comes from TFDS, which is not installed: "
                        f'pip install -e ".[tfds]" (or pip install "dcvae_jax[tfds]"), or '
                        f"{_offline_hint(spec)}")
    try:
        import tensorflow_datasets as tfds  # slow import: only on this path
    except ImportError as e:  # installed but broken (e.g. no TensorFlow)
        raise DataError(f"dataset {spec.name} needs TFDS, which fails to import ({_short(e)}): "
                        f'pip install -e ".[tfds]", or {_offline_hint(spec)}') from e
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=tfds_data_dir)
        prepared = builder.is_prepared()
    except Exception as e:  # noqa: BLE001
        raise DataError(f"TFDS cannot open {spec.tfds_name} ({_short(e)}); "
                        f"{_offline_hint(spec)}") from e
    if not prepared:
        where = tfds_data_dir or "the default TFDS data_dir"
        if not download:
            raise DataError(f"TFDS dataset {spec.tfds_name} is not prepared in {where} and "
                            f"download=False; {_offline_hint(spec)}")
        host, port = _probe_target(spec.download_url or "https://storage.googleapis.com/")
        if not _network_reachable(host, port):
            raise DataError(f"TFDS dataset {spec.tfds_name} is not prepared in {where} and "
                            f"{host}:{port} is unreachable (no network?); "
                            f"{_offline_hint(spec)}")
        try:
            builder.download_and_prepare()
        except Exception as e:  # noqa: BLE001
            raise DataError(f"TFDS download_and_prepare of {spec.tfds_name} failed "
                            f"({_short(e)}); {_offline_hint(spec)}") from e
    # Keep TensorFlow off the accelerators JAX uses.  Only here: importing TensorFlow
    # takes seconds, and the error paths above must stay fast.
    try:
        import tensorflow as tf
        tf.config.set_visible_devices([], "GPU")
    except Exception:  # noqa: BLE001 - already initialised or no GPU build: fine
        pass
    parts = {}
    for split in ("train", "test"):
        x, y = _tfds_to_numpy(tfds, builder, split)
        parts[split] = (x, y, f"TFDS {spec.tfds_name} {split}")
    return _finish(spec, "tfds", parts, raw=True)
