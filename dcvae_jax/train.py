"""Training: the train state, one train step, data parallelism, many runs at once, Orbax checkpoints.

Design:
* The whole training set (uint8) lives on the devices; each step gathers its batch by index inside the
  compiled program, so input is never the bottleneck. The host only draws the (tiny) index arrays.
* ``train_step(state, batch) -> (state, terms)`` for one model; ``lax.scan`` fuses ``steps_per_call`` steps into
  one call; ``jax.vmap`` over a leading model axis trains the many runs of a protocol (classes x seeds) at once;
  ``jax.jit`` with the batch axis sharded over a ``Mesh`` of all devices makes it data parallel (XLA inserts the
  gradient all-reduce; the loss is the mean over the *global* batch, so 1 and 8 devices compute the same thing).
* Randomness: run key = fold_in(PRNGKey(seed), run.uid); init key = fold_in(run key, -1); step key =
  fold_in(run key, step). The data order of epoch e is a permutation drawn from (seed, uid, e). So a resumed
  run draws exactly the numbers an uninterrupted one would.
* The FactorVAE / RF-VAE discriminator has its own params and optax state in the same ``TrainState``; both
  updates happen in the same compiled step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dcvae_jax import distributed, objectives
from dcvae_jax.messages import log as _log
from dcvae_jax.protocols import Run


class ConfigError(ValueError):
  """A config that cannot be trained as asked."""


class NonFiniteError(FloatingPointError):
  """A loss term or gradient became NaN/Inf."""


class Interrupted(KeyboardInterrupt):
  """SIGTERM / SIGINT arrived; a checkpoint was written before raising."""


class TrainState(struct.PyTreeNode):
  step: jnp.ndarray             # int32: steps taken by this run
  params: Any
  opt_state: Any
  disc_params: Any              # None for models without a discriminator
  disc_opt_state: Any
  rng: jnp.ndarray              # uint32 (2,): the run's root key
  skipped: jnp.ndarray          # int32: non-finite updates skipped (train.on_nonfinite = "skip")


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything static a compiled step needs (hashable pieces only used at trace time)."""
  spec: objectives.ModelSpec
  module: Any
  disc: Any
  tx: Any
  disc_tx: Any
  hp: Any                        # config.model (a frozen ConfigDict)
  num_conditions: int
  binarize: bool
  dequantize: bool               # grey levels k -> (k + u) / 256, u ~ U(0, 1) in training, u = 1/2 in evaluation
  groups: int                    # 1, or number of devices for tc_scope = "local"
  skip_nonfinite: bool


def make_optimizer(train_cfg, total_steps: int = 0):
  """Adam with train.lr_schedule: "constant" (train.learning_rate), or "warmup_cosine": linear warm-up from 0
  over train.warmup_fraction of the steps, then cosine decay to train.final_lr_fraction x the peak rate at
  ``total_steps`` (the longest run of the program). The schedule only changes the step size: the state
  tree is the same for any total_steps, so a checkpoint restores with any value."""
  name = train_cfg.get("lr_schedule", "constant")
  if name == "constant":
    return optax.adam(train_cfg.learning_rate)
  if name == "warmup_cosine":
    total = max(int(total_steps), 2)
    warmup = min(max(int(round(float(train_cfg.warmup_fraction) * total)), 1), total - 1)
    lr = optax.warmup_cosine_decay_schedule(0.0, train_cfg.learning_rate, warmup, total,
                                            end_value=train_cfg.learning_rate * float(train_cfg.final_lr_fraction))
    return optax.adam(lr)
  raise ConfigError(f"train.lr_schedule must be 'constant' or 'warmup_cosine', got {name!r}")


