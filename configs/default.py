"""Default: VAE, leave-one-out on the 5,000 real MNIST digits shipped in this package. No network needed.

  python -m dcvae_jax.main                               # under a minute on a 2-core CPU (benchmarks/README.md)
  python -m dcvae_jax.main --config=configs/default.py:smoke   # seconds

All 10 leave-one-out runs train in one compiled program (train.ensemble: vmap, or lax.map on CPU).
Learning rate 1e-3 (converges; see *_paper configs for the paper's settings). The default seven scores are
computed (--config.eval.scores="()" adds the three latent_knn ones), the iwae bound with K = 16 samples
(MAIN_JOB_IWAE_SAMPLES) to keep the job under a minute; ``:best`` computes all ten, with BEST_DETECTOR's K (64
since stage 15 of docs/results/validation.md).
"""

from dcvae_jax.config import dataset_config

MAIN_JOB_IWAE_SAMPLES = 16


def get_config(arg: str = ""):
  config = dataset_config(arg, dataset="mnist5k", model="vae", num_epochs=10)
  config.train.checkpoint_every_steps = 1000
  if arg != "best":  # :best keeps BEST_DETECTOR's K
    config.eval.iwae_samples = MAIN_JOB_IWAE_SAMPLES
  if arg == "smoke":
    config.protocol.classes = (0, 1)
  return config
