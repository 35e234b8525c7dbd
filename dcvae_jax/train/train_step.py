"""The compiled training program: train state, one train step, a scan of steps, many runs, data parallelism.

* The whole training set (uint8) lives on the devices; each step gathers its batch by index inside the
  compiled program (``input_pipeline.device_batch``), so input is never the bottleneck. The host only draws
  the (tiny) index arrays.
* ``train_step(setup, state, batch, stats, active, rng)`` updates one model; ``scan_steps`` fuses ``steps_per_call`` steps
  into one call with ``lax.scan``; ``jax.vmap`` (or ``lax.map``) over a leading model axis trains the many runs
  of a protocol (classes x seeds) at once; ``jax.jit`` with the batch axis sharded over a ``Mesh`` of all
  devices makes it data parallel (XLA inserts the gradient all-reduce; the loss is the mean over the *global*
  batch, so 1 and 8 devices compute the same thing).
* Randomness: run key = fold_in(PRNGKey(seed), run.uid); init key = fold_in(run key, -1); the keys of step s
  are split(fold_in(run key, s)) = (k_z, k_perm). A resumed run draws exactly the numbers an uninterrupted one
  would (docs/design.md "Randomness and exact resume").
* The FactorVAE / RF-VAE discriminator has its own params and optax state in the same ``TrainState``; both
  updates happen in the same compiled step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dcvae_jax.data import input_pipeline
from dcvae_jax.data.protocols import Run
from dcvae_jax.models import fast_ops, networks, objectives
from dcvae_jax.models import registry as models
from dcvae_jax.options import ENSEMBLE_MODES, LR_SCHEDULES, ON_NONFINITE, TC_SCOPES  # noqa: F401 (re-exported)
from dcvae_jax.validation import check_choice


class TrainState(struct.PyTreeNode):
  step: jnp.ndarray  # int32: steps taken by this run
  params: Any
  opt_state: Any
  disc_params: Any  # None for models without a discriminator
  disc_opt_state: Any
  rng: jnp.ndarray  # uint32 (2,): the run's root key
  skipped: jnp.ndarray  # int32: non-finite updates skipped (train.on_nonfinite = "skip")


@dataclasses.dataclass(frozen=True)
class ModelSetup:
  """Everything static that one model's compiled step needs (hashable pieces only used at trace time): the
  model's spec, modules and optimizers, its config section, and how its data is prepared."""

  spec: models.ModelSpec
  module: networks.VAE
  disc: networks.Discriminator | None  # FactorVAE / RF-VAE only
  tx: optax.GradientTransformation
  disc_tx: optax.GradientTransformation | None
  model_cfg: ml_collections.FrozenConfigDict  # config.model
  num_conditions: int
  binarize: bool
  dequantize: bool  # grey levels k -> (k + u) / 256, u ~ U(0, 1) in training, u = 1/2 in evaluation
  groups: int  # 1, or number of devices for tc_scope = "local"
  skip_nonfinite: bool


def make_optimizer(train_cfg, total_steps: int = 0):
  """Adam with train.lr_schedule: "constant" (train.learning_rate), or "warmup_cosine": linear warm-up from 0
  over train.warmup_fraction of the steps, then cosine decay to train.final_lr_fraction x the peak rate at
  ``total_steps`` (the longest run of the program). The schedule only changes the step size: the state
  tree is the same for any total_steps, so a checkpoint restores with any value."""
  check_choice(train_cfg.lr_schedule, LR_SCHEDULES, "train.lr_schedule")
  if train_cfg.lr_schedule == "constant":
    return optax.adam(train_cfg.learning_rate)
  total = max(int(total_steps), 2)
  warmup = min(max(int(round(float(train_cfg.warmup_fraction) * total)), 1), total - 1)
  lr = optax.warmup_cosine_decay_schedule(
    0.0,
    train_cfg.learning_rate,
    warmup,
    total,
    end_value=train_cfg.learning_rate * float(train_cfg.final_lr_fraction),
  )
  return optax.adam(lr)


