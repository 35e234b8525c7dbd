"""``Detector``: the anomaly detector as one Python object, with scikit-learn / PyOD conventions.

  from dcvae_jax import Detector
  det = Detector(workdir="my_detector", train__num_epochs=20).fit(x_normal)   # uint8 (N, H, W[, C]), normal only
  det.predict(x_new)            # 0/1 per image (1 = anomalous): decision_function(x_new) > det.threshold_
  det.decision_function(x_new)  # the chosen score per image (larger = more anomalous, as PyOD's)
  det.score_samples(x_new)      # every score: dict name -> (N,)
  det2 = Detector.load("my_detector")

A detector IS a workdir (``workdir``; None: a new temporary folder, ``tempfile.mkdtemp``): ``fit`` runs ``experiment.train_and_evaluate`` (the command line's job) on a dataset
built from the images by the folder source's own path (``datasets.normal_images_dataset``, read as a folder's
``train.npz`` or ``train/``), and every score comes from the same compiled program and preprocessing as the
command line's (``predict.Predictor``, which ``--mode=predict`` uses too). So ``save`` copies the workdir and
``load`` reloads any trained workdir, including one trained on the command line (``run=`` picks one run of a
workdir with several).

Config: ``config`` is None (``dcvae_jax.config.folder_config()``: ``configs/folder.py``'s, the best detection
setting), a ConfigDict, or a config file ``path[:argument]`` as ``--config`` takes. ``config_overrides`` set
single fields, named by their config path with ``__`` for the dot, the scikit-learn convention for nested
parameters: ``Detector(model__name="cvae", train__num_epochs=5, data__image_size=(32, 32))``; the dotted path is
the same key (``Detector(**{"train.num_epochs": 5})``). An unknown field is a ConfigError. data.name and
protocol.name are always "folder" (the normal images define the protocol).

Threshold: set per run on held-out validation images (data.validation_fraction of the normal images, which no run
trains on): the order statistic of their chosen scores that flags at most eval.threshold_fpr of them
(evaluators/threshold.py; eval.contamination > 0: that fraction of all validation images, as PyOD's).
``threshold_`` is None when there is none (data.validation_fraction=0); ``predict`` then raises.

Fitted attributes (set by ``fit`` and ``load``): ``workdir_``, ``run_name_``, ``score_name_``, ``threshold_``,
``threshold_method_`` ((method, target)), ``image_shape_`` ((H, W, C) the model takes; other images are resized
and converted to it), ``score_names_``.

Monte Carlo scores (nelbo, iwae, complexity, sap_complexity, sap_complexity_knn) carry the estimator's noise for
an image's position in the batch (predict.py's docstring): the same images in the same order score the same.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile

import ml_collections
import numpy as np
from sklearn.exceptions import NotFittedError

from dcvae_jax import experiment, predict
from dcvae_jax.config import folder_config, moved_message
from dcvae_jax.data import datasets
from dcvae_jax.errors import ConfigError, WorkdirError
from dcvae_jax.log import log as _log


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """``get_config(argument)`` of a config file given as ``path[:argument]`` (as ``--config`` takes it)."""
  path, _, arg = str(spec).partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location("dcvae_detector_config", path)
  if module_spec is None or module_spec.loader is None:
    raise ConfigError(f"config file {path} cannot be loaded as a Python module")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """Set each ``section__field`` (or ``section.field``) of ``overrides`` in ``config``; ConfigError for a field
  the config does not have or a value of another type."""
  for key, value in overrides.items():
    dotted = key.replace("__", ".")
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ConfigError(moved_message(dotted) or f"unknown config field {dotted!r} (from {key}=...)")
    if isinstance(node[leaf], tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      setattr(node, leaf, value)
    except (TypeError, ValueError) as e:
      raise ConfigError(f"{dotted}={value!r}: {' '.join(str(e).split())}") from None
  return config


def _as_config(config) -> ml_collections.ConfigDict:
  if config is None:
    return folder_config()
  if isinstance(config, (str, os.PathLike)):
    return load_config_file(os.fspath(config))
  if isinstance(config, dict):
    return ml_collections.ConfigDict(config)
  if isinstance(config, ml_collections.ConfigDict):
    return ml_collections.ConfigDict(config.to_dict())  # a copy: fit never changes the caller's config
  raise ConfigError(f"config must be None, a ConfigDict, a dict or a config file path, got {type(config).__name__}")


class Detector:
  """An anomaly detector trained on normal images (module docstring)."""

  def __init__(self, workdir: str | None = None, config=None, **config_overrides):
    self.workdir = workdir
    self.config = config
    self.config_overrides = dict(config_overrides)
    self._predictor: predict.Predictor | None = None

  def get_config(self) -> ml_collections.ConfigDict:
    """The config ``fit`` trains with: ``config`` with ``config_overrides``, data.name and protocol.name
    "folder"."""
    config = apply_overrides(_as_config(self.config), self.config_overrides)
    config.data.name = "folder"
    config.protocol.name = "folder"
    return config

  def fit(self, x_normal, y=None, *, classes=None, log=_log) -> Detector:
    """Train on normal images ``x_normal`` (uint8 (N, H, W) or (N, H, W, C), any size; resized and converted to
    data.image_size / data.channels when set, else kept as they are). ``y`` is ignored (scikit-learn's
    unsupervised convention); ``classes``: optional classes 0..K-1 of the normal images, which a conditional
    model (model.name cvae, dcvae) conditions on. Returns self."""
    config = self.get_config()
    config.data.data_dir = ""
    ds = datasets.normal_images_dataset(x_normal, classes, config.data.image_size, config.data.channels)
    return self._fit(config, ds, log)

  def fit_dir(self, path, *, log=_log) -> Detector:
    """Train on a folder of normal images laid out as data.name=folder's ``train/`` (images directly in it, or one
    subfolder per class); a folder that holds ``train/`` itself is a data.name=folder data_dir, whose
    ``test/normal/`` and ``test/anomalous/``, if there, give AUROC in the workdir's results.json. Returns self."""
    config = self.get_config()
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.isdir(os.path.join(path, "train")) or os.path.isfile(os.path.join(path, "train.npz")):
      config.data.data_dir = path
      return self._fit(config, None, log)
    config.data.data_dir = ""
    ds = datasets.normal_images_dataset(path, None, config.data.image_size, config.data.channels)
    return self._fit(config, ds, log)

  def _fit(self, config, ds, log) -> Detector:
    workdir = self.workdir or tempfile.mkdtemp(prefix="dcvae_detector_")
    if os.path.exists(os.path.join(workdir, "config.json")):
      raise WorkdirError(
        f"{workdir} already holds a detector: Detector.load({workdir!r}) uses it, or fit into another workdir"
      )
    experiment.train_and_evaluate(config, workdir, dataset=ds, log=log)
    self._attach(predict.load_predictor(workdir))
    return self

  def _attach(self, p: predict.Predictor) -> None:
    self._predictor = p
    self.workdir_ = p.workdir
    self.run_name_ = p.run.name
    self.score_name_ = p.score_name
    self.threshold_ = None if p.threshold is None else float(p.threshold["threshold"])
    self.threshold_method_ = None if p.threshold is None else (p.threshold["method"], float(p.threshold["target"]))
    self.image_shape_ = tuple(p.image_shape)
    self.score_names_ = p.score_names

  @classmethod
  def load(cls, path: str, run: str | None = None) -> Detector:
    """The detector a trained workdir holds (saved by ``save``, or trained by ``fit`` or the command line);
    ``run``: one run of a workdir with several (their names are in the error otherwise)."""
    det = cls(workdir=os.fspath(path))
    det._attach(predict.load_predictor(os.fspath(path), run))
    return det

  def save(self, path: str) -> str:
    """Copy the detector's workdir to ``path`` (which must not exist yet); ``Detector.load(path)`` reloads it.
    Returns ``path``."""
    p = self._fitted()
    path = os.fspath(path)
    if os.path.abspath(path) == os.path.abspath(p.workdir):
      return path
    if os.path.exists(path):
      raise WorkdirError(f"{path} exists: save a detector to a new folder")
    shutil.copytree(p.workdir, path, ignore=shutil.ignore_patterns(".lock", "*.tmp*"))
    return path

  def _fitted(self) -> predict.Predictor:
    if self._predictor is None:
      raise NotFittedError("this Detector is not fitted yet: call fit(x_normal) or fit_dir(path), or Detector.load")
    return self._predictor

  def _images(self, x) -> np.ndarray:
    return self._fitted().convert(np.asarray(x), where="x")

  def score_samples(self, x) -> dict:
    """Every score of images ``x`` (uint8 (N, H, W) or (N, H, W, C)): dict name -> float64 (N,), larger = more
    anomalous (unlike scikit-learn's IsolationForest.score_samples, where lower is more abnormal)."""
    return self._fitted().scores(self._images(x))

  def decision_function(self, x) -> np.ndarray:
    """The chosen score (``score_name_``) of images ``x``: float64 (N,), larger = more anomalous."""
    return self.score_samples(x)[self._fitted().score_name]

  def predict(self, x) -> np.ndarray:
    """int (N,): 1 where ``decision_function(x) > threshold_`` (anomalous; non-finite scores too), else 0."""
    return self._fitted().flagged(self.decision_function(x))

  def __repr__(self) -> str:
    if self._predictor is None:
      return f"Detector(workdir={self.workdir!r}, config_overrides={self.config_overrides!r})"
    return (
      f"Detector(workdir={self.workdir_!r}, run={self.run_name_!r}, score={self.score_name_!r}, "
      f"threshold={self.threshold_!r})"
    )
