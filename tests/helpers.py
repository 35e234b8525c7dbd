"""Small shared pieces for the tests: a tiny config and a synthetic dataset."""

import numpy as np

from dcvae_jax.config import base_config
from dcvae_jax.data import Dataset


def toy_dataset(n_train=256, n_test=64, num_classes=3, size=8, seed=0) -> Dataset:
  """Class k = a bright square at a class-specific place, plus noise (uint8, N x size x size)."""
  rng = np.random.default_rng(seed)

  def make(n):
    y = rng.integers(0, num_classes, n).astype(np.int32)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for k in range(num_classes):
      r = (2 * k) % (size - 2)
      x[y == k, r : r + 3, r : r + 3] = 250
    return x, y

  x_tr, y_tr = make(n_train)
  x_te, y_te = make(n_test)
  return Dataset("toy", x_tr, y_tr, x_te, y_te, num_classes, source="toy")


def tiny_config(model="vae", **train):
  c = base_config()
  c.model.name = model
  c.model.hidden = (32, 16)
  c.model.latent_dim = 4
  c.model.disc_layers = 2
  c.model.disc_width = 32
  c.protocol.name = "leave_one_out"
  c.train.num_epochs = 1
  c.train.batch_size = 32
  c.train.steps_per_call = 4
  c.train.progress = False
  c.eval.batch_size = 64
  c.eval.elbo_samples = 2
  for k, v in train.items():
    setattr(c.train, k, v)
  return c
