"""Procedural dSprites-like dataset with known generative factors.

Everything is rendered with numpy from a seed: no downloads, fully deterministic.

Factors (columns of the ``factors`` array, all int32 indices, sampled independently and
uniformly at random per example):

====  ==========  ======  ==================================================================
col   name        values  meaning
====  ==========  ======  ==================================================================
0     shape       3       0 = square, 1 = ellipse, 2 = heart
1     scale       6       linspace(0.5, 1, 6) times the base size (see ``SCALE_VALUES``)
2     rotation    20      angle ``2*pi*k/20`` in [0, 2pi), counter-clockwise on screen
3     x           16      horizontal centre, index 0 = left; ``POSITION_VALUES`` (in [0, 1])
4     y           16      vertical centre, index 0 = top (row 0), larger index = lower
====  ==========  ======  ==================================================================

Symmetries (the factor index is still recorded, but images coincide): a square has 4-fold
rotational symmetry, so rotation indices ``k`` and ``k + 5`` (mod 20) give the same image; an
ellipse has 2-fold symmetry (``k`` and ``k + 10``); the heart has none (all 20 differ).
As in dSprites, the rotation factor is therefore only partially identifiable from images.

Geometry is defined in normalised image coordinates ([0, 1] across the image), so a factor
vector describes the same scene at any ``image_size`` (28 and 64 are the supported sizes; any
size >= 16 works). Each unit shape fits in a circle of radius 1, scaled to radius
``BASE_RADIUS * scale``; centres are kept ``BASE_RADIUS + 0.04`` away from the borders so
shapes are never clipped and the outermost pixel ring stays empty (at 28 and 64 px). Rendering is anti-aliased: each pixel's value is the fraction of
``supersample**2`` sub-pixel sample points that fall inside the shape, times 255. Only a
small patch around each shape is evaluated, so 10,000 28x28 images render in well under a
second and 64x64 images in a few seconds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
  "FACTOR_NAMES",
  "FACTOR_SIZES",
  "SHAPE_NAMES",
  "SCALE_VALUES",
  "ROTATION_VALUES",
  "POSITION_VALUES",
  "BASE_RADIUS",
  "ShapesSplit",
  "sample_factors",
  "render_shapes",
  "make_shapes",
  "shapes_dataset",
]

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "rotation", "x", "y")
FACTOR_SIZES: tuple[int, ...] = (3, 6, 20, 16, 16)
SHAPE_NAMES: tuple[str, ...] = ("square", "ellipse", "heart")

#: Radius (normalised image units) of the bounding circle of a shape at scale 1.
BASE_RADIUS: float = 0.18
_MARGIN: float = BASE_RADIUS + 0.04

SCALE_VALUES: np.ndarray = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
ROTATION_VALUES: np.ndarray = 2.0 * np.pi * np.arange(FACTOR_SIZES[2]) / FACTOR_SIZES[2]
POSITION_VALUES: np.ndarray = np.linspace(_MARGIN, 1.0 - _MARGIN, FACTOR_SIZES[3])

_ELLIPSE_MINOR = 0.5  # semi-minor axis; the semi-major axis is 1.
# Heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 spans x in [-1.14, 1.14], y in [-1, 1.236];
# centred at y = 0.25 its bounding radius is 1.25, which we rescale to 1.
_HEART_CY = 0.25
_HEART_R = 1.25

_CHUNK = 1024  # images rendered per vectorised chunk (bounds peak memory)


class ShapesSplit(NamedTuple):
  """One split of :func:`shapes_dataset`."""

  images: np.ndarray  # uint8 (N, H, W), 0..255
  factors: np.ndarray  # int32 (N, 5), columns as FACTOR_NAMES
  labels: np.ndarray  # int32 (N,), == factors[:, 0] (the shape), for class-conditional use


def sample_factors(num_examples: int, rng: np.random.Generator) -> np.ndarray:
  """Independent uniform factor indices, int32 (num_examples, 5)."""
  sizes = np.asarray(FACTOR_SIZES, dtype=np.int64)
  return rng.integers(0, sizes, size=(int(num_examples), len(sizes))).astype(np.int32)


def _inside(shape_id: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Point-in-unit-shape test in local (rotated, scaled) coords; v points down."""
  if shape_id == 0:  # square inscribed in the unit circle: half side 1/sqrt(2)
    h = np.float32(1.0 / np.sqrt(2.0))
    return (np.abs(u) <= h) & (np.abs(v) <= h)
  if shape_id == 1:  # ellipse, semi-axes 1 (along u) and _ELLIPSE_MINOR (along v)
    return u * u + (v / np.float32(_ELLIPSE_MINOR)) ** 2 <= 1.0
  if shape_id == 2:  # heart, lobes up (screen), point down
    x = u * np.float32(_HEART_R)
    y = np.float32(_HEART_CY) - v * np.float32(_HEART_R)
    r = x * x + y * y - 1.0
    return r * r * r - x * x * y * y * y <= 0.0
  raise ValueError(f"unknown shape id {shape_id}")


