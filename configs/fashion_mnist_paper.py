"""The paper's stated settings on fashion_mnist: batch 64, 50 epochs, "primary and secondary learning rates" 1e-5 / 1e-3.

  python -m dcvae_jax.main --config=configs/fashion_mnist_paper.py [--config.data.data_dir=DIR]

Primary = the VAE's Adam rate, secondary = the FactorVAE/RF-VAE discriminator's. These rates barely train an
MLP VAE in 50 epochs (the loss is still falling steeply when the run ends): they are here to reproduce the paper,
not to get good detectors; configs/fashion_mnist.py uses settings that converge (Adam 1e-3).
"""

from dcvae_jax.config import dataset_config, paper_settings


def get_config(arg: str = ""):
  config = dataset_config(arg, dataset="fashion_mnist", num_epochs=50, batch_size=64)
  return paper_settings(config, arg, batch_size=64, learning_rate=1e-5, disc_learning_rate=1e-3)
