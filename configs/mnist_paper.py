"""The paper's stated settings on mnist: batch 64, 50 epochs, "primary and secondary learning rates" 1e-5 / 1e-3.

  python -m dcvae_jax.main --config=configs/mnist_paper.py [--config.data.data_dir=DIR]

Primary = the VAE's Adam rate, secondary = the FactorVAE/RF-VAE discriminator's. These rates barely train an
MLP VAE in 50 epochs (the loss is still falling steeply when the run ends): they are here to reproduce the paper,
not to get good detectors; configs/mnist.py uses settings that converge (Adam 1e-3).
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("_mnist_base", os.path.join(os.path.dirname(__file__), "mnist.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config(arg: str = ""):
  config = _base.get_config(arg)
  config.train.batch_size = 64
  config.train.learning_rate = 1e-5
  config.train.disc_learning_rate = 1e-3
  if arg != "smoke":
    config.train.num_epochs = 50
  return config
