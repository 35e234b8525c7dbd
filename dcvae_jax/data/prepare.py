"""The data every run of a config sees: the dataset it names, its validation split carved out of the training
split, the ``ood`` protocol's other dataset added, and the protocol's runs."""

from __future__ import annotations

from dcvae_jax.data import datasets as data_lib
from dcvae_jax.data import protocols, splits


def load_data(config) -> data_lib.Dataset:
  """The dataset config.data names, as its source gives it (train and test splits)."""
  return data_lib.load_dataset(
    config.data.name,
    config.data.data_dir,
    tfds_data_dir=config.data.tfds_data_dir or None,
    download=config.data.download,
    image_size=config.data.image_size,
    channels=config.data.channels,
  )


def validation_fraction(config) -> float:
  """data.validation_fraction; 0 for a workdir saved before the field existed (it trained on the whole split)."""
  return float(config.data.validation_fraction)


def prepare_data(config, dataset: data_lib.Dataset | None = None) -> data_lib.Dataset:
  """The data every run of ``config`` sees: ``dataset`` (default: ``load_data``; never one already split) with
  its validation split carved out (``splits.split_validation``, seeded by config.seed), and for the ``ood``
  protocol the other dataset's test images (anomalies) and validation images added (``splits.add_ood``)."""
  ds = dataset if dataset is not None else load_data(config)
  fraction = validation_fraction(config)
  ds = splits.split_validation(ds, fraction, int(config.seed))
  if config.protocol.name == "ood":
    ood = data_lib.load_dataset(
      config.protocol.ood_dataset,
      config.protocol.ood_data_dir,
      tfds_data_dir=config.data.tfds_data_dir or None,
      download=config.data.download,
    )
    ds = splits.add_ood(ds, ood, fraction, int(config.seed))
  return ds


def make_runs(config, ds: data_lib.Dataset) -> list:
  """The runs of config.protocol on ``ds``; a dataset that fixes its protocol (data.name=folder) gets its own."""
  return protocols.make_runs(config.protocol, ds.num_classes, config.seed, config.num_seeds, fixed=ds.protocol_classes)
