"""Where the time of our compiled train step goes: variants of the step, timed interleaved in one process.

  python benchmarks/step_variants.py --batch_size=64 --json=benchmarks/results/step_variants_b64.json

Every variant runs ``steps_per_call`` steps of the dcvae model (MLP 512-256, latent 10, MSS) in one jitted
lax.scan on one device; images/s are medians over interleaved repetitions, ratios are medians of the
per-repetition ratios against ``pipeline`` (exactly the pipeline's call, CompiledTrainer).

  pipeline            train.compile_train_fn: jit(vmap(scan(train.train_step))) with one model
  unvmapped           jit(scan(train.train_step)): the same step without the model axis
  scalar_guard        as unvmapped, but `finite` from the loss terms and the grad norm (scalars the step already
                      has) instead of is_finite over every gradient and new parameter; param_norm not computed.
                      Same semantics: a non-finite gradient makes grad_norm non-finite, finite grads give a finite
                      Adam update. (A proposal, see README.)
  scalar_guard_vmap   scalar_guard inside the pipeline's vmap over one model
  no_guard            value_and_grad + Adam, nothing else (no finite check, no norms, no select)
  no_guard_sgd        value_and_grad + plain SGD (no Adam)
  no_estimator        no_guard with loss = recon + KL (the MSS decomposition not computed)
  no_estimator_sgd    the network alone: recon + KL, SGD
  forward_only        the loss without gradients (lower bound of the forward pass)
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import benchutil  # noqa: E402
from common import CompiledTrainer, bench_config, machine, write_json  # noqa: E402
from dcvae_jax import estimators, objectives, train  # noqa: E402


def _batch(setup, state, x_all, cond_all, idx):
  x = train.preprocess(x_all[idx], setup.binarize)
  cond = cond_all[idx]
  k_z, _ = jax.random.split(jax.random.fold_in(state.rng, state.step))
  return x, cond, k_z


def _loss_fn(setup, x, cond, k_z, stats, estimator=True):
  def loss_fn(params):
    if estimator:
      loss, (terms, _) = objectives.model_loss(
          setup.spec, setup.module, params, x, cond, k_z, hp=setup.hp, num_conditions=setup.num_conditions,
          dataset_size=stats["dataset_size"], condition_counts=stats["condition_counts"], groups=setup.groups)
      return loss, terms
    out = objectives.forward(setup.spec, setup.module, params, x, cond, k_z, setup.num_conditions)
    rec = objectives.recon_nll(out["logits"], x, setup.hp.likelihood).mean()
    kl = estimators.kl_diag_gaussians(out["mu"], out["logvar"], out["prior_mu"], out["prior_logvar"]).sum(-1).mean()
    return rec + kl, dict(loss=rec + kl, recon=rec, kl=kl)
  return loss_fn


def lean_step(setup, state, x_all, cond_all, idx, stats, active, *, adam=True, estimator=True):
  x, cond, k_z = _batch(setup, state, x_all, cond_all, idx)
  (_, terms), grads = jax.value_and_grad(_loss_fn(setup, x, cond, k_z, stats, estimator), has_aux=True)(state.params)
  if adam:
    updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
  else:
    params, opt_state = jax.tree.map(lambda p, g: p - 1e-3 * g, state.params, grads), state.opt_state
  return state.replace(params=params, opt_state=opt_state, step=state.step + 1), terms


def forward_step(setup, state, x_all, cond_all, idx, stats, active):
  x, cond, k_z = _batch(setup, state, x_all, cond_all, idx)
  loss, terms = _loss_fn(setup, x, cond, k_z, stats)(state.params)
  return state.replace(step=state.step + 1), terms


def scalar_guard_step(setup, state, x_all, cond_all, idx, stats, active):
  """train.train_step with the finiteness test on scalars only (VAE models; no discriminator here)."""
  x, cond, k_z = _batch(setup, state, x_all, cond_all, idx)
  (_, terms), grads = jax.value_and_grad(_loss_fn(setup, x, cond, k_z, stats), has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(grad_norm)
  for v in terms.values():
    finite &= jnp.all(jnp.isfinite(v))
  updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
  new = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
  apply = active & (finite | (not setup.skip_nonfinite))
  new = jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, state)
  skipped = state.skipped + (active & ~finite).astype(jnp.int32)
  new = new.replace(step=state.step + active.astype(jnp.int32), skipped=skipped)
  terms.update(grad_norm=grad_norm, finite=finite, skipped=skipped)
  return new, terms


def _scan(step_fn, setup, state, x_all, cond_all, idx, stats, active):
  def body(s, inp):
    return step_fn(setup, s, x_all, cond_all, inp[0], stats, inp[1])
  return jax.lax.scan(body, state, (idx, active))


class Variant:
  """A jitted scan of ``step_fn`` on one model (or the pipeline's vmap over one model)."""

  def __init__(self, base: CompiledTrainer, step_fn, vmapped=False):
    self.base, self.vmapped = base, vmapped
    scan = functools.partial(_scan, step_fn, base.setup)
    if vmapped:
      self.fn = jax.jit(jax.vmap(scan, in_axes=(0, None, 0, 0, 0, 0)), donate_argnums=(0,))
      self.state = jax.tree.map(jnp.copy, base.state)
      self.cond, self.stats = base.cond_all, base.stats
    else:
      self.fn = jax.jit(scan, donate_argnums=(0,))
      self.state = jax.tree.map(jnp.copy, train.unstack(base.state, 0))
      self.cond, self.stats = base.cond_all[0], train.unstack(base.stats, 0)
    self.step = 0

  def call(self, spc):
    d, b = self.base.datas[0], self.base.config.train.batch_size
    idx = np.stack([d.batch_indices(self.step + s, b) for s in range(spc)])
    self.step += spc
    active = np.ones((spc,), bool)
    if self.vmapped:
      idx, active = idx[None], active[None]
    self.state, terms = self.fn(self.state, self.base.x, self.cond, idx, self.stats, active)
    return terms


def rate(obj, spc, seconds, batch_size):
  calls = 0
  t0 = time.perf_counter()
  while calls < 2 or time.perf_counter() - t0 < seconds:
    jax.block_until_ready(obj.call(spc))
    calls += 1
  return calls * spc * batch_size / (time.perf_counter() - t0)


def build(batch_size, steps_per_call, names=None):
  base = CompiledTrainer(bench_config("dcvae", batch_size, steps_per_call=steps_per_call))
  variants = {
      "pipeline": lambda: base,
      "unvmapped": lambda: Variant(base, train.train_step),
      "scalar_guard": lambda: Variant(base, scalar_guard_step),
      "scalar_guard_vmap": lambda: Variant(base, scalar_guard_step, vmapped=True),
      "no_guard": lambda: Variant(base, lean_step),
      "no_guard_sgd": lambda: Variant(base, functools.partial(lean_step, adam=False)),
      "no_estimator": lambda: Variant(base, functools.partial(lean_step, estimator=False)),
      "no_estimator_sgd": lambda: Variant(base, functools.partial(lean_step, adam=False, estimator=False)),
      "forward_only": lambda: Variant(base, forward_step),
  }
  return base, {n: f() for n, f in variants.items() if names is None or n in names}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--steps_per_call", type=int, default=50)
  p.add_argument("--variants", default="", help="comma-separated subset (default: all)")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--seconds", type=float, default=1.5)
  p.add_argument("--no_wait", action="store_true")
  p.add_argument("--json", default=None)
  a = p.parse_args()
  names = [n for n in a.variants.split(",") if n] or None
  base, variants = build(a.batch_size, a.steps_per_call, names)
  flops = base.flops_per_image()
  for v in variants.values():
    jax.block_until_ready(v.call(a.steps_per_call))  # compile
  quiet = None if a.no_wait else benchutil.wait_for_quiet()
  fns = {n: (lambda v=v: rate(v, a.steps_per_call, a.seconds, a.batch_size)) for n, v in variants.items()}
  rates = benchutil.interleave(fns, a.reps, log=print)
  ref = rates.get("pipeline")
  write_json(a.json, {
      "benchmark": "step_variants", "model": "dcvae", "batch_size": a.batch_size,
      "steps_per_call": a.steps_per_call, "hidden": "512,256", "reps": a.reps,
      "pipeline_flops_per_image": flops,
      "images_per_second": benchutil.summary(rates),
      "ratio_to_pipeline": ({n: benchutil.median_ratio(r, ref) for n, r in rates.items() if not n.startswith("_")}
                            if ref else None),
      "ms_per_step": {n: 1e3 * a.batch_size / float(np.median(r)) for n, r in rates.items()
                      if not n.startswith("_")},
      "load": benchutil.load_info(rates, quiet), "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "machine": machine()})


if __name__ == "__main__":
  main()
