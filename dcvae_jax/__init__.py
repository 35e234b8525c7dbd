"""dcvae_jax: disentangled (conditional) VAEs as unsupervised anomaly detectors, in JAX/Flax.

``dcvae_jax.Detector`` (dcvae_jax/detector.py) is the detector as one object with scikit-learn / PyOD methods;
it is imported on first use, so ``import dcvae_jax`` does not start JAX."""

__version__ = "0.1.0"
__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
  if name == "Detector":
    from dcvae_jax.detector import Detector

    return Detector
  raise AttributeError(f"module 'dcvae_jax' has no attribute {name!r}")


def __dir__():
  return sorted(__all__)
