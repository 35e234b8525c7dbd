"""The TFDS reader behind :func:`dcvae_jax.data.datasets.load_dataset`, and the network probe that turns an offline
download into one clear error line. Optional: ``pip install -e ".[tfds]"``."""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import urllib.parse

import numpy as np

from dcvae_jax.data.sources import DatasetSpec, _short
from dcvae_jax.errors import DataError

_PROBE_TIMEOUT_S = 3.0


def _probe_target(url: str) -> tuple:
  """(host, port) a download of ``url`` connects to first: the proxy if one is set."""
  parsed = urllib.parse.urlsplit(url)
  scheme = parsed.scheme or "https"
  for var in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
    proxy = os.environ.get(var)
    if proxy:
      p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
      if p.hostname:
        return p.hostname, p.port or (443 if p.scheme == "https" else 80)
  return parsed.hostname or "", parsed.port or (443 if scheme == "https" else 80)


def _network_reachable(host: str, port: int, timeout: float = _PROBE_TIMEOUT_S) -> bool:
  """True if a TCP connection to host:port opens within ``timeout`` seconds.

  Runs in a daemon thread so that a hanging DNS lookup cannot exceed the timeout.
  """
  result = []

  def probe():
    try:
      with socket.create_connection((host, port), timeout=timeout):
        result.append(True)
    except (OSError, ValueError):
      result.append(False)

  t = threading.Thread(target=probe, name="dcvae-net-probe", daemon=True)
  t.start()
  t.join(timeout + 0.5)
  return bool(result and result[0])


def _offline_hint(spec: DatasetSpec) -> str:
  alt = f"{spec.npz_files[0]}/{spec.npz_files[1]}"
  if spec.idx_files:
    alt += f" or the IDX files ({spec.idx_files['train_images']}[.gz], ...)"
  return f"set config.data.data_dir to a folder with {alt}"


def _tfds_to_numpy(tfds, builder, split: str) -> tuple:
  try:
    n = int(builder.info.splits[split].num_examples)
  except Exception:  # noqa: BLE001 - split sizes unknown (e.g. a mocked builder)
    n = 0
  if n > 0:
    x, y = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
  else:
    # batch_size=-1 batches by the recorded split size; without one TFDS would try a
    # batch of sys.maxsize.  Read in chunks instead.
    xs, ys = [], []
    for xb, yb in tfds.as_numpy(builder.as_dataset(split=split, batch_size=8192, as_supervised=True)):
      xs.append(xb)
      ys.append(yb)
    if not xs:
      raise DataError(f"TFDS {builder.name} split {split!r} is empty")
    x, y = np.concatenate(xs), np.concatenate(ys)
  x = np.asarray(x)
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  return x, y


def read_tfds(spec: DatasetSpec, tfds_data_dir: str | None, download: bool) -> dict:
  """parts: split -> (x, y, where) of a TFDS dataset, prepared (downloaded) if need be."""
  if importlib.util.find_spec("tensorflow_datasets") is None:
    raise DataError(
      f"dataset {spec.name} comes from TFDS, which is not installed: "
      f'pip install -e ".[tfds]" (or pip install "dcvae_jax[tfds]"), or '
      f"{_offline_hint(spec)}"
    )
  try:
    import tensorflow_datasets as tfds  # slow import: only on this path
  except ImportError as e:  # installed but broken (e.g. no TensorFlow)
    raise DataError(
      f"dataset {spec.name} needs TFDS, which fails to import ({_short(e)}): "
      f'pip install -e ".[tfds]", or {_offline_hint(spec)}'
    ) from e
  try:
    builder = tfds.builder(spec.tfds_name, data_dir=tfds_data_dir)
    prepared = builder.is_prepared()
  except Exception as e:  # noqa: BLE001
    raise DataError(f"TFDS cannot open {spec.tfds_name} ({_short(e)}); {_offline_hint(spec)}") from e
  if not prepared:
    where = tfds_data_dir or "the default TFDS data_dir"
    if not download:
      raise DataError(
        f"TFDS dataset {spec.tfds_name} is not prepared in {where} and download=False; {_offline_hint(spec)}"
      )
    host, port = _probe_target(spec.download_url or "https://storage.googleapis.com/")
    if not _network_reachable(host, port):
      raise DataError(
        f"TFDS dataset {spec.tfds_name} is not prepared in {where} and "
        f"{host}:{port} is unreachable (no network?); "
        f"{_offline_hint(spec)}"
      )
    try:
      builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001
      raise DataError(
        f"TFDS download_and_prepare of {spec.tfds_name} failed ({_short(e)}); {_offline_hint(spec)}"
      ) from e
  # Keep TensorFlow off the accelerators JAX uses.  Only here: importing TensorFlow
  # takes seconds, and the error paths above must stay fast.
  try:
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
  except Exception:  # noqa: BLE001 - already initialised or no GPU build: fine
    pass
  parts = {}
  for split in ("train", "test"):
    x, y = _tfds_to_numpy(tfds, builder, split)
    parts[split] = (x, y, f"TFDS {spec.tfds_name} {split}")
  return parts
