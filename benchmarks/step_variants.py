"""Where the time of our compiled train step goes: variants of the step, timed interleaved in one process.

  python benchmarks/step_variants.py --batch_size=64 --json=benchmarks/results/step_variants_b64.json

Every variant runs ``steps_per_call`` steps of the dcvae model (MLP 512-256, latent 10, MSS) in one jitted lax.scan
on one device. images/s are medians over interleaved repetitions; ratios are medians of the per-repetition ratios
against ``pipeline`` (exactly the pipeline's call, CompiledTrainer -> train.compile_train_fn).

Every variant but ``pipeline`` is rebuilt here from dcvae_jax pieces (objectives.forward / decompose / the model's
regulariser, setup.tx) by ``step``; ``current`` is that rebuild with the pipeline's choices, and the JSON reports
how far its parameters are from the pipeline's after a call (``rebuild_check``).

  pipeline        train.compile_train_fn (one model: the model axis dropped inside the program, noise drawn before
                  the scan loop, finite check from scalars, one-expression Bernoulli NLL: commit 5ab44df; since
                  then also: the NLL's pixel sum and the norms as matvecs, padding steps behind a lax.cond
                  instead of a select over the state)
  pipeline_bf16   the pipeline with model.compute_dtype = "bfloat16" (bf16 matmuls, fp32 params and losses; this
                  CPU has avx512_bf16)
  current         the rebuild of the pipeline as of commit c207fc9 (before the matvecs and the cond); the
                  results/step_variants_*.json files were measured then, with ``pipeline`` = ``current``
  before_5ab44df  the step as it was before 5ab44df: vmapped over the size-1 model axis, noise drawn inside the
                  step, is_finite over every gradient and new parameter, param_norm every step,
                  optax.sigmoid_binary_cross_entropy
  One of the four changes undone at a time (the rest as in the pipeline):
  vmap_k1         vmap over the model axis of size 1: XLA:CPU then computes every weight gradient transposed
                  ([out, in]) and transposes it again in each consumer (Adam, norms)
  noise_in_step   eps ~ N(0, I) drawn inside the step: XLA fuses its generator (threefry, erf_inv: ~300 ops) into
                  the (B, B, d) estimator fusions and recomputes it B times per element
  full_guard      is_finite over every gradient and every new parameter, param_norm every step
  optax_bce       optax.sigmoid_binary_cross_entropy for the Bernoulli NLL
  Proposals:
  bce_matvec      the pipeline with the Bernoulli NLL's sum over pixels written as (B, P) @ ones(P) (matvec_bce):
                  XLA:CPU gives the reduce_sum to YNNPACK, whose reductions are slow on this CPU (xla_flags.py)
  cond_noise      the pipeline with the noise drawn behind a lax.cond (cond_noise). With steps_per_call = 1 XLA
                  removes the 1-trip scan loop and fuses the generator into the (B, B, d) fusions again (as
                  noise_in_step); a conditional is a fusion barrier XLA:CPU keeps. Same numbers.
  Lower bounds (not the same step; unvmapped, noise before the loop):
  no_guard        value_and_grad + Adam, nothing else (no finite check, no norms, no select)
  no_guard_sgd    value_and_grad + plain SGD
  no_estimator    no_guard with loss = recon + KL (no MSS decomposition)
  no_estimator_sgd  the network alone: recon + KL, SGD
  forward_only    the loss without gradients
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import benchutil  # noqa: E402
from common import CompiledTrainer, bench_config, call_rate, machine, write_json  # noqa: E402
from dcvae_jax import estimators, objectives, train  # noqa: E402


def stable_bce(logits, x):
  """-log Bernoulli(x; sigmoid(l)) summed over pixels, as one expression: max(l, 0) - l x + log1p(exp(-|l|))."""
  return (jnp.maximum(logits, 0.0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits)))).sum(tuple(range(1, x.ndim)))


def matvec_bce(logits, x):
  """stable_bce with the sum over pixels as a matrix-vector product: (B, P) @ ones(P). XLA:CPU hands a
  reduce_sum over the (B, P) array to YNNPACK, whose reductions are slow here (~1 ms per step at B = 64)."""
  e = jnp.maximum(logits, 0.0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  e = e.reshape(e.shape[0], -1)
  return e @ jnp.ones((e.shape[1],), e.dtype)


def optax_bce(logits, x):
  return optax.sigmoid_binary_cross_entropy(logits, x).sum(tuple(range(1, x.ndim)))


def step_noise(setup, state, active, batch_size):
  """The noise of every step of a call, drawn before the scan: (S, B, d); the same numbers as drawing
  normal(split(fold_in(rng, step))[0], (B, d)) inside each step."""
  steps = state.step + jnp.cumsum(active.astype(jnp.int32)) - active.astype(jnp.int32)

  def one(step):
    k_z, _ = jax.random.split(jax.random.fold_in(state.rng, step))
    return jax.random.normal(k_z, (batch_size, setup.hp.latent_dim), jnp.float32)
  return jax.vmap(one)(steps)


def step(setup, state, x_all, cond_all, idx, stats, active, eps=None, *, guard="scalar", bce="stable",
         estimator=True, update="adam", grads_only=False):
  """One dcvae-style step (VAE models without a discriminator) with the options of the variants.

  eps None: drawn inside the step. guard: "scalar" (finite from the loss terms and grad norm), "full" (is_finite
  over every gradient and new parameter, param_norm per step) or "none" (no check, no norms, no select).
  """
  spec, hp = setup.spec, setup.hp
  x = train.preprocess(x_all[idx], setup.binarize)
  cond = cond_all[idx]
  if eps is None:
    k_z, _ = jax.random.split(jax.random.fold_in(state.rng, state.step))
    eps = jax.random.normal(k_z, (idx.shape[-1], hp.latent_dim), jnp.float32)

  def loss_fn(params):
    out = objectives.forward(spec, setup.module, params, x, cond, None, setup.num_conditions, eps=eps)
    rec = {"stable": stable_bce, "optax": optax_bce, "matvec": matvec_bce}[bce](out["logits"], x).mean()
    kl = estimators.kl_diag_gaussians(out["mu"], out["logvar"], out["prior_mu"], out["prior_logvar"]).sum(-1).mean()
    if not estimator:
      return rec + kl, dict(loss=rec + kl, recon=rec, kl=kl)
    out["kl"] = kl
    out.update(objectives.decompose(spec, out, dataset_size=stats["dataset_size"],
                                    condition_counts=stats["condition_counts"], method=hp.estimator,
                                    groups=setup.groups))
    reg, _ = spec.regularizer(out, hp, None)
    return rec + reg, dict(loss=rec + reg, recon=rec, kl=kl, elbo=rec + kl, mi=out["mi"], tc=out["tc"],
                           dwkl=out["dwkl"])

  if grads_only:  # forward only
    _, terms = loss_fn(state.params)
    return state.replace(step=state.step + 1), terms
  (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if update == "adam":
    updates, opt_state = setup.tx.update(grads, state.opt_state, state.params)
    new = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
  else:
    new = state.replace(params=jax.tree.map(lambda p, g: p - 1e-3 * g, state.params, grads))
  if guard == "none":
    return new.replace(step=state.step + 1), terms
  terms["grad_norm"] = optax.tree.norm(grads)
  if guard == "full":
    finite = train._all_finite(terms) & train._all_finite(grads) & train._all_finite(new.params)
    terms["param_norm"] = optax.tree.norm(state.params)
  else:
    finite = train._all_finite(terms)
  apply = active & (finite | (not setup.skip_nonfinite))
  new = jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, state)
  skipped = state.skipped + (active & ~finite).astype(jnp.int32)
  new = new.replace(step=state.step + active.astype(jnp.int32), skipped=skipped)
  terms.update(finite=finite, skipped=skipped)
  return new, terms


def cond_noise(setup, state, active, batch_size):
  """step_noise behind a lax.cond on a run-time predicate: XLA cannot fuse through a conditional, so the generator
  stays out of the estimator fusions even when a 1-step scan loop is removed (steps_per_call = 1)."""
  return jax.lax.cond(jnp.any(active), lambda: step_noise(setup, state, active, batch_size),
                      lambda: jnp.zeros((active.shape[0], batch_size, setup.hp.latent_dim), jnp.float32))


def _scan(step_fn, setup, pregen, per_call_norm, state, x_all, cond_all, idx, stats, active):
  noise = cond_noise if pregen == "cond" else step_noise
  xs = (idx, active) + ((noise(setup, state, active, idx.shape[-1]),) if pregen else ())

  def body(s, inp):
    return step_fn(setup, s, x_all, cond_all, inp[0], stats, inp[1], *inp[2:])
  state, terms = jax.lax.scan(body, state, xs)
  if per_call_norm:  # as the pipeline: param_norm once per call
    terms["param_norm"] = jnp.broadcast_to(optax.tree.norm(state.params), active.shape)
  return state, terms


class Variant:
  """A jitted scan of ``step_fn`` on the pipeline's inputs (leading model axis of size 1), the model axis either
  vmapped (as before 5ab44df) or dropped inside the program (as the pipeline now), or a plain unvmapped call."""

  def __init__(self, base: CompiledTrainer, step_fn, axis="drop", pregen=True, per_call_norm=True):
    self.base, self.axis = base, axis
    scan = functools.partial(_scan, step_fn, base.setup, pregen, per_call_norm)
    if axis == "vmap":
      self.fn = jax.jit(jax.vmap(scan, in_axes=(0, None, 0, 0, 0, 0)), donate_argnums=(0,))
    elif axis == "drop":
      def dropped(state, x_all, cond_all, idx, stats, active):
        first = functools.partial(jax.tree.map, lambda a: a[0])
        out = scan(first(state), x_all, cond_all[0], idx[0], first(stats), active[0])
        return jax.tree.map(lambda a: a[None], out)
      self.fn = jax.jit(dropped, donate_argnums=(0,))
    else:
      self.fn = jax.jit(scan, donate_argnums=(0,))
    if axis == "none":
      self.state = jax.tree.map(jnp.copy, train.unstack(base.state, 0))
      self.cond, self.stats = base.cond_all[0], train.unstack(base.stats, 0)
    else:
      self.state = jax.tree.map(jnp.copy, base.state)
      self.cond, self.stats = base.cond_all, base.stats
    self.step = 0

  def call(self, spc):
    d, b = self.base.datas[0], self.base.config.train.batch_size
    idx = np.stack([d.batch_indices(self.step + s, b) for s in range(spc)])
    self.step += spc
    active = np.ones((spc,), bool)
    if self.axis != "none":
      idx, active = idx[None], active[None]
    self.state, terms = self.fn(self.state, self.base.x, self.cond, idx, self.stats, active)
    return terms


def rate(obj, spc, seconds, batch_size):
  return call_rate(obj, spc, batch_size, seconds)


VARIANTS = {
    "current": dict(),
    "before_5ab44df": dict(axis="vmap", pregen=False, per_call_norm=False, guard="full", bce="optax"),
    "vmap_k1": dict(axis="vmap"),
    "noise_in_step": dict(pregen=False),
    "full_guard": dict(guard="full", per_call_norm=False),
    "optax_bce": dict(bce="optax"),
    "cond_noise": dict(pregen="cond"),
    "bce_matvec": dict(bce="matvec"),
    "no_guard": dict(axis="none", guard="none", per_call_norm=False),
    "no_guard_sgd": dict(axis="none", guard="none", per_call_norm=False, update="sgd"),
    "no_estimator": dict(axis="none", guard="none", per_call_norm=False, estimator=False),
    "no_estimator_sgd": dict(axis="none", guard="none", per_call_norm=False, estimator=False, update="sgd"),
    "forward_only": dict(axis="none", guard="none", per_call_norm=False, grads_only=True),
}
_VARIANT_KEYS = ("axis", "pregen", "per_call_norm")


def make_variant(base, name):
  opts = dict(VARIANTS[name])
  vopts = {k: opts.pop(k) for k in _VARIANT_KEYS if k in opts}
  return Variant(base, functools.partial(step, **opts), **vopts)


def build(batch_size, steps_per_call, names=None, hidden=(512, 256)):
  base = CompiledTrainer(bench_config("dcvae", batch_size, hidden=hidden, steps_per_call=steps_per_call))
  out = {"pipeline": base} if names is None or "pipeline" in names else {}
  if names is None or "pipeline_bf16" in names:
    cfg = bench_config("dcvae", batch_size, hidden=hidden, steps_per_call=steps_per_call)
    cfg.model.compute_dtype = "bfloat16"
    out["pipeline_bf16"] = CompiledTrainer(cfg)
  out.update({n: make_variant(base, n) for n in VARIANTS if names is None or n in names})
  return base, out


def rebuild_check(batch_size=64, steps=50) -> dict:
  """Max |parameter difference| and |loss difference| between the pipeline and the rebuilds after one call from
  the same state on the same batches (float rounding only where the program differs)."""
  base, v = build(batch_size, steps, ["current", "before_5ab44df"])
  outs = {n: x.call(steps) for n, x in v.items()}
  ref_terms = base.call(steps)
  ref = jax.tree.leaves(base.state.params)
  res = {}
  for n, x in v.items():
    leaves = jax.tree.leaves(x.state.params)
    res[n] = {"max_abs_param_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                        for a, b in zip(ref, leaves)),
              "max_abs_loss_diff": float(np.max(np.abs(np.asarray(outs[n]["loss"]) - np.asarray(ref_terms["loss"])))),
              "loss": float(np.asarray(ref_terms["loss"]).ravel()[-1])}
  return res


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--steps_per_call", type=int, default=50)
  p.add_argument("--variants", default="", help="comma-separated subset (default: all)")
  p.add_argument("--hidden", default="512,256")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--seconds", type=float, default=1.5)
  p.add_argument("--no_wait", action="store_true")
  p.add_argument("--json", default=None)
  a = p.parse_args()
  names = [n for n in a.variants.split(",") if n] or None
  hidden = tuple(int(h) for h in a.hidden.split(","))
  check = rebuild_check(a.batch_size, a.steps_per_call)
  print("rebuild check:", check, flush=True)
  base, variants = build(a.batch_size, a.steps_per_call, names, hidden)
  flops = base.flops_per_image()
  for v in variants.values():  # compile; twice: CompiledTrainer's first state is not yet on the mesh, so the
    for _ in range(2):          # second call compiles again (for the sharded state the first call returns)
      jax.block_until_ready(v.call(a.steps_per_call))
  quiet = None if a.no_wait else benchutil.wait_for_quiet()
  fns = {n: (lambda v=v: rate(v, a.steps_per_call, a.seconds, a.batch_size)) for n, v in variants.items()}
  rates = benchutil.interleave(fns, a.reps, log=print)
  ref = rates.get("pipeline")
  write_json(a.json, {
      "benchmark": "step_variants", "model": "dcvae", "batch_size": a.batch_size,
      "steps_per_call": a.steps_per_call, "hidden": a.hidden, "reps": a.reps,
      "pipeline_flops_per_image": flops, "rebuild_check": check,
      "images_per_second": benchutil.summary(rates),
      "ratio_to_pipeline": ({n: benchutil.median_ratio(r, ref) for n, r in rates.items() if not n.startswith("_")}
                            if ref else None),
      "ms_per_step": {n: 1e3 * a.batch_size / float(np.median(r)) for n, r in rates.items()
                      if not n.startswith("_")},
      "load": benchutil.load_info(rates, quiet), "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "machine": machine()})


if __name__ == "__main__":
  main()
