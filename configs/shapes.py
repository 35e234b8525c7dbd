"""Procedural dSprites-like shapes (square / ellipse / heart; scale, rotation, x, y): known factors, no download.

  python -m dcvae_jax.main --config=configs/shapes.py                  # 3 leave-one-out runs
  python -m dcvae_jax.main --config=configs/shapes.py:smoke            # seconds: a tiny run
  python -m dcvae_jax.main --config=configs/shapes.py --config.model.name=beta_tcvae   # any model

12,000 train / 3,000 test 28x28 images rendered from a fixed seed (dcvae_jax.data.datasets, name "shapes"; "shapes64" for
64x64). The class is the shape (3 classes); leave_one_out holds out one shape per run. Besides AUROC, results.json
reports each run's disentanglement on its normal test images (dis_mig, dis_factor_vae, dis_dci_*, dis_sap,
dis_mig_<factor>, class_mig) and their means over runs.
"""

from dcvae_jax.config import dataset_config


def get_config(arg: str = ""):
  config = dataset_config(arg, dataset="shapes", num_epochs=30)
  config.data.binarize = False  # anti-aliased edges carry the fine scale / position information
  return config