def make_setup(config, image_shape, num_conditions: int, num_devices: int, total_steps: int = 0) -> Setup:
  import ml_collections
  spec = objectives.get_model(config.model.name)
  module = objectives.make_module(spec, config.model, image_shape, num_conditions)
  disc = objectives.make_discriminator(config.model) if spec.discriminator else None
  scope = config.model.tc_scope
  if scope not in ("global", "local"):
    raise ConfigError(f"model.tc_scope must be 'global' or 'local', got {scope!r}")
  if config.train.on_nonfinite not in ("stop", "skip"):
    raise ConfigError(f"train.on_nonfinite must be 'stop' or 'skip', got {config.train.on_nonfinite!r}")
  if config.model.estimator not in ("mss", "mws"):
    raise ConfigError(f"model.estimator must be 'mss' or 'mws', got {config.model.estimator!r}")
  if config.model.likelihood not in objectives.LIKELIHOODS:
    raise ConfigError(f"model.likelihood must be one of {', '.join(objectives.LIKELIHOODS)}, "
                      f"got {config.model.likelihood!r}")
  if config.model.get("gaussian_variance", "fixed") not in objectives.GAUSSIAN_VARIANCES:
    raise ConfigError(f"model.gaussian_variance must be one of {', '.join(objectives.GAUSSIAN_VARIANCES)}, "
                      f"got {config.model.gaussian_variance!r}")
  if config.data.get("dequantize", False) and config.data.binarize:
    raise ConfigError("data.dequantize=True needs grey levels: set data.binarize=False")
  if config.model.arch not in ("mlp", "conv"):
    raise ConfigError(f"model.arch must be 'mlp' or 'conv', got {config.model.arch!r}")
  return Setup(spec=spec, module=module, disc=disc,
               tx=make_optimizer(config.train, total_steps),
               disc_tx=optax.adam(config.train.disc_learning_rate, b1=0.5, b2=0.9) if disc else None,
               hp=ml_collections.FrozenConfigDict(config.model), num_conditions=num_conditions,
               binarize=bool(config.data.binarize), dequantize=bool(config.data.get("dequantize", False)),
               groups=num_devices if scope == "local" else 1,
               skip_nonfinite=config.train.on_nonfinite == "skip")


def preprocess(x_uint8, binarize: bool, dequantize: bool = False, noise=None):
  """uint8 (..., H, W) -> float32 (..., H, W, 1) in [0, 1]; binarised at 0.5 if asked (the paper does).

  dequantize: grey level k -> (k + u) / 256 with u = ``noise`` (U(0, 1), training) or 1/2 (evaluation), so a
  density on [0, 1] is a density of the 8-bit image: P(k) ~ p((k + 1/2) / 256) / 256 per pixel."""
  if dequantize:
    u = 0.5 if noise is None else noise
    return ((x_uint8.astype(jnp.float32) + u) / 256.0)[..., None]
  x = x_uint8.astype(jnp.float32) / 255.0
  if binarize:
    x = (x > 0.5).astype(jnp.float32)
  return x[..., None]


def run_key(run: Run):
  return jax.random.fold_in(jax.random.PRNGKey(run.seed), run.uid)


def init_state(setup: Setup, key, image_shape) -> TrainState:
  """A fresh state for one run; ``key`` is the run's root key."""
  init_key = jax.random.fold_in(key, -1 & 0x7FFFFFFF)
  k_vae, k_disc = jax.random.split(init_key)
  x = jnp.zeros((2, *image_shape), jnp.float32)
  ids = jnp.zeros((2,), jnp.int32)
  c = objectives.one_hot_condition(setup.spec, ids, setup.num_conditions)
  params = setup.module.init(k_vae, x, c, ids)
  disc_params = disc_opt = None
  if setup.disc is not None:
    disc_params = setup.disc.init(k_disc, jnp.zeros((2, setup.hp.latent_dim)))
    disc_opt = setup.disc_tx.init(disc_params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=setup.tx.init(params),
                    disc_params=disc_params, disc_opt_state=disc_opt, rng=key,
                    skipped=jnp.zeros((), jnp.int32))


def global_norm(tree):
  """sqrt(sum of squares of every leaf) (optax.tree.norm), each leaf's sum of squares taken row by row with
  objectives.sum_per_example (a matvec: faster on XLA:CPU than a reduce_sum)."""
  total = jnp.zeros((), jnp.float32)
  for a in jax.tree.leaves(tree):
    sq = jnp.square(a.astype(jnp.float32)).reshape(a.shape[0] if a.ndim > 1 else 1, -1)
    total = total + jnp.sum(objectives.sum_per_example(sq))
  return jnp.sqrt(total)


def _all_finite(tree):
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves])) if leaves else jnp.array(True)


