"""The ``latent_knn`` score: how far an image's code lies from the codes of the normal training images.

  latent_knn_c(x) = (1/k) sum_{j in N_k(x, c)} || mu(x, c) - mu(x_j, c) ||_2

mu is the encoder mean and N_k(x, c) the k codes of B_c nearest to mu(x, c) (k = eval.knn_neighbours; the default
1 is the distance to the nearest code). A larger k averages over a neighbourhood: one stray normal code lying near
an anomaly's code then moves the score less. The bank B_c holds the run's normal training images of condition c,
each encoded under its own class (an unconditional model has one bank, every normal training image of the run).
A conditional model gets one column per normal condition, reduced over conditions like every other score
(scoring.reduce_conditions: ``min`` by default); the all-zero condition's column (read only by score_condition
"given") has no bank and is NaN.

A reference image (the normal training images that standardise sap_knn and sap_complexity_knn) is itself in the
bank: its own entry is left out, so its value is its distance to the nearest *other* training code, as a new
normal image's would be (leave-one-out neighbours). Without that, every reference value at k = 1 would be 0.

The score looks at where the encoder puts an image, not at how well it is reconstructed: a held-out class that
the decoder reconstructs well (a shirt among T-shirts, pullovers and coats) can still land between the normal
classes' codes, and the reverse. The sums with rapp_sap (and complexity) are in anomaly_scores.

Distances are exact (float64 differences of float32 codes, no approximate search): the bank is every normal
training image of the run (at most the training split) and a code has latent_dim entries, so N images cost
N x |bank| x d multiply-adds on the host, in row chunks of CHUNK.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from dcvae_jax.evaluators import latents
from dcvae_jax.evaluators.scoring import ScoringSetup
from dcvae_jax.models import inference

CHUNK = 512  # query rows per distance block: CHUNK x |bank| float64 values at a time


def nearest_distance(codes, bank, exclude=None, k: int = 1) -> np.ndarray:
  """Mean Euclidean distance from each row of ``codes`` (N, d) to its ``k`` nearest rows of ``bank`` (n, d):
  float64 (N,). k = 1: the distance to the nearest row.

  ``exclude`` (N,) int: the bank row each query must not be matched with (its own entry), -1 for none. A query
  with fewer than k usable rows averages the ones it has; none (an empty bank, or one whose only row is excluded)
  gives inf. Rows with a non-finite code give NaN."""
  codes = np.asarray(codes, np.float64)
  bank = np.asarray(bank, np.float64)
  k = int(k)
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}")
  n = codes.shape[0]
  finite = np.isfinite(codes).all(axis=1)
  out = np.full((n,), np.inf)
  usable = np.isfinite(bank).all(axis=1)  # a non-finite bank code is never anyone's neighbour
  if n and usable.any():
    bank = np.where(usable[:, None], bank, 0.0)
    sq_bank = np.where(usable, np.einsum("ij,ij->i", bank, bank), np.inf)
    kk = min(k, bank.shape[0])
    for start in range(0, n, CHUNK):
      q = np.where(finite[start : start + CHUNK, None], codes[start : start + CHUNK], 0.0)
      d2 = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ bank.T) + sq_bank[None]
      if exclude is not None:
        ex = np.asarray(exclude[start : start + CHUNK])
        rows = np.flatnonzero(ex >= 0)
        d2[rows, ex[rows]] = np.inf
      if kk == 1:
        near = np.argmin(d2, axis=1)[:, None]
      else:
        near = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
      found = np.isfinite(np.take_along_axis(d2, near, axis=1))  # (rows, kk): excluded / unusable rows are inf
      diff = q[:, None, :] - bank[near]  # the neighbours' distances as direct differences: no cancellation near 0
      dist = np.where(found, np.sqrt(np.sum(diff * diff, axis=2)), 0.0)
      count = found.sum(axis=1)
      out[start : start + CHUNK] = np.where(count > 0, dist.sum(axis=1) / np.maximum(count, 1), np.inf)
  return np.where(finite, out, np.nan)


@functools.lru_cache(maxsize=4)
def _encode_fn(setup: ScoringSetup, mesh):
  return latents.compile_encode_fn(setup, mesh)


def encode(setup, params, x, conditions, mesh, *, batch_size: int) -> np.ndarray:
  """Encoder means float32 (M, N, d) of uint8 images ``x`` (N, ...) under every stacked model, with condition ids
  ``conditions`` (M, N) (ignored by an unconditional model). One compiled program per setting (cached)."""
  fn = _encode_fn(ScoringSetup.of(setup), mesh)
  x = np.asarray(x)
  m = conditions.shape[0]
  if x.shape[0] == 0:
    return np.zeros((m, 0, int(setup.model_cfg.latent_dim)), np.float32)
  mu = inference.map_batches(
    lambda i, xb, cb: fn(params, xb, cb),
    [(x, 0), (np.asarray(conditions, np.int32), 1)],
    mesh=mesh,
    batch_size=batch_size,
  )
  return np.asarray(mu, np.float32)


def build_banks(setup, params, x_train, y_train, runs, orders, mesh, *, batch_size: int) -> list[dict]:
  """Each run's bank: dict(codes float32 (n, d), cond int32 (n,)) of its normal training images in the order
  ``orders[m]`` (indices into x_train: detection.normal_train_order, so the reference images are its first
  rows), each encoded under its own class's condition (0 for an unconditional model)."""
  union = np.unique(np.concatenate([np.asarray(o) for o in orders]))
  cond = latents.condition_ids(runs, y_train[union])  # (M, U): a normal image's own condition
  if not setup.spec.conditional:
    cond = np.zeros_like(cond)
  codes = encode(setup, params, x_train[union], cond, mesh, batch_size=batch_size)
  where = np.searchsorted(union, np.concatenate([np.asarray(o) for o in orders]))
  banks, start = [], 0
  for m, order in enumerate(orders):
    pos = where[start : start + len(order)]
    start += len(order)
    banks.append({"codes": codes[m, pos], "cond": cond[m, pos].astype(np.int32)})
  return banks


