"""EMNIST letters (TFDS 'emnist/letters', 26 classes, or local npz / IDX files).

  python -m dcvae_jax.main --config=configs/emnist.py                              # downloads from TFDS if needed
  python -m dcvae_jax.main --config=configs/emnist.py --config.data.data_dir=DIR   # offline: DIR holds
      emnist_letters_train.npz + emnist_letters_test.npz, or emnist-letters-*-idx?-ubyte.gz
  python -m dcvae_jax.main --config=configs/emnist.py:smoke                        # seconds: a tiny run
  python -m dcvae_jax.main --config=configs/emnist.py:best --config.protocol.name=one_vs_rest  # the best
      detector found (BEST_DETECTOR in dcvae_jax/config.py, with this file's changes; BEST_ROW below)

dCVAE under leave-one-out by default; any model: --config.model.name=vae|cvae|beta_vae|factor_vae|rf_vae|beta_tcvae|dcvae,
any protocol: --config.protocol.name=one_vs_rest|leave_one_out|split. Defaults converge (Adam 1e-3, 10 epochs,
batch 128); configs/emnist_paper.py has the paper's stated settings.

BEST_ROW: not measured on EMNIST (no local copy here); it carries Fashion-MNIST's validation choice, row
`gpp` at 50 epochs + `sap_complexity_knn` over 5 neighbours, JPEG 2000, K = 64, 1000 reference images
(docs/results/validation.md, stages 8-16).
"""

from dcvae_jax.config import dataset_config


def get_config(arg: str = ""):
  return dataset_config(arg, dataset="emnist/letters", num_epochs=10, batch_size=128)
