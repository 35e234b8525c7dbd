"""The validation split, carved out of the training split before any run is built, and the cross-dataset (``ood``)
test and validation sets.

Validation (docs/design.md "Selection and validation"): ``validation_indices(y_train, f, seed)`` takes from every
class c with n_c > 0 training images n_val_c = floor(f n_c + 1/2) of them (f = ``data.validation_fraction``), drawn
without replacement by ``numpy.random.default_rng([seed, 0x7A11D])``, class after class in increasing label order.
Every such class must keep at least one image on each side (else a one-line ``DataError``); a class with no training
image has none in validation either. ``split_validation`` applies it to a :class:`Dataset`: ``x_val`` holds the
validation images, which no run trains on, and ``x_train`` the rest; both keep the training split's order, and
``train_indices`` / ``val_indices`` index the original training split (disjoint, their union is all of it). With
f = 0 the dataset comes back unchanged (``x_val`` None). Every run's training data, RaPP's NAP fit and the
sap_complexity reference are drawn from the remaining ``x_train`` only.

Cross-dataset (``protocol.name="ood"``): ``add_ood(ds, ood, f, seed)`` appends the test split of another dataset
``ood`` of the same image shape to the test set, with the label ``ds.num_classes`` (one new class, the anomalies;
the combined dataset keeps ``ds.name``, has ``num_classes + 1`` classes and no training image of the new one,
and no generative factors of its test images), and, for validation
anomalies, the validation part of ``ood``'s TRAINING split drawn by the same rule (``validation_indices`` with the
same f and seed, stratified by ``ood``'s own classes). ``ood``'s test split never enters validation; no image of
``ood`` enters training.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dcvae_jax.errors import DataError

_SPLIT_STREAM = 0x7A11D  # the validation split's own random stream, beside the seed


def validation_counts(y: np.ndarray, fraction: float, num_classes: int) -> np.ndarray:
  """int (num_classes,): validation images of each class, floor(fraction n_c + 1/2) (n_c: training images of c)."""
  n = np.bincount(np.asarray(y), minlength=num_classes)
  return np.floor(float(fraction) * n + 0.5).astype(np.int64)


def validation_indices(y: np.ndarray, fraction: float, seed: int, num_classes: int, *, what: str = "the dataset"):
  """(train, val): sorted int64 indices into ``y`` (the training split's labels), a class-stratified split (see the
  module docstring). Raises DataError (one line) when a class with training images would get none on one side."""
  y = np.asarray(y)
  counts = np.bincount(y, minlength=num_classes)
  want = validation_counts(y, fraction, num_classes)
  for c in range(num_classes):
    if counts[c] and not 0 < want[c] < counts[c]:
      raise DataError(
        f"data.validation_fraction={fraction:g} gives class {c} of {what} {int(want[c])} of its {int(counts[c])} "
        "training images for validation; every class needs at least one validation and one training image "
        "(change the fraction, or 0 turns validation off)"
      )
  rng = np.random.default_rng([int(seed), _SPLIT_STREAM])
  val = [rng.permutation(np.flatnonzero(y == c))[: want[c]] for c in range(num_classes) if counts[c]]
  is_val = np.zeros(y.shape[0], bool)
  if val:
    is_val[np.concatenate(val)] = True
  return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _take(a, idx):
  return None if a is None else a[idx]


def split_validation(ds, fraction: float, seed: int):
  """``ds`` (a datasets.Dataset without a validation split) with ``validation_fraction`` of its training split
  moved to ``x_val`` / ``y_val`` (see the module docstring); ``fraction`` = 0 returns ``ds`` itself."""
  if ds.x_val is not None:
    raise ValueError(f"{ds.name} already has a validation split")
  if not float(fraction):
    return ds
  tr, va = validation_indices(ds.y_train, fraction, seed, ds.num_classes, what=ds.name)
  return dataclasses.replace(
    ds,
    x_train=ds.x_train[tr],
    y_train=ds.y_train[tr],
    factors_train=_take(ds.factors_train, tr),
    x_val=ds.x_train[va],
    y_val=ds.y_train[va],
    factors_val=_take(ds.factors_train, va),
    train_indices=tr,
    val_indices=va,
  )


def add_ood(ds, ood, fraction: float, seed: int):
  """The ``ood`` protocol's dataset: ``ds`` (already split, see ``split_validation``) with the test split of
  ``ood`` appended to its test set and a validation part of ``ood``'s training split to its validation set, both
  labelled ``ds.num_classes`` (see the module docstring). Raises DataError if the image shapes differ."""
  if ood.x_test.shape[1:] != ds.x_test.shape[1:]:
    shape = "x".join(map(str, ds.x_test.shape[1:]))
    raise DataError(
      f"protocol.ood_dataset {ood.name} has {'x'.join(map(str, ood.x_test.shape[1:]))} images, data.name "
      f"{ds.name} has {shape}: the ood protocol needs the same image shape"
    )
  label = ds.num_classes
  extra = {}
  if ds.x_val is not None:
    _, va = validation_indices(ood.y_train, fraction, seed, ood.num_classes, what=ood.name)
    extra = dict(
      x_val=np.concatenate([ds.x_val, ood.x_train[va]]),
      y_val=np.concatenate([ds.y_val, np.full(va.size, label, ds.y_val.dtype)]),
      factors_val=None,
    )
  return dataclasses.replace(
    ds,
    x_test=np.concatenate([ds.x_test, ood.x_test]),
    y_test=np.concatenate([ds.y_test, np.full(ood.x_test.shape[0], label, ds.y_test.dtype)]),
    factors_test=None,
    num_classes=ds.num_classes + 1,
    source=f"{ds.source} + {ood.name} ({ood.source})",
    **extra,
  )
