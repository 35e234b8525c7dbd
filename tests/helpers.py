"""Small shared pieces for the tests: a tiny config, a synthetic dataset, training it, comparing states."""

import jax
import numpy as np

from dcvae_jax.config import base_config
from dcvae_jax.data import protocols
from dcvae_jax.data.datasets import Dataset
from dcvae_jax.train import trainer


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
  for section in (c.model.factor_vae, c.model.rf_vae):
    section.disc_layers, section.disc_width = 2, 32
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


def set_model(config, **fields):
  """Set model fields: a field of the chosen model's own section (``model.<name>.*``, e.g. tc_beta of dcvae)
  there, any other on config.model itself (latent_dim, estimator, ...)."""
  from dcvae_jax.models import registry

  section = registry.get_model(config.model.name).section
  for key, value in fields.items():
    node = config.model[section] if section and key in config.model[section] else config.model
    if key not in node:
      raise KeyError(f"model field {key!r} is neither in config.model nor in config.model.{section}")
    setattr(node, key, value)
  return config


def toy_runs(config, ds, classes=(0,)):
  """The protocol's runs for the given classes of a toy dataset (sets config.protocol.classes)."""
  config.protocol.classes = classes
  return protocols.make_runs(config.protocol, ds.num_classes, config.seed)


def train_toy(config, ds, runs, ckpt, mesh=None, log_file=None, log=lambda *_: None):
  """trainer.train_runs on a toy dataset of 8 x 8 images: returns (state, train seconds, steps)."""
  return trainer.train_runs(
    config,
    ds.x_train,
    ds.y_train,
    runs,
    str(ckpt),
    image_shape=(8, 8, 1),
    num_conditions=len(runs[0].normal),
    mesh=mesh,
    log_file=log_file,
    log=log,
  )


def _leaf_pairs(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0, (len(leaves_a), len(leaves_b))
  return zip(leaves_a, leaves_b, strict=True)


def assert_trees_equal(a, b):
  """Two non-empty pytrees with the same number of leaves, every leaf bitwise equal."""
  for x, y in _leaf_pairs(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(a, b, **tol):
  """Two non-empty pytrees with the same number of leaves, every leaf within assert_allclose's tolerances."""
  for x, y in _leaf_pairs(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)