def step_keys(state: TrainState, active):
  """The keys of the steps of one call: step s uses fold_in(run key, step number) -> (k_z, k_perm)."""
  steps = state.step + jnp.cumsum(active.astype(jnp.int32)) - active.astype(jnp.int32)
  return jax.vmap(lambda s: jax.random.split(jax.random.fold_in(state.rng, s)))(steps)


def train_step(setup: Setup, state: TrainState, x_all, cond_all, idx, stats, active, keys, eps):
  """One update of one model on the batch ``x_all[idx]``. Returns (state, terms).

  stats: dict(dataset_size=N, condition_counts=(C,)) of this run's training data. active: bool, False for
  padding steps past this run's end. With train.on_nonfinite="skip" an inactive or non-finite step returns
  the state unchanged (a select over the state); otherwise the update is applied as is and the caller keeps
  padding steps out (_scan_steps runs them through lax.cond) and stops at the first non-finite step on the
  host, discarding that call's state. keys: (k_z, k_perm) of this step;
  eps = normal(k_z, (B, d)), drawn ahead of the scan loop (inside it XLA would fuse the generator into the
  (B, B, d) estimator and recompute it B times).
  A step is finite when every loss term and the gradient norm are (a non-finite gradient makes the norm
  non-finite; finite gradients give a finite Adam update), so no extra pass over the parameters is needed.
  """
  k_perm = keys[1]
  noise = None
  if setup.dequantize:
    noise = jax.random.uniform(jax.random.fold_in(keys[0], 1), idx.shape + x_all.shape[1:])
  x = preprocess(x_all[idx], setup.binarize, setup.dequantize, noise)
  cond = cond_all[idx]

  def loss_fn(params):
    return objectives.model_loss(setup.spec, setup.module, params, x, cond, None, hp=setup.hp,
                                 num_conditions=setup.num_conditions, dataset_size=stats["dataset_size"],
                                 condition_counts=stats["condition_counts"], groups=setup.groups,
                                 disc=setup.disc, disc_params=state.disc_params, eps=eps)

  (_, (terms, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
  new = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
  terms["grad_norm"] = global_norm(grads)
  finite = _all_finite(terms)
  if setup.disc is not None:
    z = jax.lax.stop_gradient(objectives.discriminator_input(setup.spec, out))
    (d_loss, d_acc), d_grads = jax.value_and_grad(
        lambda p: objectives.discriminator_loss(setup.disc, p, z, k_perm), has_aux=True)(state.disc_params)
    d_updates, d_opt = setup.disc_tx.update(d_grads, state.disc_opt_state, state.disc_params)
    new = new.replace(disc_params=optax.apply_updates(state.disc_params, d_updates), disc_opt_state=d_opt)
    terms.update(disc_loss=d_loss, disc_acc=d_acc, disc_grad_norm=global_norm(d_grads))
    finite &= jnp.isfinite(d_loss) & jnp.isfinite(terms["disc_grad_norm"])
  if setup.skip_nonfinite:
    new = jax.tree.map(lambda a, b: jnp.where(active & finite, a, b), new, state)
  skipped = state.skipped + (active & ~finite).astype(jnp.int32)
  new = new.replace(step=state.step + active.astype(jnp.int32), skipped=skipped)
  terms["finite"] = finite
  terms["skipped"] = skipped
  return new, terms


def _scan_steps(setup: Setup, state, x_all, cond_all, idx, stats, active):
  """steps_per_call steps in one lax.scan: idx (S, B), active (S,) -> (state, terms with leading S).

  param_norm is logged once per call (the norm after its last step), broadcast over the call's steps."""
  keys = step_keys(state, active)
  eps = jax.vmap(lambda k: jax.random.normal(k, (idx.shape[-1], setup.hp.latent_dim)))(keys[:, 0])

  def step(s, inputs):
    return train_step(setup, s, x_all, cond_all, inputs[0], stats, *inputs[1:])

  def body(s, inputs):
    if setup.skip_nonfinite:
      return step(s, inputs)
    # Padding steps skip the update through a conditional rather than a select over the whole state: a
    # select keeps the old and new state alive together, and XLA copies every parameter and optimizer
    # buffer each step to allow it (~6% of the step on CPU). Under vmap the cond becomes that select again.
    terms_shape = jax.eval_shape(step, s, inputs)[1]
    idle = lambda s: (s, jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), terms_shape))  # noqa: E731
    return jax.lax.cond(inputs[1], lambda s: step(s, inputs), idle, s)
  state, terms = jax.lax.scan(body, state, (idx, active, keys, eps))
  terms["param_norm"] = jnp.broadcast_to(global_norm(state.params), active.shape)
  return state, terms


