"""Anomaly scores beyond the paper's: importance-weighted bound, input complexity, RaPP. Larger = more anomalous.

Pure functions of arrays and apply functions; ``scoring.py`` runs them on a trained model and a test set. The math:
docs/design.md "Anomaly scores".

* ``iwae``: -log p_K(x), with the importance-weighted bound (Burda et al. 2016)
      log p_K(x) = log (1/K) sum_k p(x | z_k [,c]) p(z_k [|c]) / q(z_k | x [,c]),   z_k ~ q(z | x [,c]),
  a lower bound on log p(x) that rises with K. The K samples are drawn in chunks of ``chunk`` (memory:
  chunk x batch x pixels) and combined with a running logsumexp.
* ``complexity`` (Serra et al. 2020): S(x) = -log2 P(x) - L(x), L(x) the length in bits of x under a lossless
  compressor (PNG, or JPEG 2000: eval.complexity_compressor). -log2 P(x) is the iwae bound in bits, plus
  D log2(bins) when p is a density on [0, 1]: a pixel's bin of width 1/bins has probability p / bins.
* ``rapp`` (Kim et al. 2020): with x_hat = E[x | z = mu(x)] and h_0 = x, h_1..h_L the encoder's hidden
  activations and mu, the differences d(x) = concat_l (h_l(x) - h_l(x_hat)) give
      SAP(x) = ||d(x)||^2,    NAP(x) = ||(d(x) - m) V diag(1/s)||^2,
  where m, V, s are the mean, right singular vectors and singular values of d over normal training images
  (from the eigendecomposition of the smaller Gram matrix in float64, :func:`principal_directions`).
* ``sap_complexity``: z(SAP) + z(complexity), each a robust z-score (median, MAD) on normal training images.
"""

from __future__ import annotations

import io
import math

import jax
import jax.numpy as jnp
import numpy as np

from dcvae_jax.models import estimators


