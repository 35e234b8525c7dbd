"""Input pipeline: uint8 images to model inputs, and which examples each run trains on in which order.

* ``preprocess``: uint8 -> float in [0, 1], binarised or dequantised (the one place that does it).
* ``device_batch``: inside the compiled step, gather a batch from the on-device training set and preprocess it.
* ``RunData``: the host-side batch sampler of one run (uniform or stratified batches), a pure function of
  (seed, run uid, epoch), so a resumed run draws the batches an uninterrupted one would (docs/design.md
  "Batch sampling").
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dcvae_jax.data.protocols import Run, condition_ids
from dcvae_jax.errors import ConfigError
from dcvae_jax.options import BATCH_SAMPLING, sampling_options  # noqa: F401 (re-exported)
from dcvae_jax.validation import check_choice, check_stratified


def with_channels(x, image_shape=None):
  """Images (..., H, W) (grey) or (..., H, W, C) -> (..., H, W, C) for the model's ``image_shape`` (H, W, C);
  None: grey images, a channel axis is appended. A grey image may come with or without its channel axis."""
  if image_shape is None:
    return x[..., None]
  shape = tuple(int(s) for s in image_shape)
  if tuple(x.shape[-3:]) == shape:
    return x
  if shape[-1] == 1 and tuple(x.shape[-2:]) == shape[:2]:
    return x[..., None]
  raise ValueError(f"images of shape {tuple(x.shape)} do not end in the model's image shape {shape}")


def preprocess(x_uint8, binarize: bool, dequantize: bool = False, noise=None, image_shape=None):
  """uint8 (..., H, W[, C]) -> float32 (..., H, W, C) in [0, 1]; binarised at 0.5 if asked (the paper does).
  ``image_shape``: the model's (H, W, C) (:func:`with_channels`; None: grey (..., H, W) images).

  dequantize: grey level k -> (k + u) / 256 with u = ``noise`` (U(0, 1), training) or 1/2 (evaluation), so a
  density on [0, 1] is a density of the 8-bit image: P(k) ~ p((k + 1/2) / 256) / 256 per pixel."""
  if dequantize:
    u = 0.5 if noise is None else noise
    return with_channels((x_uint8.astype(jnp.float32) + u) / 256.0, image_shape)
  x = x_uint8.astype(jnp.float32) / 255.0
  if binarize:
    x = (x > 0.5).astype(jnp.float32)
  return with_channels(x, image_shape)


def device_batch(x_all, cond_all, idx, key, *, binarize: bool, dequantize: bool, image_shape=None):
  """The batch ``idx`` (B,) of the on-device uint8 training set x_all (N, H, W[, C]) and condition ids cond_all
  (N,): dict(x=float (B, H, W, C), cond=int (B,)). Dequantisation noise is U(0, 1) from fold_in(key, 1)."""
  noise = None
  if dequantize:
    noise = jax.random.uniform(jax.random.fold_in(key, 1), idx.shape + x_all.shape[1:])
  return {"x": preprocess(x_all[idx], binarize, dequantize, noise, image_shape), "cond": cond_all[idx]}


def condition_counts(run: Run, y_train: np.ndarray) -> np.ndarray:
  """float32 (C,): the number of training examples of each of the run's normal classes (N_c)."""
  ids = condition_ids(run, y_train, missing=len(run.normal))
  return np.bincount(ids[ids < len(run.normal)], minlength=len(run.normal)).astype(np.float32)


def mean_group_size(
  counts,
  batch_size: int,
  *,
  conditional: bool,
  sampling: str = "uniform",
  per_condition: int = 0,
  groups: int = 1,
) -> float:
  """Mean over a batch's anchors of M_i, the number of batch members (the anchor included) whose codes enter
  anchor i's minibatch MI / TC / dimension-wise KL estimate (``estimators``). Small M_i bias those estimates
  (docs/results/estimator_bias.md gives the bias as a function of M).

  counts: (C,) training examples per condition N_c, N = sum_c N_c. The batch of B = batch_size is split into
  ``groups`` equal shards (model.tc_scope="local": one per device), B' = B / groups.
    unconditional estimates: M = B';
    conditional, stratified batches: M = per_condition exactly;
    conditional, uniform batches (a uniform permutation cut into batches): the B' - 1 other members of an
      anchor of condition c are drawn without replacement from the N - 1 other examples, N_c - 1 of which
      share c, so E[M] = 1 + (B' - 1) sum_c N_c (N_c - 1) / (N (N - 1)); C equal classes: about 1 + (B' - 1) / C.
  """
  shard = int(batch_size) // max(int(groups), 1)
  if not conditional:
    return float(shard)
  if sampling == "stratified":
    return float(per_condition)
  n_c = np.asarray(counts, np.float64)
  n = n_c.sum()
  return float(1.0 + (shard - 1) * np.sum(n_c * (n_c - 1)) / (n * (n - 1)))


