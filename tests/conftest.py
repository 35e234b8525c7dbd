"""Test set-up: 8 fake CPU devices, no network, float32."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from dcvae_jax import xla_cache  # noqa: E402  (after the environment above: it imports JAX)

xla_cache.enable()  # compiled programs persist across test sessions (DCVAE_XLA_CACHE=0 turns it off)

import pytest  # noqa: E402

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
