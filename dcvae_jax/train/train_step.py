"""The compiled training program: train state, one train step, a scan of steps, many runs, data parallelism.

* The whole training set (uint8) lives on the devices; each step gathers its batch by index inside the
  compiled program (``input_pipeline.device_batch``), so input is never the bottleneck. The host only draws
  the (tiny) index arrays.
* ``train_step(setup, state, batch, rng)`` updates one model; ``scan_steps`` fuses ``steps_per_call`` steps
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
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dcvae_jax.data import input_pipeline
from dcvae_jax.data.protocols import Run
from dcvae_jax.models import fast_ops, objectives
from dcvae_jax.models import registry as models


class TrainState(struct.PyTreeNode):
  step: jnp.ndarray  # int32: steps taken by this run
  params: Any
  opt_state: Any
  disc_params: Any  # None for models without a discriminator
  disc_opt_state: Any
  rng: jnp.ndarray  # uint32 (2,): the run's root key
  skipped: jnp.ndarray  # int32: non-finite updates skipped (train.on_nonfinite = "skip")


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything static a compiled step needs (hashable pieces only used at trace time)."""

  spec: models.ModelSpec
  module: Any
  disc: Any
  tx: Any
  disc_tx: Any
  hp: Any  # config.model (a frozen ConfigDict)
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
  name = train_cfg.get("lr_schedule", "constant")
  if name == "constant":
    return optax.adam(train_cfg.learning_rate)
  if name == "warmup_cosine":
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
  raise ValueError(f"train.lr_schedule must be 'constant' or 'warmup_cosine', got {name!r}")


def make_setup(config, image_shape, num_conditions: int, num_devices: int, total_steps: int = 0) -> Setup:
  """The static pieces of one config's step (``validation.validate`` has checked the config)."""
  import ml_collections

  spec = models.get_model(config.model.name)
  module = models.make_module(spec, config.model, image_shape, num_conditions)
  disc = models.make_discriminator(config.model) if spec.discriminator else None
  return Setup(
    spec=spec,
    module=module,
    disc=disc,
    tx=make_optimizer(config.train, total_steps),
    disc_tx=optax.adam(config.train.disc_learning_rate, b1=0.5, b2=0.9) if disc else None,
    hp=ml_collections.FrozenConfigDict(config.model),
    num_conditions=num_conditions,
    binarize=bool(config.data.binarize),
    dequantize=bool(config.data.get("dequantize", False)),
    groups=num_devices if config.model.tc_scope == "local" else 1,
    skip_nonfinite=config.train.on_nonfinite == "skip",
  )


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