def make_setup(config, image_shape, num_conditions: int, num_devices: int, total_steps: int = 0) -> ModelSetup:
  """The static pieces of one config's step (``validation.validate`` has checked the config)."""
  spec = models.get_model(config.model.name)
  module = models.make_module(spec, config.model, image_shape, num_conditions)
  disc = models.make_discriminator(spec, config.model) if spec.discriminator else None
  return ModelSetup(
    spec=spec,
    module=module,
    disc=disc,
    tx=make_optimizer(config.train, total_steps),
    disc_tx=optax.adam(config.train.disc_learning_rate, b1=0.5, b2=0.9) if disc else None,
    model_cfg=ml_collections.FrozenConfigDict(config.model),
    num_conditions=num_conditions,
    binarize=bool(config.data.binarize),
    dequantize=bool(config.data.dequantize),
    groups=num_devices if config.model.tc_scope == "local" else 1,
    skip_nonfinite=config.train.on_nonfinite == "skip",
  )


def run_key(run: Run):
  return jax.random.fold_in(jax.random.PRNGKey(run.seed), run.uid)


def init_state(setup: ModelSetup, key, image_shape) -> TrainState:
  """A fresh state for one run; ``key`` is the run's root key."""
  init_key = jax.random.fold_in(key, -1 & 0x7FFFFFFF)
  k_vae, k_disc = jax.random.split(init_key)
  x = jnp.zeros((2, *image_shape), jnp.float32)
  ids = jnp.zeros((2,), jnp.int32)
  c = objectives.one_hot_condition(setup.spec, ids, setup.num_conditions)
  params = setup.module.init(k_vae, x, c, ids)
  disc_params = disc_opt = None
  if setup.disc is not None and setup.disc_tx is not None:
    disc_params = setup.disc.init(k_disc, jnp.zeros((2, setup.model_cfg.latent_dim)))
    disc_opt = setup.disc_tx.init(disc_params)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=setup.tx.init(params),
    disc_params=disc_params,
    disc_opt_state=disc_opt,
    rng=key,
    skipped=jnp.zeros((), jnp.int32),
  )


def _all_finite(tree):
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves])) if leaves else jnp.array(True)


def step_keys(state: TrainState, active):
  """The keys of the steps of one call: step s uses fold_in(run key, step number) -> (k_z, k_perm)."""
  steps = state.step + jnp.cumsum(active.astype(jnp.int32)) - active.astype(jnp.int32)
  return jax.vmap(lambda s: jax.random.split(jax.random.fold_in(state.rng, s)))(steps)


