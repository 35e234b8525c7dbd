"""MNIST (TFDS 'mnist', or mnist_train.npz / mnist_test.npz or the IDX files in data_dir).

  python -m dcvae_jax.main --config=configs/mnist.py                         # downloads from TFDS if needed
  python -m dcvae_jax.main --config=configs/mnist.py --config.data.data_dir=DIR   # offline: DIR holds
      mnist_train.npz + mnist_test.npz, or train-images-idx3-ubyte.gz etc.
  python -m dcvae_jax.main --config=configs/mnist.py:smoke                   # seconds: a tiny run

Any model: --config.model.name=vae|cvae|beta_vae|factor_vae|rf_vae|beta_tcvae|dcvae.
Defaults converge (Adam 1e-3); configs/mnist_paper.py has the paper's stated settings.
"""

from dcvae_jax.config import base_config


def get_config(arg: str = ""):
  config = base_config()
  config.data.name = "mnist"
  config.model.name = "dcvae"
  config.protocol.name = "leave_one_out"
  config.train.num_epochs = 20
  config.train.batch_size = 64
  config.train.checkpoint_every_steps = 2000
  if arg == "smoke":
    config.train.num_epochs = 1
    config.model.hidden = (64, 32)
    config.protocol.classes = (0,)
    config.train.steps_per_call = 10
    config.train.progress = False
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (expected '' or 'smoke')")
  return config