def train_step(setup: Setup, state: TrainState, batch: dict, rng):
  """One update of one model. Returns (state, terms).

  batch: x (B, H, W, 1) float, cond (B,) condition ids, eps (B, d) the reparameterisation noise, dataset_size N
  and condition_counts (C,) of this run's training data, active (False for padding steps past this run's end).
  rng: the key of the discriminator's dimension permutation.
  With train.on_nonfinite="skip" an inactive or non-finite step returns the state unchanged (a select over
  the state); otherwise the update is applied as is, ``scan_steps`` keeps padding steps out, and the host
  stops at the first non-finite step, discarding that call's state. A step is finite when every loss term
  and the gradient norm are (a non-finite gradient makes the norm non-finite; finite gradients give a finite
  Adam update), so no extra pass over the parameters is needed.
  """
  x, cond, active = batch["x"], batch["cond"], batch["active"]

  def loss_fn(params):
    return objectives.model_loss(
      setup.spec,
      setup.module,
      params,
      x,
      cond,
      None,
      hp=setup.hp,
      num_conditions=setup.num_conditions,
      dataset_size=batch["dataset_size"],
      condition_counts=batch["condition_counts"],
      groups=setup.groups,
      disc=setup.disc,
      disc_params=state.disc_params,
      eps=batch["eps"],
    )

  (_, (terms, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
  new = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
  terms["grad_norm"] = fast_ops.global_norm(grads)
  finite = _all_finite(terms)
  if setup.disc is not None:
    z = jax.lax.stop_gradient(objectives.discriminator_input(setup.spec, out))
    (d_loss, d_acc), d_grads = jax.value_and_grad(
      lambda p: objectives.discriminator_loss(setup.disc, p, z, rng), has_aux=True
    )(state.disc_params)
    d_updates, d_opt = setup.disc_tx.update(d_grads, state.disc_opt_state, state.disc_params)
    new = new.replace(disc_params=optax.apply_updates(state.disc_params, d_updates), disc_opt_state=d_opt)
    terms.update(disc_loss=d_loss, disc_acc=d_acc, disc_grad_norm=fast_ops.global_norm(d_grads))
    finite &= jnp.isfinite(d_loss) & jnp.isfinite(terms["disc_grad_norm"])
  if setup.skip_nonfinite:
    new = jax.tree.map(lambda a, b: jnp.where(active & finite, a, b), new, state)
  skipped = state.skipped + (active & ~finite).astype(jnp.int32)
  new = new.replace(step=state.step + active.astype(jnp.int32), skipped=skipped)
  terms["finite"] = finite
  terms["skipped"] = skipped
  return new, terms


def scan_steps(setup: Setup, state, x_all, cond_all, idx, stats, active):
  """steps_per_call steps in one lax.scan: idx (S, B), active (S,) -> (state, terms with leading S).

  stats: dict(dataset_size, condition_counts) of the run. param_norm is logged once per call (the norm after
  its last step), broadcast over the call's steps."""
  keys = step_keys(state, active)
  eps = fast_ops.normals_ahead(keys[:, 0], (idx.shape[-1], setup.hp.latent_dim))

  def step(s, inputs):
    idx_s, active_s, keys_s, eps_s = inputs
    batch = input_pipeline.device_batch(
      x_all,
      cond_all,
      idx_s,
      keys_s[0],
      binarize=setup.binarize,
      dequantize=setup.dequantize,
      image_shape=setup.module.image_shape,
    )
    batch.update(stats, eps=eps_s, active=active_s)
    return train_step(setup, s, batch, keys_s[1])

  def body(s, inputs):
    if setup.skip_nonfinite:
      return step(s, inputs)
    return fast_ops.skip_when_inactive(step, s, inputs, inputs[1])

  state, terms = jax.lax.scan(body, state, (idx, active, keys, eps))
  terms["param_norm"] = jnp.broadcast_to(fast_ops.global_norm(state.params), active.shape)
  return state, terms


ENSEMBLE_MODES = ("auto", "vmap", "map")
LR_SCHEDULES = ("constant", "warmup_cosine")
TC_SCOPES = ("global", "local")  # model.tc_scope
ON_NONFINITE = ("stop", "skip")  # train.on_nonfinite


def resolve_ensemble(mode: str, platform: str | None = None) -> str:
  """train.ensemble -> "vmap" or "map". "auto": map on CPU, vmap on accelerators.

  On CPU one model's step already keeps the cores busy (about half the matmul peak), and XLA:CPU's batched
  matmuls are slower per FLOP than its plain ones: ten vmapped runs measured 0.65-1.16x the speed of ten
  single-run programs (MLP 512-256 to 64-32), ten mapped runs 0.93-1.07x (benchmarks/ensemble.py). Batching
  pays where one small model leaves an accelerator idle."""
  if mode != "auto":
    return mode
  return "map" if (platform or jax.default_backend()) == "cpu" else "vmap"


def compile_train_fn(setup: Setup, mesh: Mesh, ensemble: str = "vmap"):
  """jit(vmap(scan(train_step))) over models; the batch axis (last of idx) is sharded over ``mesh``.

  ensemble="map" loops over the models inside the program (lax.map) instead of batching them.
  With a single model the model axis is dropped inside the program instead of vmapped: XLA:CPU otherwise
  computes every weight gradient transposed and transposes it again in each consumer."""
  one = functools.partial(scan_steps, setup)
  if ensemble == "vmap":
    many = jax.vmap(one, in_axes=(0, None, 0, 0, 0, 0))
  elif ensemble == "map":

    def many(state, x_all, cond_all, idx, stats, active):
      return jax.lax.map(lambda a: one(a[0], x_all, *a[1:]), (state, cond_all, idx, stats, active))
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