def make_mesh(devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices, ("data",))


ENSEMBLE_MODES = ("auto", "vmap", "map")


def resolve_ensemble(mode: str, platform: str | None = None) -> str:
  """train.ensemble -> "vmap" or "map". "auto": map on CPU, vmap on accelerators.

  On CPU one model's step already keeps the cores busy (about half the matmul peak), and XLA:CPU's batched
  matmuls are slower per FLOP than its plain ones: ten vmapped runs measured 0.65-1.16x the speed of ten
  single-run programs (MLP 512-256 to 64-32), ten mapped runs 0.93-1.07x (benchmarks/ensemble.py). Batching
  pays where one small model leaves an accelerator idle."""
  if mode not in ENSEMBLE_MODES:
    raise ConfigError(f"train.ensemble must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
  if mode != "auto":
    return mode
  return "map" if (platform or jax.default_backend()) == "cpu" else "vmap"


def compile_train_fn(setup: Setup, mesh: Mesh, ensemble: str = "vmap"):
  """jit(vmap(scan(train_step))) over models; the batch axis (last of idx) is sharded over ``mesh``.

  ensemble="map" loops over the models inside the program (lax.map) instead of batching them.
  With a single model the model axis is dropped inside the program instead of vmapped: XLA:CPU otherwise
  computes every weight gradient transposed and transposes it again in each consumer."""
  one = functools.partial(_scan_steps, setup)
  if ensemble == "vmap":
    many = jax.vmap(one, in_axes=(0, None, 0, 0, 0, 0))
  elif ensemble == "map":
    def many(state, x_all, cond_all, idx, stats, active):
      return jax.lax.map(lambda a: one(a[0], x_all, *a[1:]), (state, cond_all, idx, stats, active))
  else:
    raise ConfigError(f"ensemble must be 'vmap' or 'map', got {ensemble!r}")

  def fn(state, x_all, cond_all, idx, stats, active):
    if idx.shape[0] != 1:
      return many(state, x_all, cond_all, idx, stats, active)
    first = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
    out = one(first(state), x_all, first(cond_all), idx[0], first(stats), active[0])
    return jax.tree.map(lambda a: a[None], out)
  replicated = NamedSharding(mesh, P())
  idx_sharding = NamedSharding(mesh, P(None, None, "data"))
  return jax.jit(fn, in_shardings=(replicated, replicated, replicated, idx_sharding, replicated, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


# ----------------------------------------------------------------------------------------------------------
# Host side: which examples each run trains on, and in which order.

BATCH_SAMPLING = ("uniform", "stratified")


def sampling_options(config, num_devices: int = 1) -> dict:
  """train.batch_sampling, train.per_condition, train.conditions_per_batch -> RunData.build keyword arguments.

  "uniform": every epoch is a uniform permutation of the run's examples cut into batches.
  "stratified": every batch holds ``per_condition`` examples of each of ``conditions_per_batch`` distinct
  conditions (batch_size = conditions_per_batch x per_condition; either may be 0 = derived from the other), so
  every group of a conditional estimator has exactly per_condition members. With model.tc_scope="local" the
  batch is split into num_devices consecutive shards, each of which must hold whole groups
  (conditions_per_batch divisible by the number of devices). Raises ConfigError (one line) otherwise."""
  t = config.train
  mode = t.get("batch_sampling", "uniform")
  if mode not in BATCH_SAMPLING:
    raise ConfigError(f"train.batch_sampling must be one of {', '.join(BATCH_SAMPLING)}, got {mode!r}")
  if mode == "uniform":
    return dict(sampling="uniform")
  batch, p, k = int(t.batch_size), int(t.get("per_condition", 0)), int(t.get("conditions_per_batch", 0))
  if p < 0 or k < 0 or (p == 0 and k == 0):
    raise ConfigError("train.batch_sampling='stratified' needs train.per_condition or train.conditions_per_batch "
                      f">= 1, got per_condition={p}, conditions_per_batch={k}")
  p0, k0 = p, k
  p, k = p or batch // k, k or batch // max(p, 1)
  if p < 1 or k < 1 or p * k != batch:
    raise ConfigError(f"train.batch_sampling='stratified' needs train.batch_size = train.conditions_per_batch x "
                      f"train.per_condition, got batch_size={batch}, conditions_per_batch={k0}, per_condition={p0}"
                      + (" (0 = batch_size / the other, which must divide it)" if 0 in (p0, k0) else ""))
  shards = int(num_devices) if config.model.get("tc_scope", "global") == "local" else 1
  if k % shards:
    raise ConfigError(f"model.tc_scope='local' splits each batch over {shards} devices, so "
                      f"train.conditions_per_batch={k} must be a multiple of {shards} (whole groups per device)")
  return dict(sampling="stratified", per_condition=p, conditions_per_batch=k)


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
  indices: np.ndarray          # int32 (N_run,)
  cond_all: np.ndarray         # int32 (N_train,): condition id of every training example (0 where not normal)
  condition_counts: np.ndarray  # float32 (C,)
  steps_per_epoch: int
  total_steps: int
  sampling: str = "uniform"
  per_condition: int = 0        # stratified: examples of each condition in a batch
  conditions_per_batch: int = 0  # stratified: distinct conditions in a batch
  chunks_per_epoch: np.ndarray | None = dataclasses.field(default=None, repr=False)  # stratified: (C,) kept
  _epoch: int = dataclasses.field(default=-1, repr=False)
  _perm: np.ndarray | None = dataclasses.field(default=None, repr=False)

  @classmethod
  def build(cls, run: Run, y_train: np.ndarray, batch_size: int, num_epochs: int, *, sampling: str = "uniform",
            per_condition: int = 0, conditions_per_batch: int = 0) -> "RunData":
    """``sampling`` and the rest: see ``sampling_options`` (which validates a config and returns them)."""
    lookup = np.zeros(int(max(y_train.max(), max(run.normal))) + 1, np.int32)
    lookup[list(run.normal)] = np.arange(len(run.normal), dtype=np.int32)
    indices = np.flatnonzero(np.isin(y_train, run.normal)).astype(np.int32)
    if indices.size == 0:
      raise ConfigError(f"run {run.name}: no training examples of the normal classes {list(run.normal)}")
    if indices.size < batch_size:
      raise ConfigError(f"run {run.name}: only {indices.size} normal training examples, fewer than "
                        f"train.batch_size={batch_size}")
    counts = np.bincount(lookup[y_train[indices]], minlength=len(run.normal)).astype(np.float32)
    common = dict(run=run, indices=indices, cond_all=lookup[y_train], condition_counts=counts)
    if sampling == "uniform":
      spe = indices.size // batch_size
      return cls(**common, steps_per_epoch=spe, total_steps=spe * int(num_epochs))
    if sampling != "stratified":
      raise ConfigError(f"train.batch_sampling must be one of {', '.join(BATCH_SAMPLING)}, got {sampling!r}")
    p, k = int(per_condition), int(conditions_per_batch)
    if p < 1 or k < 1 or p * k != batch_size:
      raise ConfigError(f"stratified batches need batch_size = conditions_per_batch x per_condition, got "
                        f"{batch_size} != {k} x {p}")
    if k > len(run.normal):
      raise ConfigError(f"run {run.name}: train.conditions_per_batch={k} exceeds its {len(run.normal)} normal "
                        "condition(s)")
    chunks = counts.astype(np.int64) // p
    spe = int(chunks.sum()) // k
    while spe > 0 and np.minimum(chunks, spe).sum() < k * spe:
      spe -= 1
    if spe == 0:
      raise ConfigError(f"run {run.name}: no stratified batch of {k} conditions x {p} examples can be formed "
                        f"(examples per condition: {counts.astype(int).tolist()})")
    kept = np.minimum(chunks, spe)
    for _ in range(int(kept.sum()) - k * spe):  # give up the excess from the classes with the most chunks
      kept[np.argmax(kept)] -= 1
    return cls(**common, steps_per_epoch=spe, total_steps=spe * int(num_epochs), sampling="stratified",
               per_condition=p, conditions_per_batch=k, chunks_per_epoch=kept)

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The training-set indices of epoch ``epoch``, batch after batch (steps_per_epoch x batch_size of them
    for stratified sampling, all N_run for uniform)."""
    rng = np.random.default_rng([self.run.seed, self.run.uid, epoch])
    if self.sampling == "uniform":
      return self.indices[rng.permutation(self.indices.size)]
    p, s = self.per_condition, self.steps_per_epoch
    cond = self.cond_all[self.indices]
    listed = []
    for c in rng.permutation(self.condition_counts.size):
      members = self.indices[cond == c]
      members = members[rng.permutation(members.size)]
      listed.append(members[:int(self.chunks_per_epoch[c]) * p].reshape(-1, p))
    listed = np.concatenate(listed)                        # (k S, p), one class after another
    batches = listed.reshape(self.conditions_per_batch, s, p).transpose(1, 0, 2)  # chunk j -> batch j mod S
    batches = np.take_along_axis(batches, rng.permuted(np.tile(np.arange(self.conditions_per_batch), (s, 1)),
                                                       axis=1)[:, :, None], axis=1)
    return batches[rng.permutation(s)].reshape(-1)

  def batch_indices(self, step: int, batch_size: int) -> np.ndarray:
    """Indices of this run's batch at ``step`` (the order of its epoch: ``epoch_order``)."""
    epoch, pos = divmod(step, self.steps_per_epoch)
    if self._epoch != epoch:
      self._perm, self._epoch = self.epoch_order(epoch), epoch
    return self._perm[pos * batch_size:(pos + 1) * batch_size]


def stack_states(states: Sequence[TrainState]) -> TrainState:
  return jax.tree.map(lambda *a: jnp.stack(a), *states)


def unstack(tree, i: int):
  return jax.tree.map(lambda a: a[i], tree)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints.

def checkpoint_manager(directory: str, keep: int):
  """An Orbax CheckpointManager whose checkpoints hold two items: ``state`` (the TrainState: parameters,
  optimizer and discriminator state, step, rng) and ``meta`` (JSON: step, train_seconds). Saves are async; use
  it as a context manager, whose exit waits for the last save."""
  import orbax.checkpoint as ocp
  options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "meta"))


def restore_latest(manager, target: TrainState, log=_log, *, with_meta: bool = False):
  """Restore the newest checkpoint that reads back; fall back to older ones. Returns (state, step), or
  (state, step, meta) with ``with_meta``; (None, None[, {}]) when there is none. Raises CheckpointError when
  every checkpoint is damaged."""
  import orbax.checkpoint as ocp
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return (None, None, {}) if with_meta else (None, None)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  errors = []
  for step in steps:
    try:
      if os.path.isdir(os.path.join(str(manager.directory), str(step), "state")):
        got = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                            meta=ocp.args.JsonRestore()))
        state, meta = got.state, dict(got.meta or {})
      else:
        state, meta = _restore_single_item(manager.directory, step, abstract)
      if errors:
        log(f"warning: checkpoint(s) {', '.join(e for e in errors)} damaged; restored step {step}")
      return (state, step, meta) if with_meta else (state, step)
    except Exception as e:  # noqa: BLE001 - any failure to read means this checkpoint is unusable
      errors.append(f"{step} ({type(e).__name__})")
  raise CheckpointError(f"no readable checkpoint in {manager.directory}: damaged steps {', '.join(errors)}; "
                        "nothing was deleted")