def train_step(setup: ModelSetup, state: TrainState, batch: objectives.Batch, stats: objectives.DataStats, active, rng):
  """One update of one model: (state, terms). ``active`` is False for padding steps past the run's end; ``rng``
  is the key of the discriminator's dimension permutation."""

  def loss_fn(params):
    return objectives.model_loss(setup, params, batch, stats, state.disc_params)

  (_, (terms, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
  new = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
  terms["grad_norm"] = fast_ops.global_norm(grads)
  if setup.disc is not None:
    new, disc_terms = discriminator_step(setup, new, objectives.discriminator_input(setup.spec, out), rng)
    terms.update(disc_terms)
  return commit(setup, state, new, terms, active)


def discriminator_step(setup: ModelSetup, state: TrainState, z, rng):
  """One update of the FactorVAE / RF-VAE discriminator on the (stopped-gradient) codes z: (state, terms)."""
  disc, disc_tx = setup.disc, setup.disc_tx
  assert disc is not None and disc_tx is not None, "a model with a discriminator"
  z = jax.lax.stop_gradient(z)
  (loss, acc), grads = jax.value_and_grad(lambda p: objectives.discriminator_loss(disc, p, z, rng), has_aux=True)(
    state.disc_params
  )
  updates, opt_state = disc_tx.update(grads, state.disc_opt_state, state.disc_params)
  state = state.replace(disc_params=optax.apply_updates(state.disc_params, updates), disc_opt_state=opt_state)
  return state, dict(disc_loss=loss, disc_acc=acc, disc_grad_norm=fast_ops.global_norm(grads))


def commit(setup: ModelSetup, old: TrainState, new: TrainState, terms: dict, active):
  """The one place non-finite updates are handled. A step is finite when every loss term and gradient norm is
  (a non-finite gradient makes its norm non-finite; finite gradients give a finite Adam update).
  train.on_nonfinite="skip": an inactive or non-finite step keeps ``old`` (a select over the state) and is
  counted in ``skipped``; "stop": ``new`` is kept as is, and the host stops at the call holding the first
  non-finite step and discards that call's state (``scan_steps`` keeps padding steps out)."""
  finite = _all_finite({k: v for k, v in terms.items() if k != "disc_acc"})
  if setup.skip_nonfinite:
    new = jax.tree.map(lambda a, b: jnp.where(active & finite, a, b), new, old)
  skipped = old.skipped + (active & ~finite).astype(jnp.int32)
  new = new.replace(step=old.step + active.astype(jnp.int32), skipped=skipped)
  return new, {**terms, "finite": finite, "skipped": skipped}


def scan_steps(setup: ModelSetup, state, x_all, cond_all, idx, stats, active):
  """steps_per_call steps in one lax.scan: idx (S, B), active (S,) -> (state, terms with leading S).

  stats: dict(dataset_size, condition_counts) of the run. param_norm is logged once per call (the norm after
  its last step), broadcast over the call's steps."""
  keys = step_keys(state, active)
  eps = fast_ops.normals_ahead(keys[:, 0], (idx.shape[-1], setup.model_cfg.latent_dim))
  data_stats = objectives.DataStats(**stats)

  def step(s, inputs):
    idx_s, active_s, keys_s, eps_s = inputs
    images = input_pipeline.device_batch(
      x_all,
      cond_all,
      idx_s,
      keys_s[0],
      binarize=setup.binarize,
      dequantize=setup.dequantize,
      image_shape=setup.module.image_shape,
    )
    batch = objectives.Batch(x=images["x"], cond=images["cond"], eps=eps_s)
    return train_step(setup, s, batch, data_stats, active_s, keys_s[1])

  def body(s, inputs):
    if setup.skip_nonfinite:
      return step(s, inputs)
    return fast_ops.skip_when_inactive(step, s, inputs, inputs[1])

  state, terms = jax.lax.scan(body, state, (idx, active, keys, eps))
  terms["param_norm"] = jnp.broadcast_to(fast_ops.global_norm(state.params), active.shape)
  return state, terms


def resolve_ensemble(mode: str, platform: str | None = None) -> str:
  """train.ensemble -> "vmap" or "map". "auto": map on CPU, vmap on accelerators.

  On CPU one model's step already keeps the cores busy, and XLA:CPU's batched matmuls are slower per FLOP than
  its plain ones, so batching runs does not pay there; it pays where one small model leaves an accelerator idle
  (the measurements: benchmarks/README.md, benchmarks/ensemble.py)."""
  if mode != "auto":
    return mode
  return "map" if (platform or jax.default_backend()) == "cpu" else "vmap"


def compile_train_fn(setup: ModelSetup, mesh: Mesh, ensemble: str = "vmap"):
  """jit(vmap(scan(train_step))) over models; the batch axis (last of idx) is sharded over ``mesh``.

  ensemble="map" loops over the models inside the program (lax.map) instead of batching them.
  With a single model the model axis is dropped inside the program instead of vmapped: XLA:CPU otherwise
  computes every weight gradient transposed and transposes it again in each consumer."""
  one = functools.partial(scan_steps, setup)
  many: Callable[..., Any]
  if ensemble == "vmap":
    many = jax.vmap(one, in_axes=(0, None, 0, 0, 0, 0))
  elif ensemble == "map":

    def map_models(state, x_all, cond_all, idx, stats, active):
      return jax.lax.map(lambda a: one(a[0], x_all, *a[1:]), (state, cond_all, idx, stats, active))

    many = map_models
  else:
    raise ValueError(f"ensemble must be 'vmap' or 'map', got {ensemble!r}")

  def fn(state, x_all, cond_all, idx, stats, active):
    if idx.shape[0] != 1:
      return many(state, x_all, cond_all, idx, stats, active)
    first = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
    out = one(first(state), x_all, first(cond_all), idx[0], first(stats), active[0])
    return jax.tree.map(lambda a: a[None], out)

  replicated = NamedSharding(mesh, P())
  idx_sharding = NamedSharding(mesh, P(None, None, "data"))
  return jax.jit(
    fn,
    in_shardings=(replicated, replicated, replicated, idx_sharding, replicated, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )


def stack_states(states: Sequence[TrainState]) -> TrainState:
  return jax.tree.map(lambda *a: jnp.stack(a), *states)


def unstack(tree, i: int):
  return jax.tree.map(lambda a: a[i], tree)