def iwae_noise(key, shape, *, num_samples: int, chunk: int, dtype=jnp.float32):
  """The standard normal noise eps (K, *shape) of :func:`iwae_nll`: chunk i of ``chunk`` samples is
  normal(k_i, (chunk, *shape)) with k_i the i-th of split(key, K / chunk). K = num_samples must be a multiple of
  ``chunk``."""
  if num_samples % chunk:
    raise ValueError(f"iwae samples {num_samples} is not a multiple of the chunk {chunk}")
  keys = jax.random.split(key, num_samples // chunk)
  eps = jax.lax.map(lambda k: normal_flat(k, (chunk, *shape), dtype), keys)
  return eps.reshape((num_samples, *shape))


def normal_flat(key, shape, dtype=jnp.float32):
  """jax.random.normal(key, shape), drawn as one flat vector and reshaped: the same numbers (JAX's threefry numbers
  a draw's elements in row-major order, tests/test_scoring_equivalence.py), and XLA:CPU compiles a flat draw
  several times faster than one of two or three dimensions (the counters of every dimension are built apart)."""
  return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def iwae_combine(log_w, *, chunk: int):
  """-log (1/K) sum_k w_k from log w (K, B): a logsumexp within each chunk of ``chunk`` samples, then over the
  chunks (the order :func:`iwae_nll` adds them in). Returns (B,)."""
  k = log_w.shape[0]
  per_chunk = jax.nn.logsumexp(log_w.reshape((k // chunk, chunk, *log_w.shape[1:])), axis=1)
  return -(jax.nn.logsumexp(per_chunk, axis=0) - math.log(k))


def iwae_nll(log_joint_minus_q, key, mu, logvar, *, num_samples: int, chunk: int):
  """-log (1/K) sum_k w_k with log w_k = ``log_joint_minus_q(z_k, log q(z_k|x))``, z_k = mu + sigma eps_k.

  ``log_joint_minus_q(z, log_q)`` maps codes (S, B, d) to log p(x, z) - log q(z|x) of shape (S, B); it is called
  once per chunk of ``chunk`` samples (memory: chunk x batch x pixels). eps: :func:`iwae_noise`. K = num_samples
  must be a multiple of ``chunk``. Returns (B,)."""
  eps = iwae_noise(key, mu.shape, num_samples=num_samples, chunk=chunk, dtype=mu.dtype)
  std = jnp.exp(0.5 * logvar)

  def one(e):
    log_q = estimators.own_sample_log_density(e, logvar).sum(-1)
    return log_joint_minus_q(mu + std * e, log_q)

  log_w = jax.lax.map(one, eps.reshape((num_samples // chunk, chunk, *mu.shape)))
  return iwae_combine(log_w.reshape((num_samples, *log_w.shape[2:])), chunk=chunk)


def rapp_differences(hidden_x, hidden_recon, x, x_hat):
  """d(x) = concat(x - x_hat, h_1(x) - h_1(x_hat), ..., mu(x) - mu(x_hat)), each flattened: (B, D)."""
  b = x.shape[0]
  parts = [(x - x_hat).reshape((b, -1))]
  parts += [(a - r).reshape((b, -1)) for a, r in zip(hidden_x, hidden_recon, strict=True)]
  return jnp.concatenate(parts, axis=-1)


def sap(d):
  """Simple aggregation along pathway: sum of squared differences over every layer. (B, D) -> (B,)."""
  return jnp.sum(jnp.square(d), axis=-1)


def nap(d, nap_stats):
  """Normalised aggregation along pathway: ||(d - m) V / s||^2 with ``nap_stats`` = dict(mean (D,),
  basis (D, k), inv_scale (k,)) from :func:`fit_nap` (directions with ~0 spread have inv_scale 0).

  The projection runs at HIGHEST precision: at DEFAULT a TPU rounds a float32 matmul's inputs to bfloat16
  (8 bits of mantissa), and 1/s amplifies that error most in the directions of least spread."""
  proj = jnp.matmul(d - nap_stats["mean"], nap_stats["basis"], precision=jax.lax.Precision.HIGHEST)
  return jnp.sum(jnp.square(proj * nap_stats["inv_scale"]), axis=-1)


def principal_directions(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Singular values s (r,), descending, and right singular vectors V (D, r) of a centred matrix X (n, D),
  without its SVD: from the eigendecomposition (float64) of the smaller Gram matrix,

      D' <= n:  X'^T X' = V' diag(s^2) V'^T                      (D' x D', V' = V on the live columns)
      n <  D':  X' X'^T = U diag(s^2) U^T,   v_j = X'^T u_j / ||X'^T u_j||   (s_j > 1e-12 s_1, else 0)

  where X' drops the columns that are identically zero (a dead unit: no spread, no direction; V is zero there)
  and r = min(n, D'). Eigenvalues below 0 (rounding) count as 0. The answer is the SVD's up to each vector's
  sign, at about a third of its cost (benchmarks/README.md), and up to rounding: the Gram matrix squares the
  condition number, so a direction at 1e-5 of the largest singular value (NAP's cut-off) carries ~1e-6
  relative error, below what the float32 NAP score itself carries (tests/evaluators/test_scoring_cost.py)."""
  x = np.asarray(centred, np.float64)
  n, dim = x.shape
  live = np.flatnonzero(np.any(x != 0.0, axis=0))
  x = x[:, live]
  r = min(n, live.size)
  v = np.zeros((dim, r), np.float64)
  if r == 0:
    return np.zeros((0,), np.float64), v
  if live.size <= n:
    lam, vecs = np.linalg.eigh(x.T @ x)
    v[live] = vecs[:, ::-1]
  else:
    lam, u = np.linalg.eigh(x @ x.T)
    u = u[:, ::-1]
    w = x.T @ u
    norms = np.linalg.norm(w, axis=0)
    ok = (np.sqrt(np.clip(lam[::-1], 0.0, None)) > 1e-12 * np.sqrt(max(lam[-1], 0.0))) & (norms > 0)
    w[:, ok] /= norms[ok]
    w[:, ~ok] = 0.0
    v[live] = w
  s = np.sqrt(np.clip(lam[::-1], 0.0, None))
  return s, v


def fit_nap(d_train: np.ndarray, rank: int | None = None, rtol: float = 1e-5) -> dict:
  """NAP's normalisation from training differences (n, D): m = mean, (d - m) = U diag(s) V^T.

  Returns basis V (D, k) and inv_scale 1/s (k,), with k = ``rank`` (default min(n, D)); a direction whose
  singular value is below rtol x the largest, or past the data's rank, gets inv_scale 0 (and a zero basis
  column when k exceeds the number of directions), so the shapes do not depend on the data. s and V come from
  :func:`principal_directions` (the SVD's up to signs, which NAP does not see).

  Rows with a non-finite entry (a diverged model) are left out. With fewer than two finite rows there is no
  spread to normalise by: every statistic is NaN, so NAP is NaN for every image, and the run's ``rapp_nonfinite``
  and the summary's ``nonfinite_by_score`` count them (an all-zero fit would make NAP 0 for every image, silently).
  The statistics are float32 (what the device reads), computed in float64 whatever the input's dtype."""
  d_train = np.asarray(d_train, np.float64)
  n, dim = d_train.shape
  k = min(n, dim) if rank is None else int(rank)
  d_train = d_train[np.all(np.isfinite(d_train), axis=1)]
  if d_train.shape[0] < 2:
    return {
      "mean": np.full((dim,), np.nan, np.float32),
      "basis": np.full((dim, k), np.nan, np.float32),
      "inv_scale": np.full((k,), np.nan, np.float32),
    }
  mean = d_train.mean(axis=0)
  s, v = principal_directions(d_train - mean)
  basis = np.zeros((dim, k), np.float64)
  inv = np.zeros((k,), np.float64)
  m = min(k, s.size)
  basis[:, :m] = v[:, :m]
  keep = s[:m] > rtol * max(s[0], 1e-30) if s.size else np.zeros((0,), bool)
  inv[:m] = np.where(keep, 1.0 / np.where(keep, s[:m], 1.0), 0.0)
  return {"mean": mean.astype(np.float32), "basis": basis.astype(np.float32), "inv_scale": inv.astype(np.float32)}


_PIL_FORMAT = {"png": ("PNG", {}), "jpeg2000": ("JPEG2000", {"irreversible": False})}


def length_bits(images: np.ndarray, compressor: str) -> np.ndarray:
  """L(x): bits of each uint8 image under a lossless ``compressor`` (Pillow). (N,) float64.

  "png": an 8-bit PNG at Pillow's default compression (stages 1-13). "jpeg2000": a lossless JPEG 2000 codestream
  (OpenJPEG, the reversible 5/3 wavelet), one of the compressors Serra et al. (ICLR 2020) compared. Which one
  makes the better score is measured, not argued: docs/results/validation.md, stage 14. Both are lossless (x is
  decoded back exactly from the bits); a fixed-size header shifts every L(x) alike.

  images: (N, H, W) or (N, H, W, 1) grey (8-bit grey), or (N, H, W, 3) colour (8-bit RGB; Pillow reads the mode
  from the uint8 array's shape). JPEG 2000's options name its reversible transform, Pillow's default too."""
  from PIL import Image

  if compressor not in _PIL_FORMAT:
    raise ValueError(f"unknown compressor {compressor!r}: expected one of {', '.join(_PIL_FORMAT)}")
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"length_bits needs uint8 images, got {images.dtype}")
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
    raise ValueError(f"length_bits needs images (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {images.shape}")
  fmt, options = _PIL_FORMAT[compressor]

  def bits(img) -> float:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **options)
    return 8.0 * buf.getbuffer().nbytes

  return np.array([bits(img) for img in images])  # float64 (N,), also for N = 0


def png_bits(images: np.ndarray) -> np.ndarray:
  """L(x) under PNG: ``length_bits(images, "png")``."""
  return length_bits(images, "png")


def model_view_images(x_uint8: np.ndarray, binarize: bool) -> np.ndarray:
  """The 8-bit image the model sees: binarised images as 0 / 255, grey images as they are."""
  x = np.asarray(x_uint8)
  return np.where(x > 127, 255, 0).astype(np.uint8) if binarize else x.astype(np.uint8)


def density_offset_bits(num_pixels: int, *, is_continuous: bool, dequantize: bool) -> float:
  """D log2(bins): from a density on [0, 1] to the probability of the pixels' bins (256 when dequantised,
  else grey levels k / 255, bins of width 1/255). 0 for a discrete likelihood."""
  if not is_continuous:
    return 0.0
  return num_pixels * math.log2(256.0 if dequantize else 255.0)


def complexity(iwae_nats: np.ndarray, length_bits: np.ndarray, offset_bits: float) -> np.ndarray:
  """S(x) = -log2 P(x) - L(x) = iwae / ln 2 + offset - L."""
  return np.asarray(iwae_nats, np.float64) / math.log(2.0) + offset_bits - np.asarray(length_bits, np.float64)


def robust_standardise(values, reference) -> np.ndarray:
  """(v - median(ref)) / (1.4826 MAD(ref)): a z-score whose scale comes from the normal reference images."""
  ref = np.asarray(reference, np.float64)
  ref = ref[np.isfinite(ref)]
  if ref.size == 0:
    return np.full(np.shape(values), np.nan)
  med = np.median(ref)
  mad = 1.4826 * np.median(np.abs(ref - med))
  return (np.asarray(values, np.float64) - med) / max(mad, 1e-12)


def standardised_sum(*pairs) -> np.ndarray:
  """sum_i z_i(v_i) over (values v_i, reference r_i) pairs, z_i = robust_standardise(v_i, r_i): scores of
  different units summed on the scale of the normal reference images (no anomaly is looked at)."""
  if not pairs:
    raise ValueError("standardised_sum needs at least one (values, reference) pair")
  total = robust_standardise(*pairs[0])
  for values, reference in pairs[1:]:
    total = total + robust_standardise(values, reference)
  return total


def sap_complexity(sap_values, complexity_values, sap_reference, complexity_reference) -> np.ndarray:
  """z(SAP) + z(complexity), each standardised on normal training images (robust_standardise).

  The two fail on disjoint images: SAP calls simple images (a "1") normal because they reconstruct well,
  complexity removes exactly that bias but is noisy where L(x) varies little. Standardising on normal data
  puts them on one scale without looking at any anomaly."""
  return standardised_sum((sap_values, sap_reference), (complexity_values, complexity_reference))


# The sums of standardised scores: name -> the reduced scores it adds up, each z-scored on its reference.
STANDARDISED_SUMS = {
  "sap_complexity": ("rapp_sap", "complexity"),
  "sap_knn": ("rapp_sap", "latent_knn"),
  "sap_complexity_knn": ("rapp_sap", "complexity", "latent_knn"),
}