@dataclasses.dataclass
class RunData:
  """A run's training data: indices into the training set and condition ids (position in run.normal), and the
  order in which the run sees them (``batch_indices``: a pure function of (seed, run uid, epoch), so a resumed
  run draws the batches an uninterrupted one would).

  sampling="uniform": epoch e is a uniform permutation of the run's examples, cut into batches (the remainder of
  fewer than batch_size examples is left out). sampling="stratified": each batch holds per_condition examples of
  each of conditions_per_batch distinct conditions, laid out as consecutive groups. Epoch e permutes each class's
  examples and cuts them into chunks of per_condition (a class's remainder is left out); steps_per_epoch S is the
  largest number of batches of conditions_per_batch chunks of distinct conditions the chunk counts allow (at most
  S chunks of one class, sum_c min(chunks_c, S) >= conditions_per_batch x S); classes with the most chunks give
  up the excess. The kept chunks, listed class after class in a random class order, go round-robin into the S
  batches (so no batch holds two chunks of a class), then the chunks in every batch and the batches are shuffled.
  With balanced classes an epoch sees every example once up to the remainders."""

  run: Run
  indices: np.ndarray  # int32 (N_run,)
  cond_all: np.ndarray  # int32 (N_train,): condition id of every training example (0 where not normal)
  condition_counts: np.ndarray  # float32 (C,)
  steps_per_epoch: int
  total_steps: int
  sampling: str = "uniform"
  per_condition: int = 0  # stratified: examples of each condition in a batch
  conditions_per_batch: int = 0  # stratified: distinct conditions in a batch
  chunks_per_epoch: np.ndarray | None = dataclasses.field(default=None, repr=False)  # stratified: (C,) kept
  _epoch: int = dataclasses.field(default=-1, repr=False)
  _perm: np.ndarray | None = dataclasses.field(default=None, repr=False)

  @classmethod
  def build(
    cls,
    run: Run,
    y_train: np.ndarray,
    batch_size: int,
    num_epochs: int,
    *,
    sampling: str = "uniform",
    per_condition: int = 0,
    conditions_per_batch: int = 0,
  ) -> RunData:
    """``sampling`` and the rest: see ``sampling_options`` (``validation.validate`` checks the config first)."""
    cond_all = condition_ids(run, y_train, missing=0)
    indices = np.flatnonzero(np.isin(y_train, run.normal)).astype(np.int32)
    if indices.size == 0:
      raise ConfigError(f"run {run.name}: no training examples of the normal classes {list(run.normal)}")
    if indices.size < batch_size:
      raise ConfigError(
        f"run {run.name}: only {indices.size} normal training examples, fewer than train.batch_size={batch_size}"
      )
    counts = condition_counts(run, y_train)
    make = functools.partial(cls, run=run, indices=indices, cond_all=cond_all, condition_counts=counts)
    if sampling == "uniform":
      spe = indices.size // batch_size
      return make(steps_per_epoch=spe, total_steps=spe * int(num_epochs))
    check_choice(sampling, BATCH_SAMPLING, "train.batch_sampling")
    p, k = int(per_condition), int(conditions_per_batch)
    check_stratified(batch_size, p, k)
    if k > len(run.normal):
      raise ConfigError(
        f"run {run.name}: train.conditions_per_batch={k} exceeds its {len(run.normal)} normal condition(s)"
      )
    chunks = counts.astype(np.int64) // p
    spe = int(chunks.sum()) // k
    while spe > 0 and np.minimum(chunks, spe).sum() < k * spe:
      spe -= 1
    if spe == 0:
      raise ConfigError(
        f"run {run.name}: no stratified batch of {k} conditions x {p} examples can be formed "
        f"(examples per condition: {counts.astype(int).tolist()})"
      )
    kept = np.minimum(chunks, spe)
    for _ in range(int(kept.sum()) - k * spe):  # give up the excess from the classes with the most chunks
      kept[np.argmax(kept)] -= 1
    return make(
      steps_per_epoch=spe,
      total_steps=spe * int(num_epochs),
      sampling="stratified",
      per_condition=p,
      conditions_per_batch=k,
      chunks_per_epoch=kept,
    )

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The training-set indices of epoch ``epoch``, batch after batch (steps_per_epoch x batch_size of them
    for stratified sampling, all N_run for uniform)."""
    rng = np.random.default_rng([self.run.seed, self.run.uid, epoch])
    if self.sampling == "uniform":
      return self.indices[rng.permutation(self.indices.size)]
    p, s = self.per_condition, self.steps_per_epoch
    if self.chunks_per_epoch is None:
      raise ValueError("stratified sampling without chunks_per_epoch: build the RunData with RunData.build")
    chunks = self.chunks_per_epoch
    cond = self.cond_all[self.indices]
    listed = []
    for c in rng.permutation(self.condition_counts.size):
      members = self.indices[cond == c]
      members = members[rng.permutation(members.size)]
      listed.append(members[: int(chunks[c]) * p].reshape(-1, p))
    rows = np.concatenate(listed)  # (k S, p), one class after another
    batches = rows.reshape(self.conditions_per_batch, s, p).transpose(1, 0, 2)  # chunk j -> batch j mod S
    batches = np.take_along_axis(
      batches, rng.permuted(np.tile(np.arange(self.conditions_per_batch), (s, 1)), axis=1)[:, :, None], axis=1
    )
    return batches[rng.permutation(s)].reshape(-1)

  def batch_indices(self, step: int, batch_size: int) -> np.ndarray:
    """Indices of this run's batch at ``step`` (the order of its epoch: ``epoch_order``)."""
    epoch, pos = divmod(step, self.steps_per_epoch)
    perm = self._perm
    if perm is None or self._epoch != epoch:
      perm = self._perm = self.epoch_order(epoch)
      self._epoch = epoch
    return perm[pos * batch_size : (pos + 1) * batch_size]
