"""Your own images: learn what normal looks like from a folder of normal images, and score test images.

  python -m dcvae_jax.main --config=configs/folder.py --config.data.data_dir=PATH [--workdir=DIR]
  python -m dcvae_jax.main --config=configs/folder.py:smoke --config.data.data_dir=PATH      # seconds
  python -m dcvae_jax.main --config=configs/folder.py --config.data.data_dir=PATH \\
      --config.data.image_size="(64, 64)" --config.data.channels=3 --config.model.arch=conv

PATH holds (dcvae_jax/data/folder_source.py has the details):
  train/            normal images (PNG / JPEG / BMP, any size, grey or colour), directly in train/ or in one
                    subfolder per class (class = subfolder index in sorted order; a conditional model such as
                    --config.model.name=dcvae conditions on it)
  test/normal/      optional: normal test images (in the same class subfolders as train/'s, if it has them)
  test/anomalous/   optional: anomalous test images; with test/normal/ they give AUROC / AUPR in results.json
or train.npz (x uint8 N x H x W [x C], optional y classes) and test.npz (x, anomalous 0/1, optional y).
Without test/ the model only trains (results.json says so); score new images later from its workdir.

Images are resized to data.image_size ((H, W) or an int; () = their own size, which must then be the same for
all) and converted to data.channels (1 grey, 3 colour; 0 = their own). The protocol is the folder's: normal =
train/, anomalous = test/anomalous/. The detector is the one chosen on validation for Fashion-MNIST
(docs/results/validation.md: a VAE, MLP 512-256, with a per-pixel Gaussian likelihood on dequantised grey
levels, 50 epochs, all ten scores computed, scored by sap_complexity_knn); the MLP takes any image size, --config.model.arch=conv (strides
adapt to the size) suits larger images.
"""

from dcvae_jax.config import folder_config


def get_config(arg: str = ""):
  return folder_config(arg)
