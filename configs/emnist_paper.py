"""The paper's stated settings on emnist/letters: batch 128, 50 epochs, "primary and secondary learning rates" 1e-6 / 1e-5.

  python -m dcvae_jax.main --config=configs/emnist_paper.py [--config.data.data_dir=DIR]

Primary = the VAE's Adam rate, secondary = the FactorVAE/RF-VAE discriminator's. These rates barely train an
MLP VAE in 50 epochs (the loss is still falling steeply when the run ends): they are here to reproduce the paper,
not to get good detectors; configs/emnist.py uses settings that converge (Adam 1e-3).
"""

from dcvae_jax.config import dataset_config, paper_settings


def get_config(arg: str = ""):
  config = dataset_config(arg, dataset="emnist/letters", num_epochs=50, batch_size=128)
  return paper_settings(config, arg, batch_size=128, learning_rate=1e-6, disc_learning_rate=1e-5)
