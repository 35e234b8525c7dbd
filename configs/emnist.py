"""EMNIST letters (TFDS 'emnist/letters', 26 classes, or local npz / IDX files).

  python -m dcvae_jax.main --config=configs/emnist.py                         # downloads from TFDS if needed
  python -m dcvae_jax.main --config=configs/emnist.py --config.data.data_dir=DIR   # offline: DIR holds
      emnist_letters_train.npz + emnist_letters_test.npz, or emnist-letters-*-idx?-ubyte.gz
  python -m dcvae_jax.main --config=configs/emnist.py:smoke                   # seconds: a tiny run

Any model: --config.model.name=vae|cvae|beta_vae|factor_vae|rf_vae|beta_tcvae|dcvae.
Defaults converge (Adam 1e-3); configs/emnist_paper.py has the paper's stated settings.
"""

from dcvae_jax.config import base_config


def get_config(arg: str = ""):
  config = base_config()
  config.data.name = "emnist/letters"
  config.model.name = "dcvae"
  config.protocol.name = "leave_one_out"
  config.train.num_epochs = 10
  config.train.batch_size = 128
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
