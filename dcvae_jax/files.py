"""Files written whole or not at all, and the one kind of path the project writes to (a local folder)."""

from __future__ import annotations

import io
import json
import os

import numpy as np

from dcvae_jax.errors import WorkdirError


def _replace_with(path: str, data: bytes) -> None:
  """``data`` into a temporary file beside ``path``, then a rename: a reader (or a crash, or Ctrl-C) never sees
  half a file, only the old one or the new one."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, obj) -> None:
  """``obj`` as JSON (indented, sorted keys), atomically."""
  _replace_with(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def write_text(path: str, text: str) -> None:
  """``text`` (UTF-8), atomically."""
  _replace_with(path, text.encode())


def write_npz(path: str, **arrays) -> None:
  """``np.savez(path, **arrays)``, atomically."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  _replace_with(path, buffer.getvalue())


def check_local(path: str, flag: str = "--workdir") -> None:
  """Refuse a URL (``gs://bucket/run``, any ``scheme://``): everything here is written with local file calls,
  which would make a folder named ``gs:`` instead. A bucket is written through a gcsfuse mount."""
  if "://" in str(path):
    raise WorkdirError(
      f"{flag}={path}: a URL is not a folder here; mount the bucket with gcsfuse and give the mount's path "
      "(as launch/tpu_pod.sh does: gcsfuse --implicit-dirs BUCKET /mnt/BUCKET, then "
      f"{flag}=/mnt/BUCKET/...)"
    )