def _restore_single_item(directory, step: int, abstract):
  """A checkpoint written before checkpoints had items (the state alone; train time in train_seconds.json)."""
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(os.path.abspath(str(directory))) as old:
    state = old.restore(step, args=ocp.args.StandardRestore(abstract))
  seconds = os.path.join(str(directory), "train_seconds.json")
  meta = {}
  if os.path.exists(seconds):
    with open(seconds) as f:
      meta = {"train_seconds": json.load(f).get(str(step), 0.0)}
  return state, meta


class CheckpointError(RuntimeError):
  """Every checkpoint in a directory is damaged."""


def save(manager, step: int, state: TrainState, meta: dict | None = None):
  """Starts an async save of ``state`` and ``meta`` (JSON) as checkpoint ``step``; returns once the arrays are
  on the host. The manager's exit (or ``wait_until_finished``) waits for it."""
  import orbax.checkpoint as ocp
  meta = {**(meta or {}), "step": int(step)}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
               force=True)


# ----------------------------------------------------------------------------------------------------------
# The loop.

class _StopFlag:
  """SIGTERM / SIGINT become a stop that the loop checks between compiled calls, at the same call on every
  process.

  One process: a signal handler sets the flag. Several processes (jax.distributed with its preemption service):
  SIGTERM is left to JAX's preemption notifier, and Orbax's ``reached_preemption`` tells every process at the
  same call that one of them was told to stop, so all save the same step (a process that stopped alone would
  leave the others waiting in the save's collectives); SIGINT is turned into a SIGTERM to this process to take
  the same way.
  """

  def __init__(self, manager=None):
    self.signum = None
    self._old = {}
    self._manager = manager
    self._calls = 0
    self._agree = (manager is not None and jax.process_count() > 1
                   and bool(jax.config.jax_enable_preemption_service))

  def __enter__(self):
    for sig in (signal.SIGINT,) if self._agree else (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self._agree:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier
    else:
      self.signum = signum

  def should_stop(self) -> bool:
    """Every process calls this once per compiled call; True on all of them at the same call."""
    if self._agree:
      self._calls += 1  # the sync protocol wants a counter that grows by one per call
      if self._manager.reached_preemption(self._calls):
        self.signum = signal.SIGTERM
    return self.signum is not None

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _describe_nonfinite(terms_host, m, s):
  bad = [k for k, v in terms_host.items() if k not in ("finite", "skipped") and not np.isfinite(v[m, s])]
  return ", ".join(bad) if bad else "gradients"


_COMPILED: dict = {}


def _compiled(config, image_shape, num_conditions: int, mesh: Mesh, ensemble: str, total_steps: int = 0):
  """(Setup, jitted train fn), shared by every group of runs with the same settings: a protocol trained in
  several programs (train.runs_per_program) compiles once per group size, not once per group."""
  key = (config.model.to_json(sort_keys=True), config.train.to_json(sort_keys=True), bool(config.data.binarize),
         image_shape, num_conditions, tuple(d.id for d in mesh.devices.flat), ensemble, total_steps)
  if key not in _COMPILED:
    if len(_COMPILED) >= 8:
      _COMPILED.pop(next(iter(_COMPILED)))
    setup = make_setup(config, image_shape, num_conditions, mesh.devices.size, total_steps=total_steps)
    _COMPILED[key] = (setup, compile_train_fn(setup, mesh, ensemble))
  return _COMPILED[key]


def train_runs(config, x_train: np.ndarray, y_train: np.ndarray, runs: Sequence[Run], ckpt_dir: str,
               *, image_shape, num_conditions: int, log_file=None, mesh: Mesh | None = None, log=_log,
               tensorboard=None):
  """Trains ``runs`` in one program (train.ensemble: vmap or lax.map over runs) and returns (stacked TrainState, train seconds, step count).

  Resumes from the newest good checkpoint in ``ckpt_dir``; saves every ``train.checkpoint_every_steps``,
  on SIGTERM/SIGINT, and at the end. Metrics go to ``log_file`` (JSON lines) and ``tensorboard``
  (a summaries.TensorBoardWriter), either may be None.
  """
  mesh = mesh or make_mesh()
  ndev = mesh.devices.size
  batch_size = int(config.train.batch_size)
  if batch_size % ndev:
    raise ConfigError(f"train.batch_size={batch_size} is not divisible by the {ndev} devices")
  steps_per_call = max(int(config.train.steps_per_call), 1)
  ensemble = resolve_ensemble(config.train.get("ensemble", "auto"))
  sampling = sampling_options(config, ndev)
  datas = [RunData.build(r, y_train, batch_size, config.train.num_epochs, **sampling) for r in runs]
  max_steps = max(d.total_steps for d in datas)
  # Only a schedule needs the step count (so a constant rate shares one program across group sizes).
  schedule_steps = 0 if config.train.get("lr_schedule", "constant") == "constant" else max_steps
  setup, fn = _compiled(config, tuple(image_shape), num_conditions, mesh, ensemble, schedule_steps)

  replicated = NamedSharding(mesh, P())
  idx_sharding = NamedSharding(mesh, P(None, None, "data"))
  state = distributed.replicated(stack_states([init_state(setup, run_key(r), image_shape) for r in runs]),
                                 replicated)
  stats = dict(dataset_size=np.asarray([d.indices.size for d in datas], np.float32),
               condition_counts=np.stack([d.condition_counts for d in datas]))
  cond_all = np.stack([d.cond_all for d in datas])
  x_dev, cond_all, stats = distributed.replicated((x_train, cond_all, stats), replicated)
  primary = distributed.is_primary()

  with checkpoint_manager(ckpt_dir, config.train.keep_checkpoints) as manager:
    restored, _, meta = restore_latest(manager, state, log=log, with_meta=True)
    if restored is not None:
      state = restored
    start = int(np.max(distributed.to_host(state.step)))
    prior_seconds = float(meta.get("train_seconds", 0.0)) if start else 0.0
    if start >= max_steps:
      return state, prior_seconds, start
    if start:
      log(f"resuming {len(runs)} run(s) from step {start} of {max_steps}")

    progress = _progress(config, start, max_steps, len(runs)) if primary else None
    every = max(int(config.train.checkpoint_every_steps), 1)
    log_every = max(int(config.train.log_every_steps), 1)
    t0 = time.perf_counter()
    step = start
    last_saved = start

    def save_now(at):  # async: the manager's exit waits for the last save
      save(manager, at, state, {"train_seconds": prior_seconds + time.perf_counter() - t0})

    with _StopFlag(manager) as stop:
      while step < max_steps:
        steps = np.arange(step, step + steps_per_call)
        idx = np.zeros((len(runs), steps_per_call, batch_size), np.int32)
        active = np.zeros((len(runs), steps_per_call), bool)
        for m, d in enumerate(datas):
          for s_i, s in enumerate(steps):
            if s < d.total_steps:
              idx[m, s_i] = d.batch_indices(int(s), batch_size)
              active[m, s_i] = True
        new_state, terms = fn(state, x_dev, cond_all, distributed.batch_sharded(idx, idx_sharding, axis=2),
                              stats, distributed.replicated(active, replicated))
        terms_host = distributed.to_host(terms)
        bad = active & ~terms_host["finite"]
        if bad.any() and not setup.skip_nonfinite:
          m, s_i = np.argwhere(bad)[0]
          raise NonFiniteError(
              f"non-finite {_describe_nonfinite(terms_host, m, s_i)} at step {int(steps[s_i])} of run "
              f"{runs[m].name}; the last good checkpoint (step {last_saved}) is kept in {ckpt_dir}")
        state = new_state
        _write_metrics(log_file, runs, steps, active, terms_host, log_every, tensorboard)
        n_done = int(min(step + steps_per_call, max_steps)) - step
        step += n_done
        if progress is not None:
          progress.update(n_done)
          progress.set_postfix(loss=float(np.mean(terms_host["loss"][:, 0])))
        stopping = stop.should_stop()
        if step >= max_steps or step // every > last_saved // every or stopping:
          save_now(step)
          last_saved = step
        if stopping:
          raise Interrupted(f"stopped by signal {stop.signum} at step {step}; checkpoint saved in {ckpt_dir}")
    if progress is not None:
      progress.close()
    return state, prior_seconds + time.perf_counter() - t0, step


def _progress(config, start, total, n_runs):
  if not config.train.progress:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=start, desc=f"train {n_runs} run(s)", unit="step", leave=False)


def _write_metrics(log_file, runs, steps, active, terms_host, log_every, tensorboard=None):
  """Every log_every-th step's terms (and each run's last step): a JSON line each, and TensorBoard scalars."""
  if log_file is None and tensorboard is None:
    return
  keys = [k for k in terms_host if k != "finite"]
  for s_i, s in enumerate(steps):
    for m, run in enumerate(runs):
      last = s_i + 1 == len(steps) or not active[m, s_i + 1]
      if active[m, s_i] and ((s + 1) % log_every == 0 or last):
        rec = {"step": int(s) + 1, "run": run.name}
        values = {k: float(terms_host[k][m, s_i]) for k in keys}
        if log_file is not None:
          log_file.write(json.dumps({**rec, **values}) + "\n")
        if tensorboard is not None:
          tensorboard.scalars(run.name, int(s) + 1, values)
  if log_file is not None:
    log_file.flush()
  if tensorboard is not None:
    tensorboard.flush()


def _atomic_json(path, obj):
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)
