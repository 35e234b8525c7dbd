"""KMNIST (TFDS 'kmnist', or local npz / IDX files).

  python -m dcvae_jax.main --config=configs/kmnist.py                              # downloads from TFDS if needed
  python -m dcvae_jax.main --config=configs/kmnist.py --config.data.data_dir=DIR   # offline: DIR holds
      kmnist_train.npz + kmnist_test.npz, or the IDX .gz files
  python -m dcvae_jax.main --config=configs/kmnist.py:smoke                        # seconds: a tiny run
  python -m dcvae_jax.main --config=configs/kmnist.py:best --config.protocol.name=one_vs_rest  # the best
      detector found (BEST_DETECTOR in dcvae_jax/config.py, with this file's changes; BEST_ROW below)

dCVAE under leave-one-out by default; any model: --config.model.name=vae|cvae|beta_vae|factor_vae|rf_vae|beta_tcvae|dcvae,
any protocol: --config.protocol.name=one_vs_rest|leave_one_out|split. Defaults converge (Adam 1e-3, 20 epochs,
batch 64); configs/kmnist_paper.py has the paper's stated settings.

BEST_ROW: not measured on KMNIST (no local copy here); it carries Fashion-MNIST's validation choice, row
`gpp` at 50 epochs + `sap_complexity_knn` over 5 neighbours, JPEG 2000, K = 64, 1000 reference images
(docs/results/validation.md, stages 8-16), the choice
for grey-level-rich images.
"""

from dcvae_jax.config import dataset_config


def get_config(arg: str = ""):
  return dataset_config(arg, dataset="kmnist", num_epochs=20, batch_size=64)
