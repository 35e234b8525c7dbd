"""Images from files: PNG / JPEG / BMP files, folders of them, or an .npz of uint8 arrays, as one uint8 array
(N, H, W, C) of a chosen size and channel count. Used by the ``folder`` dataset (:mod:`dcvae_jax.data.folder_source`)
and by anything that scores new images with a trained model.

* :func:`load_images` ``(source, image_size=(), channels=0) -> Images(images, names, errors)``: ``source`` is a
  folder (every image under it, recursively, in sorted order), one image file, an ``.npz`` (its array ``x``, or
  its only array), or a list of image files. An image that cannot be read is left out and reported in
  ``errors`` as ``(name, one-line reason)``, so a caller can use the good images and report the bad ones.
* :func:`convert_array`: the same conversion for an in-memory uint8 array (N, H, W[, C]).
* :func:`find_images`: the image files under a folder, and the other files it skipped.
* :func:`image_size_arg`: ``data.image_size`` (``()``, an int, or ``(H, W)``) as ``()`` or ``(H, W)``.

Conversion of one image (files and arrays alike):
  1. decoded by Pillow; a photo's EXIF orientation is applied; 16-bit grey is scaled to 8 bits (round(v / 257));
  2. channels: 1 -> Pillow's "L", the ITU-R 601-2 luma L = (299 R + 587 G + 114 B) / 1000; 3 -> "RGB" (a grey
     image replicated). An alpha channel is dropped; palette images count as colour (3);
  3. size: resized to (H, W) with Pillow's bilinear filter (antialiased: its support grows with the reduction)
     when the size differs; the aspect ratio is not kept.
Auto: ``image_size=()`` / ``channels=0`` take the size / channel count of the first readable image when every
image agrees (on the oriented size and the native channel count); otherwise a :class:`DataError` names an
image that disagrees and asks for ``data.image_size`` / ``data.channels``.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

from dcvae_jax.errors import DataError
from dcvae_jax.options import CHANNELS, image_size_arg

__all__ = ["IMAGE_EXTENSIONS", "Images", "convert_array", "find_images", "image_size_arg", "load_images"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
SHAPE_HINT = "set data.image_size=(H, W) and data.channels (1 or 3) to convert every image to one shape"


@dataclasses.dataclass(frozen=True, eq=False)
class Images:
  """What :func:`load_images` read: ``images`` uint8 (N, H, W, C); ``names[i]`` is where image i came from (a
  path, or ``file.npz[i]``); ``errors`` lists ``(name, reason)`` of every image left out (unreadable)."""

  images: np.ndarray
  names: tuple
  errors: tuple

  def __repr__(self) -> str:
    return f"Images({self.images.shape}, {len(self.errors)} error(s))"


def _channels_arg(channels) -> int:
  c = int(channels or 0)
  if c not in CHANNELS:
    raise ValueError(f"channels must be 0 (auto), 1 (grey) or 3 (colour), got {channels!r}")
  return c


def find_images(folder: str, *, recursive: bool = True) -> tuple:
  """``(images, others)``: the image files (IMAGE_EXTENSIONS, any case) under ``folder`` (recursively), sorted by
  their path relative to it, and the other files skipped. Hidden files and folders (".name") are ignored."""
  found: list[str] = []
  others: list[str] = []
  for root, dirs, names in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
    for name in names:
      if name.startswith("."):
        continue
      path = os.path.join(root, name)
      (found if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
  key = lambda p: os.path.relpath(p, folder).split(os.sep)  # noqa: E731
  return sorted(found, key=key), sorted(others, key=key)


def _reason(e: BaseException) -> str:
  text = " ".join(str(e).split())
  msg = f"{type(e).__name__}: {text}" if text else type(e).__name__
  return msg if len(msg) <= 200 else msg[:197] + "..."


def _native_channels(mode: str) -> int:
  return 1 if mode in _GREY_MODES else 3


def _header(path: str) -> tuple:
  """(height, width, channels) of an image file as it will be shown (EXIF orientation applied), from its header."""
  from PIL import Image

  with Image.open(path) as img:
    w, h = img.size
    try:
      if img.getexif().get(0x0112) in _ROTATED:
        w, h = h, w
    except Exception:  # noqa: BLE001 - a damaged EXIF block only loses the orientation, as in exif_transpose
      pass
    return h, w, _native_channels(img.mode)


def _decode(path: str):
  """The decoded, upright Pillow image of a file (every pixel read, so a truncated file fails here)."""
  from PIL import Image, ImageOps

  with Image.open(path) as img:
    img.load()
    try:
      return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: keep the stored orientation
      return img.copy()


def _to_pil_mode(img, channels: int):
  """``img`` as an 8-bit "L" (channels 1) or "RGB" (3) image."""
  from PIL import Image

  if img.mode in _SIXTEEN_BIT_MODES:
    a = np.asarray(img, np.int64)
    if a.size and (a.min() < 0 or a.max() > 65535):
      raise ValueError(f"{img.mode} image with values {a.min()}..{a.max()}, outside 16 bits")
    img = Image.fromarray(np.round(a / 257.0).astype(np.uint8))
  elif img.mode == "F":
    raise ValueError("floating-point image (mode F): save it as 8-bit PNG")
  target = "L" if channels == 1 else "RGB"
  if img.mode == target:
    return img
  if img.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):  # CMYK, YCbCr, PA, ...: through RGB(A)
    img = img.convert("RGBA" if img.mode.endswith("A") else "RGB")
  return img.convert(target)


def _resized(img, size: tuple):
  from PIL import Image

  h, w = size
  if img.size == (w, h):
    return img
  return img.resize((w, h), Image.Resampling.BILINEAR)


def _pil_to_array(img, size: tuple, channels: int) -> np.ndarray:
  a = np.asarray(_resized(_to_pil_mode(img, channels), size), np.uint8)
  return a[..., None] if a.ndim == 2 else a


def _agree(first: tuple, shape: tuple, first_name: str, name: str, image_size: tuple, channels: int) -> None:
  """DataError when an image's native (h, w, c) disagrees with the first image's on an auto setting."""
  if not image_size and shape[:2] != first[:2]:
    raise DataError(
      f"images differ in size: {name} is {shape[0]}x{shape[1]} (height x width), {first_name} is "
      f"{first[0]}x{first[1]}; {SHAPE_HINT}"
    )
  if not channels and shape[2] != first[2]:
    raise DataError(
      f"images differ in channels: {name} has {shape[2]}, {first_name} has {first[2]} (1 = grey, 3 = colour); "
      + SHAPE_HINT
    )


def _load_files(paths: Sequence[str], image_size: tuple, channels: int) -> Images:
  errors = []
  if not image_size or not channels:  # auto: the first readable image decides, every other must agree
    first: tuple | None = None
    first_name = ""
    for p in paths:
      try:
        shape = _header(p)
      except Exception as e:  # noqa: BLE001 - any decoder failure is this file's error
        errors.append((p, f"cannot read image ({_reason(e)})"))
        continue
      if first is None:
        first, first_name = shape, p
      _agree(first, shape, first_name, p, image_size, channels)
    if first is not None:
      image_size, channels = image_size or first[:2], channels or first[2]
  bad = {p for p, _ in errors}
  out, names = [], []
  for p in paths:
    if p in bad:
      continue
    try:
      out.append(_pil_to_array(_decode(p), image_size, channels))
      names.append(p)
    except Exception as e:  # noqa: BLE001 - any decoder failure is this file's error
      errors.append((p, f"cannot read image ({_reason(e)})"))
  shape = (*(image_size or (0, 0)), channels or 0)
  images = np.stack(out) if out else np.zeros((0, *shape), np.uint8)
  order = {p: i for i, p in enumerate(paths)}
  return Images(images, tuple(names), tuple(sorted(errors, key=lambda e: order.get(e[0], 0))))


def convert_array(x, image_size=(), channels: int = 0, *, where: str = "array") -> np.ndarray:
  """uint8 images (N, H, W) or (N, H, W, C) with C in 1..4 (2: grey + alpha, 4: RGBA) -> uint8 (N, H', W', C')
  converted as image files are (module docstring); ``image_size=()`` / ``channels=0`` keep the array's own.
  Integer arrays with values in 0..255 are accepted (cast); float, bool and other dtypes are a DataError."""
  image_size, channels = image_size_arg(image_size), _channels_arg(channels)
  x = np.asarray(x)
  if x.dtype.kind in "iu" and x.dtype != np.uint8:
    if x.size and (int(x.min()) < 0 or int(x.max()) > 255):
      raise DataError(f"{where}: images have values {int(x.min())}..{int(x.max())}, expected uint8 pixels 0..255")
    x = x.astype(np.uint8)
  elif x.dtype != np.uint8:
    raise DataError(f"{where}: images have dtype {x.dtype}, expected uint8 pixels 0..255")
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or not 1 <= x.shape[-1] <= 4:
    raise DataError(f"{where}: images have shape {x.shape}, expected (N, H, W) or (N, H, W, C) with C 1, 3 or 4")
  if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
    raise DataError(f"{where}: holds no images (shape {x.shape})")
  native = 1 if x.shape[-1] <= 2 else 3
  size, channels = image_size or tuple(x.shape[1:3]), channels or native
  if size == tuple(x.shape[1:3]) and x.shape[-1] == channels:
    return x
  from PIL import Image

  mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[x.shape[-1]]
  out = np.empty((x.shape[0], *size, channels), np.uint8)
  for i, a in enumerate(x):
    img = Image.fromarray(a[..., 0] if mode == "L" else a, mode=mode)
    out[i] = _pil_to_array(img, size, channels)
  return out


def _load_npz(path: str, image_size: tuple, channels: int) -> Images:
  try:
    with np.load(path, allow_pickle=False) as f:
      if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an npz archive")
      keys = ["x"] if "x" in f.files else f.files
      if len(keys) != 1:
        raise DataError(f"{path}: npz holds arrays {', '.join(f.files) or 'none'}; expected x (or a single array)")
      x = f[keys[0]]
  except DataError:
    raise
  except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    return Images(
      np.zeros((0, *(image_size or (0, 0)), channels), np.uint8), (), ((path, f"not a valid npz ({_reason(e)})"),)
    )
  images = convert_array(x, image_size, channels, where=path)
  base = os.path.basename(path)
  return Images(images, tuple(f"{base}[{i}]" for i in range(images.shape[0])), ())


def load_images(source, image_size=(), channels: int = 0) -> Images:
  """Every image of ``source`` as uint8 (N, H, W, C) at ``image_size`` (``()``: auto, an int, or (H, W)) with
  ``channels`` (0: auto, 1 or 3), plus where each came from and the images that could not be read.

  ``source``: a folder (its images, recursively, sorted: :func:`find_images`), an image file, an ``.npz`` file
  (array ``x`` or its only array: (N, H, W) or (N, H, W, C)), or a sequence of image file paths. A missing or
  unreadable file is an entry of ``errors``, never an exception; images that disagree under an auto setting
  (module docstring) raise :class:`DataError`. When no image is readable the array is (0, H, W, C) with 0
  for any size that was left to auto.

  Raises:
    ValueError: ``image_size`` or ``channels`` out of their ranges.
    DataError: auto size / channels and images that disagree; an npz of the wrong dtype or shape.
  """
  image_size, channels = image_size_arg(image_size), _channels_arg(channels)
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if os.path.isdir(path):
      return _load_files(find_images(path)[0], image_size, channels)
    if path.lower().endswith(".npz") and os.path.isfile(path):
      return _load_npz(path, image_size, channels)
    paths = [path]
  else:
    paths = [os.fspath(p) for p in source]
  return _load_files(paths, image_size, channels)
