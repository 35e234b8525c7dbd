"""The speed tricks of the training step, in one place. Each gives the same value as the plain expression it
replaces; the reason is on its first line. benchmarks/README.md has the measurements (docs/design.md "CPU notes")."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sum_per_example(a):
  """XLA:CPU runs a reduce_sum fused with transcendentals several times slower than a fused pass then a dot.

  Sum over all axes but the first, as the matrix-vector product (B, P) @ ones(P), at HIGHEST precision so that
  accelerators (bf16 / TF32 matmul passes at DEFAULT precision) still add in float32."""
  flat = a.reshape(a.shape[0], -1)
  return jnp.matmul(flat, jnp.ones((flat.shape[1],), flat.dtype), precision=jax.lax.Precision.HIGHEST)


def global_norm(tree):
  """optax's tree norm with each leaf's sum of squares as a matvec (``sum_per_example``), for the same reason.

  sqrt(sum over leaves of sum(a^2))."""
  total = jnp.zeros((), jnp.float32)
  for a in jax.tree.leaves(tree):
    sq = jnp.square(a.astype(jnp.float32)).reshape(a.shape[0] if a.ndim > 1 else 1, -1)
    total = total + jnp.sum(sum_per_example(sq))
  return jnp.sqrt(total)


def normals_ahead(keys, shape):
  """Inside lax.scan XLA fuses the normal generator into the (B, B, d) estimator and recomputes it B times.

  normal(k, shape) for each key of ``keys`` (S, 2), drawn before the scan: (S, *shape)."""
  return jax.vmap(lambda k: jax.random.normal(k, shape))(keys)


def skip_when_inactive(step, state, inputs, active):
  """A select keeps the old and new state alive together, so XLA copies every buffer each step.

  ``step(state, inputs)`` when ``active``, else (state, zero terms), through lax.cond. Under vmap the cond
  becomes that select again."""
  terms_shape = jax.eval_shape(step, state, inputs)[1]

  def idle(s):
    return s, jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), terms_shape)

  return jax.lax.cond(active, lambda s: step(s, inputs), idle, state)