def knn_scores(
  setup, params, x, banks, mesh, *, batch_size: int, per_model_images: bool = False, exclude=None, neighbours: int = 1
):
  """latent_knn of images under every stacked model and normal condition: float64 (M, N, C'), the layout of the
  device scores (C' = 1 unconditional; else one column per normal condition and a NaN all-zero column).

  ``x``: uint8 (N, ...) scored by every model, or (M, N, ...) with ``per_model_images`` (model m scores x[m]).
  ``banks``: :func:`build_banks`. ``exclude`` (M, N) int or None: the bank row (an index into banks[m]) that
  image n of model m is, -1 for none (the reference images). ``neighbours``: k of :func:`nearest_distance`."""
  m = len(banks)
  conditional = bool(setup.spec.conditional)
  num_cond = int(setup.num_conditions) if conditional else 1
  n = x.shape[1] if per_model_images else x.shape[0]
  out = np.full((m, n, num_cond + int(conditional)), np.nan)
  for c in range(num_cond):
    ids = np.full((m, n), c, np.int32)
    if per_model_images:
      codes = np.stack(
        [encode(setup, _model(params, k), x[k], ids[k : k + 1], mesh, batch_size=batch_size)[0] for k in range(m)]
      )
    else:
      codes = encode(setup, params, x, ids, mesh, batch_size=batch_size)
    for k in range(m):
      rows = np.flatnonzero(banks[k]["cond"] == c) if conditional else np.arange(banks[k]["codes"].shape[0])
      ex = None
      if exclude is not None:  # global bank row -> its position among this condition's rows, or -1
        lookup = np.full(banks[k]["codes"].shape[0], -1, np.int64)
        lookup[rows] = np.arange(rows.size)
        ex = np.where(exclude[k] >= 0, lookup[np.maximum(exclude[k], 0)], -1)
      out[k, :, c] = nearest_distance(codes[k], banks[k]["codes"][rows], exclude=ex, k=neighbours)
  return out


def _model(params, k: int):
  return jax.tree.map(lambda a: a[k : k + 1], params)
