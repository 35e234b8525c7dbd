"""Test set-up: 8 fake CPU devices, no network, float32."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from dcvae_jax import xla_cache  # noqa: E402  (after the environment above: it imports JAX)

xla_cache.enable()  # compiled programs persist across test sessions (DCVAE_XLA_CACHE=0 turns it off)
