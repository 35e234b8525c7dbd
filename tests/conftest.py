"""Test set-up: 8 fake CPU devices, no network, float32; and the fixtures that test files use by name."""

import os
import sys

import pytest

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from dcvae_jax import xla_cache  # noqa: E402  (after the environment above: it imports JAX)
from dcvae_jax.data import datasets as data  # noqa: E402
from tests.launch_helpers import CLUSTER_TOOLS, _write_exe  # noqa: E402

xla_cache.enable()  # compiled programs persist across test sessions (DCVAE_XLA_CACHE=0 turns it off)

# Files whose tests start subprocesses, build venvs or wheels, or train and score models end to end: marked
# `slow`, so `make test-fast` (pytest -m "not slow") runs the rest for the inner loop. `make test` runs all.
SLOW_FILES = {
  "test_cli.py",
  "test_colab.py",
  "test_detector.py",
  "test_folder_data.py",
  "test_latents.py",
  "test_launch.py",
  "test_launch_cluster.py",
  "test_models_learning.py",
  "test_multihost.py",
  "test_ood.py",
  "test_packaging.py",
  "test_pipeline.py",
  "test_plots.py",
  "test_predict.py",
  "test_preemption.py",
  "test_resilience.py",
  "test_train.py",
  "test_validation_split.py",
  "test_workdir_identity.py",
}


def pytest_collection_modifyitems(items):
  for item in items:
    if item.path.name in SLOW_FILES:
      item.add_marker(pytest.mark.slow)


# Fixtures that several test files use by name (their helper functions stay in the helper modules).


@pytest.fixture
def tfds():
  return pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def no_download(monkeypatch, tfds):
  """Makes any real download attempt fail the test."""

  def boom(*args, **kwargs):
    raise AssertionError("download_and_prepare must not be called")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", boom)


@pytest.fixture(scope="module")
def mnist5k():
  return data.load_dataset("mnist5k")


@pytest.fixture
def fakes(tmp_path):
  """A bin folder (first on PATH) whose cluster tools only record their arguments (one JSON list a line)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "calls.jsonl"
  for tool in CLUSTER_TOOLS:
    _write_exe(
      bin_dir / tool,
      f"""#!{sys.executable}
import json, os, sys
with open({str(log)!r}, "a") as f:
  f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
sys.exit(97)
""",
    )
  return bin_dir, log