def _render_chunk(factors: np.ndarray, image_size: int, supersample: int) -> np.ndarray:
  n = factors.shape[0]
  W = image_size
  s = supersample
  r_px = BASE_RADIUS * SCALE_VALUES[factors[:, 1]] * W  # (n,) radius in pixels
  cx = POSITION_VALUES[factors[:, 3]] * W  # pixel units; pixel j spans [j, j+1)
  cy = POSITION_VALUES[factors[:, 4]] * W
  theta = ROTATION_VALUES[factors[:, 2]]

  P = min(int(np.ceil(2.0 * BASE_RADIUS * W)) + 2, W)  # patch side, same for all
  ox = np.clip(np.floor(cx - r_px).astype(np.int64), 0, W - P)
  oy = np.clip(np.floor(cy - r_px).astype(np.int64), 0, W - P)

  # Sub-pixel sample offsets within a patch, (P*s,), in pixel units.
  sub = (np.arange(P * s, dtype=np.float32) + 0.5) / s
  # Offsets of sample points from the shape centre, divided by the radius: (n, P*s).
  inv_r = (1.0 / r_px).astype(np.float32)[:, None]
  dx = (ox[:, None] + sub[None, :] - cx[:, None]).astype(np.float32) * inv_r
  dy = (oy[:, None] + sub[None, :] - cy[:, None]).astype(np.float32) * inv_r
  c = np.cos(theta).astype(np.float32)[:, None, None]
  sn = np.sin(theta).astype(np.float32)[:, None, None]
  # Rotate the shape by +theta counter-clockwise on screen (y axis points down), i.e.
  # map sample points by the inverse rotation into the shape's frame.
  X = dx[:, None, :]  # (n, 1, P*s)
  Y = dy[:, :, None]  # (n, P*s, 1)
  u = c * X - sn * Y
  v = sn * X + c * Y

  cover = np.zeros((n, P * s, P * s), dtype=bool)
  for shape_id in range(FACTOR_SIZES[0]):
    sel = np.nonzero(factors[:, 0] == shape_id)[0]
    if sel.size:
      cover[sel] = _inside(shape_id, u[sel], v[sel])
  # Box-filter the s x s sub-samples of each pixel.
  frac = cover.reshape(n, P, s, P, s).mean(axis=(2, 4), dtype=np.float32)
  patch = np.round(frac * 255.0).astype(np.uint8)

  images = np.zeros((n, W, W), dtype=np.uint8)
  rows = oy[:, None, None] + np.arange(P)[None, :, None]
  cols = ox[:, None, None] + np.arange(P)[None, None, :]
  images[np.arange(n)[:, None, None], rows, cols] = patch
  return images


def render_shapes(factors, *, image_size: int = 28, supersample: int = 4) -> np.ndarray:
  """Render images for given factor indices.

  Args:
    factors: int array (N, 5) of factor indices, columns as ``FACTOR_NAMES``.
    image_size: output height = width in pixels (28 and 64 supported; >= 16).
    supersample: sub-samples per pixel side for anti-aliasing (1 = binary images).

  Returns:
    uint8 array (N, image_size, image_size), background 0, shape up to 255.
  """
  factors = np.asarray(factors)
  if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
    raise ValueError(f"factors must have shape (N, {len(FACTOR_SIZES)}), got {factors.shape}")
  if not np.issubdtype(factors.dtype, np.integer):
    raise ValueError("factors must be integer indices")
  sizes = np.asarray(FACTOR_SIZES)
  if factors.size and ((factors < 0).any() or (factors >= sizes).any()):
    raise ValueError(f"factor indices out of range; sizes are {FACTOR_SIZES}")
  image_size = int(image_size)
  if image_size < 16:
    raise ValueError("image_size must be >= 16")
  supersample = int(supersample)
  if supersample < 1:
    raise ValueError("supersample must be >= 1")
  out = np.empty((factors.shape[0], image_size, image_size), dtype=np.uint8)
  # Keep each chunk's float work around ~16M sample points.
  P = min(int(np.ceil(2.0 * BASE_RADIUS * image_size)) + 2, image_size)
  chunk = max(1, min(_CHUNK, (1 << 24) // (P * P * supersample * supersample)))
  for start in range(0, factors.shape[0], chunk):
    stop = min(start + chunk, factors.shape[0])
    out[start:stop] = _render_chunk(factors[start:stop], image_size, supersample)
  return out


def make_shapes(num_examples: int, *, seed: int = 0, image_size: int = 28):
  """Sample ``num_examples`` random scenes and render them.

  Factor indices are drawn uniformly and independently with
  ``np.random.default_rng(seed)``, so the output is a deterministic function of
  ``(num_examples, seed)`` (and prefixes agree: the first ``n`` examples of a larger call
  equal a call with ``n``); ``image_size`` only changes the resolution.

  Returns:
    images: uint8 (N, image_size, image_size) in 0..255.
    factors: int32 (N, 5), columns ``FACTOR_NAMES`` with sizes ``FACTOR_SIZES``.
  """
  rng = np.random.default_rng(seed)
  factors = sample_factors(num_examples, rng)
  return render_shapes(factors, image_size=image_size), factors


def shapes_dataset(num_train: int, num_test: int, seed: int = 0, image_size: int = 28):
  """Train/test splits with class label = shape factor.

  The two splits come from independent child streams of ``np.random.SeedSequence(seed)``
  (``spawn(2)``: train first, test second), so they are deterministic, statistically
  independent, and changing ``num_train`` does not change the test set. (The train split is
  *not* the same as ``make_shapes(num_train, seed=seed)``.) Because factors are sampled
  with replacement from a finite grid (3*6*20*16*16 = 92,160 configurations), identical
  images can occur within and across splits.

  Returns:
    ``(train, test)``, each a :class:`ShapesSplit` ``(images, factors, labels)`` with
    ``labels == factors[:, 0]`` (0 square, 1 ellipse, 2 heart).
  """
  train_ss, test_ss = np.random.SeedSequence(seed).spawn(2)
  splits = []
  for n, ss in ((num_train, train_ss), (num_test, test_ss)):
    factors = sample_factors(n, np.random.default_rng(ss))
    images = render_shapes(factors, image_size=image_size)
    splits.append(ShapesSplit(images, factors, factors[:, 0].copy()))
  return splits[0], splits[1]
