"""Default: VAE, leave-one-out on the 5,000 real MNIST digits shipped in this package. No network needed.

  python -m dcvae_jax.main                               # about 30 seconds on a 2-core CPU
  python -m dcvae_jax.main --config=configs/default.py:smoke   # seconds

All 10 leave-one-out runs train in one compiled program (train.ensemble: vmap, or lax.map on CPU).
Learning rate 1e-3 (converges; see *_paper configs for the paper's settings).
"""

from dcvae_jax.config import dataset_config


def get_config(arg: str = ""):
  config = dataset_config(arg, dataset="mnist5k", model="vae", num_epochs=10)
  config.train.checkpoint_every_steps = 1000
  if arg == "smoke":
    config.protocol.classes = (0, 1)
  return config
