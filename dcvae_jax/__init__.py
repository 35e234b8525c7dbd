"""dcvae_jax: disentangled (conditional) VAEs as unsupervised anomaly detectors, in JAX/Flax."""

__version__ = "0.1.0"
