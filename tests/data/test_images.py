"""Tests for dcvae_jax.data.images: image files, folders and npz arrays to uint8 (N, H, W, C).

Every image is generated here (Pillow) in tmp_path; expected pixels come from numpy, not from the loader."""

import os

import numpy as np
import pytest
from PIL import Image

from dcvae_jax.data import images
from tests.data.helpers import raises


def _save(path, a, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(a).save(path, **kw)
  return str(path)


def _rgb(n, h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_colour_pngs_of_one_size_load_exactly_in_sorted_order(tmp_path):
  x = _rgb(5, 12, 20)
  for i in (3, 0, 4, 1, 2):  # written out of order, and one in a subfolder
    _save(tmp_path / ("sub" if i == 4 else "") / f"img{i}.png", x[i])
  (tmp_path / "notes.txt").write_text("not an image")
  _save(tmp_path / ".hidden.png", x[0])
  got = images.load_images(str(tmp_path))
  assert got.images.shape == (5, 12, 20, 3) and got.images.dtype == np.uint8
  assert [os.path.relpath(n, tmp_path) for n in got.names] == [
    "img0.png",
    "img1.png",
    "img2.png",
    "img3.png",
    os.path.join("sub", "img4.png"),
  ]
  np.testing.assert_array_equal(got.images, x)  # PNG is lossless, nothing resized or converted
  assert got.errors == ()
  found, others = images.find_images(str(tmp_path))
  assert len(found) == 5 and [os.path.basename(p) for p in others] == ["notes.txt"]


def test_grey_jpegs_of_mixed_sizes_need_image_size(tmp_path):
  paths = [
    _save(tmp_path / "a.jpg", np.full((10, 10), 200, np.uint8), quality=95),
    _save(tmp_path / "b.jpeg", np.full((14, 9), 50, np.uint8), quality=95),
    _save(tmp_path / "c.JPG", np.full((10, 10), 120, np.uint8), quality=95),
  ]
  msg = raises(["differ in size", "b.jpeg", "14x9", "data.image_size"], images.load_images, str(tmp_path))
  assert "a.jpg" in msg  # the first image, which set the size
  got = images.load_images(paths, image_size=(8, 6))
  assert got.images.shape == (3, 8, 6, 1) and got.errors == ()
  # A constant image stays constant through the resize (JPEG keeps a flat grey to within a level).
  for img, level in zip(got.images, (200, 50, 120), strict=True):
    assert np.abs(img.astype(int) - level).max() <= 1
  assert images.load_images(paths, image_size=7).images.shape == (3, 7, 7, 1)  # an int is a square


def test_rgb_to_grey_is_the_luma_and_grey_to_rgb_replicates(tmp_path):
  x = _rgb(1, 6, 7, seed=3)[0]
  grey = np.random.default_rng(4).integers(0, 256, (6, 7), dtype=np.uint8)
  p_rgb, p_grey = _save(tmp_path / "c.png", x), _save(tmp_path / "g.png", grey)
  msg = raises(["differ in channels", "g.png", "data.channels"], images.load_images, [p_rgb, p_grey])
  assert "c.png" in msg
  got = images.load_images([p_rgb, p_grey], channels=1).images[..., 0]
  r, g, b = np.moveaxis(x.astype(np.int64), -1, 0)
  luma = (299 * r + 587 * g + 114 * b) / 1000  # ITU-R 601-2
  assert np.abs(got[0] - luma).max() <= 0.5 + 1e-9  # Pillow's fixed-point rounding of the same weights
  np.testing.assert_array_equal(got[1], grey)
  both = images.load_images([p_rgb, p_grey], channels=3).images
  np.testing.assert_array_equal(both[0], x)
  np.testing.assert_array_equal(both[1], np.repeat(grey[..., None], 3, axis=-1))


def test_bmp_palette_alpha_and_sixteen_bit(tmp_path):
  x = _rgb(1, 5, 4, seed=5)[0]
  np.testing.assert_array_equal(images.load_images(_save(tmp_path / "a.bmp", x)).images[0], x)
  rgba = np.concatenate([x, np.full((5, 4, 1), 7, np.uint8)], axis=-1)
  np.testing.assert_array_equal(images.load_images(_save(tmp_path / "a.png", rgba)).images[0], x)  # alpha dropped
  levels = np.array([[0, 257 * 100], [65535, 257 * 3 + 128]], np.uint16)  # 16-bit grey: round(v / 257)
  p16 = str(tmp_path / "deep.png")
  Image.fromarray(levels).save(p16)
  got = images.load_images(p16).images[0, ..., 0]
  np.testing.assert_array_equal(got, [[0, 100], [255, 3]])
  pal = Image.fromarray(x).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
  p_pal = str(tmp_path / "pal.png")
  pal.save(p_pal)
  got = images.load_images(p_pal).images[0]
  np.testing.assert_array_equal(got, np.asarray(pal.convert("RGB")))  # a palette image is colour


def test_exif_orientation_is_applied(tmp_path):
  a = np.zeros((4, 6), np.uint8)
  a[0, 0] = 255  # a bright top-left corner
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
  path = str(tmp_path / "photo.png")
  Image.fromarray(a).save(path, exif=exif)
  got = images.load_images(path).images[0, ..., 0]
  assert got.shape == (6, 4)  # sizes swap
  np.testing.assert_array_equal(got, np.rot90(a, k=-1))  # clockwise: the corner moves to the top right


def test_unreadable_files_are_reported_and_the_rest_loaded(tmp_path):
  x = _rgb(2, 6, 6, seed=6)
  good = [_save(tmp_path / "a.png", x[0]), _save(tmp_path / "c.png", x[1])]
  corrupt = str(tmp_path / "b.png")
  with open(corrupt, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n not really a png")
  truncated = str(tmp_path / "d.png")
  _save(tmp_path / "d.png", _rgb(1, 6, 6, seed=7)[0])
  with open(truncated, "rb") as f:
    data = f.read()
  with open(truncated, "wb") as f:
    f.write(data[: len(data) // 2])
  missing = str(tmp_path / "gone.png")
  for size in ((), (6, 6)):  # auto (header pass) and a given size (decode only)
    got = images.load_images([good[0], corrupt, good[1], truncated, missing], image_size=size)
    np.testing.assert_array_equal(got.images, x)
    assert got.names == tuple(good)
    assert [e[0] for e in got.errors] == [corrupt, truncated, missing]
    assert all("cannot read image" in e[1] and "\n" not in e[1] for e in got.errors)
  empty = images.load_images([missing], image_size=(6, 6), channels=3)
  assert empty.images.shape == (0, 6, 6, 3) and len(empty.errors) == 1


def test_npz_any_shape(tmp_path):
  x = _rgb(3, 10, 14, seed=8)
  path = str(tmp_path / "imgs.npz")
  np.savez(path, x=x)
  got = images.load_images(path)
  np.testing.assert_array_equal(got.images, x)
  assert got.names == ("imgs.npz[0]", "imgs.npz[1]", "imgs.npz[2]") and got.errors == ()
  assert images.load_images(path, image_size=(5, 7), channels=1).images.shape == (3, 5, 7, 1)
  grey = x[..., 0].astype(np.int32)  # any integer dtype with values 0..255; (N, H, W) is grey
  np.testing.assert_array_equal(images.convert_array(grey), grey[..., None].astype(np.uint8))
  raises(["float", "uint8"], images.convert_array, x / 255.0, where="arr")
  raises(["values", "0..255"], images.convert_array, grey + 1000)
  raises("shape", images.convert_array, x[..., None])
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not a zip")
  assert "not a valid npz" in images.load_images(str(bad)).errors[0][1]


def test_image_size_arg():
  assert images.image_size_arg(()) == () and images.image_size_arg(None) == ()
  assert images.image_size_arg(32) == (32, 32) and images.image_size_arg((32,)) == (32, 32)
  assert images.image_size_arg((20, 36)) == (20, 36) and images.image_size_arg([20, 36]) == (20, 36)
  for bad in (0, -3, (1, 2, 3), (0, 5), "32", (2.5, 3), True):
    with pytest.raises(ValueError):
      images.image_size_arg(bad)
  with pytest.raises(ValueError):
    images.load_images([], channels=2)
