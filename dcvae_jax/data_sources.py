"""The readers behind :func:`dcvae_jax.data.load_dataset`, one per source: a local directory
(npz or IDX), the embedded mnist5k, the procedural shapes, TFDS (with its network probe).

Each returns raw arrays and where they came from; :mod:`dcvae_jax.data` checks them and builds
the Dataset.  Nothing here imports :mod:`dcvae_jax.data`, which re-exports DataError and
DatasetSpec from here.
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
    "MNIST5K_FILE",
    "DataError",
    "DatasetSpec",
    "mnist5k_split",
    "read_dir",
    "read_idx",
    "read_mnist5k",
    "read_tfds",
    "render_shapes",
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


def _short(e: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    text = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
    return msg if len(msg) <= limit else msg[:limit - 3] + "..."


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


def read_dir(spec: DatasetSpec, data_dir: str) -> tuple:
    """``(source, parts, raw)`` of the first folder with complete data: parts maps split ->
    (x, y, where); raw is True for IDX files (raw conventions), False for npz."""
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
            return source, parts, False
        found_any += have
        if spec.idx_files:
            paths = {r: _find(folder, spec.idx_files[r]) for r in _ROLES}
            if all(paths.values()):
                arrays = {r: read_idx(p) for r, p in paths.items()}
                parts = {s: (arrays[f"{s}_images"], arrays[f"{s}_labels"],
                             f"{paths[s + '_images']} + {os.path.basename(paths[s + '_labels'])}")
                         for s in ("train", "test")}
                return source, parts, True
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


def read_mnist5k() -> tuple:
    """(5000, 28, 28) uint8 pixels and labels of the embedded MNIST subset, sorted by class
    (the order of the 5,000-digit CSV it was made from; see data_files/README.md)."""
    if not os.path.isfile(MNIST5K_FILE):
        raise DataError(f"{MNIST5K_FILE} is missing: the package was installed without its "
                        "data files (reinstall it, e.g. pip install -e .)")
    x, y = _load_npz(MNIST5K_FILE)
    return x, y, MNIST5K_FILE


def mnist5k_split(y: np.ndarray, num_classes: int) -> tuple:
    """(train, test) indices of the embedded digits: 4 in 5 of each class train, 1 in 5 test."""
    # Deterministic stratified split with a private generator (no global RNG state).
    rng = np.random.default_rng(_MNIST5K_SEED)
    tr, te = [], []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = len(idx) // _MNIST5K_TEST_FRACTION
        te.append(idx[:n_test])
        tr.append(idx[n_test:])
    tr = rng.permutation(np.concatenate(tr))  # mix the classes (the CSV is sorted by class)
    te = rng.permutation(np.concatenate(te))
    return tr, te


# --------------------------------------------------------------------------------------
# Source 0: procedural shapes (dcvae_jax.shapes), known generative factors
# --------------------------------------------------------------------------------------

_SHAPES_SEED = 20_250_305
_SHAPES_SIZES = (12_000, 3_000)  # train, test


def render_shapes(spec: DatasetSpec) -> tuple:
    """(train, test, factor_names): 12,000 / 3,000 scenes from a fixed seed."""
    from dcvae_jax import shapes  # numpy only; imported here to keep this module's imports light

    size = spec.image_shape[0]
    train, test = shapes.shapes_dataset(*_SHAPES_SIZES, seed=_SHAPES_SEED, image_size=size)
    return train, test, tuple(shapes.FACTOR_NAMES)


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


def read_tfds(spec: DatasetSpec, tfds_data_dir: Optional[str], download: bool) -> dict:
    """parts: split -> (x, y, where) of a TFDS dataset, prepared (downloaded) if need be."""
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
    return parts
