"""Input checks shared by the disentanglement metrics (:mod:`dcvae_jax.evaluators.disentangle.metrics` and the
modules it re-exports); kept apart so that those modules import it and not each other."""

from __future__ import annotations

import numpy as np

__all__ = ["check_inputs", "informative_factors"]


def check_inputs(codes, factors):
  """``(codes, factors)`` as float64 (N, d) and integer (N, K) arrays (a 1-D input is one column).

  Raises ``ValueError`` for arrays that are not 2-D, differ in N, have fewer than 2 rows,
  non-integer-valued factors, or non-finite codes.
  """
  codes = np.asarray(codes, dtype=np.float64)
  factors = np.asarray(factors)
  if codes.ndim == 1:
    codes = codes[:, None]
  if factors.ndim == 1:
    factors = factors[:, None]
  if codes.ndim != 2 or factors.ndim != 2:
    raise ValueError(f"codes and factors must be 2-D, got {codes.shape}, {factors.shape}")
  if codes.shape[0] != factors.shape[0]:
    raise ValueError(f"codes ({codes.shape[0]}) and factors ({factors.shape[0]}) differ in N")
  if codes.shape[0] < 2:
    raise ValueError("need at least 2 examples")
  if not np.issubdtype(factors.dtype, np.integer):
    if not np.all(np.equal(np.mod(factors, 1), 0)):
      raise ValueError("factors must be discrete (integer-valued)")
    factors = factors.astype(np.int64)
  if not np.all(np.isfinite(codes)):
    raise ValueError("codes contain non-finite values")
  return codes, factors


def informative_factors(factors: np.ndarray) -> np.ndarray:
  """Indices of factor columns with at least two distinct values."""
  return np.array([k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size > 1], dtype=np.int64)
