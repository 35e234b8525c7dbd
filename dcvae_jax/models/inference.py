"""One batched, padded, sharded apply of a compiled function over a data set, used by scoring, latents and the
figures; and ``Model``, the compiled encode / decode / prior of a trained setup.

Every item is processed exactly once: the batch size is rounded down to a multiple of the device count (at
least one per device), the last batch is padded with zeros to the full size (so each function compiles once)
and its outputs are cut back."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dcvae_jax import distributed
from dcvae_jax.data import input_pipeline
from dcvae_jax.models import networks, objectives


def batch_bounds(n: int, batch_size: int, num_devices: int):
  """(start, stop, pad) of fixed-size batches covering n items; the batch is a multiple of the device count."""
  batch_size = max(num_devices, (int(batch_size) // num_devices) * num_devices)
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    yield start, stop, batch_size - (stop - start)


def pad_batch(a: np.ndarray, pad: int, axis: int = 0) -> np.ndarray:
  """``a`` with ``pad`` zero rows appended along ``axis``."""
  if not pad:
    return a
  shape = list(a.shape)
  shape[axis] = pad
  return np.concatenate([a, np.zeros(shape, a.dtype)], axis=axis)


def map_batches(call: Callable, inputs: Sequence[tuple], *, mesh, batch_size: int, out_axis: int = 1):
  """Apply ``call(i, *batches)`` to the i-th batch of every input and concatenate its outputs on the host.

  inputs: (array, axis) pairs, each cut along its ``axis`` (all the same length there) and sharded over the
  mesh's "data" axis there. The outputs (a pytree of arrays) have the batch along ``out_axis``."""
  n = inputs[0][0].shape[inputs[0][1]]
  parts = []
  for i, (start, stop, pad) in enumerate(batch_bounds(n, batch_size, mesh.devices.size)):
    args = []
    for a, axis in inputs:
      cut = [slice(None)] * a.ndim
      cut[axis] = slice(start, stop)
      sharding = NamedSharding(mesh, P(*([None] * axis), "data"))
      args.append(distributed.batch_sharded(pad_batch(a[tuple(cut)], pad, axis), sharding, axis))
    keep = [slice(None)] * (out_axis + 1)
    keep[out_axis] = slice(0, stop - start)
    parts.append(jax.tree.map(lambda o, keep=tuple(keep): np.asarray(o)[keep], distributed.to_host(call(i, *args))))
  return jax.tree.map(lambda *o: np.concatenate(o, axis=out_axis), *parts)


class Model:
  """Compiled encode / decode / prior of one ``train_step.ModelSetup``, for figures.

  Conditions are integer ids: 0..C-1 the run's normal classes (position in ``run.normal``), C the all-zero
  condition vector; ignored for unconditional models. Arrays go through ``map_batches`` in batches of
  ``batch_size``, so each function compiles once for every run of a workdir.
  """

  def __init__(self, setup, batch_size: int = 256, mesh=None):
    self.setup, self.batch_size = setup, int(batch_size)
    self.mesh = mesh if mesh is not None else distributed.make_mesh()
    spec, module, num_c = setup.spec, setup.module, setup.num_conditions
    self.conditional = spec.conditional
    self.latent_dim = int(setup.model_cfg.latent_dim)

    def cond(ids):
      return objectives.one_hot_condition(spec, ids, num_c)

    def encode(params, x_uint8, ids):
      x = input_pipeline.preprocess(x_uint8, setup.binarize, setup.dequantize, image_shape=setup.module.image_shape)
      return objectives.encode(module, params, x, cond(ids))

    def decode(params, z, ids):
      mean = objectives.mean_image(objectives.decode(module, params, z, cond(ids)), setup.model_cfg.likelihood)
      return mean[..., 0] if mean.shape[-1] == 1 else mean

    def prior(params, ids):
      return module.apply(params, ids, method=networks.VAE.prior)

    self._encode, self._decode, self._prior = jax.jit(encode), jax.jit(decode), jax.jit(prior)

  def _batched(self, fn, params, arr, ids):
    params = distributed.replicated(params, NamedSharding(self.mesh, P()))  # beside the sharded batches
    return map_batches(
      lambda i, a, c: fn(params, a, c), [(arr, 0), (ids, 0)], mesh=self.mesh, batch_size=self.batch_size, out_axis=0
    )

  def _ids(self, cond, n):
    return np.broadcast_to(np.asarray(0 if cond is None else cond, np.int32), (n,)).copy()

  def encode(self, params, x_uint8, cond=None):
    """Encoder (mu, logvar), each (N, d), of uint8 images (N, H, W[, C]) under condition id(s) ``cond``."""
    x = np.asarray(x_uint8)
    return self._batched(self._encode, params, x, self._ids(cond, x.shape[0]))

  def decode(self, params, z, cond=None):
    """Mean images in [0, 1] of codes z (N, d) under condition id(s) ``cond``: (N, H, W) grey, (N, H, W, C)
    colour."""
    z = np.asarray(z, np.float32)
    return self._batched(self._decode, params, z, self._ids(cond, z.shape[0]))

  def reconstruct(self, params, x_uint8, cond=None):
    """D(E(x)) with the encoder mean (the reconstruction the score A uses)."""
    mu, _ = self.encode(params, x_uint8, cond)
    return self.decode(params, mu, cond)

  def prior(self, params):
    """(means, stds) of the prior, each (K, d): one row per normal condition (K = 1 if unconditional)."""
    k = self.setup.num_conditions if self.conditional else 1
    mu, logvar = self._prior(params, np.arange(k, dtype=np.int32))
    return np.asarray(mu), np.exp(0.5 * np.asarray(logvar))

  def decoder(self, params) -> Callable:
    """The ``decode(z, condition)`` callable the figure functions take."""
    return lambda z, cond=None: self.decode(params, z, cond)
