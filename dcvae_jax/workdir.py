"""The workdir of an experiment: one process at a time (``WorkdirLock``), and only the run it was made for
(``check_workdir``: the config fields that define what is trained must match config.json)."""

from __future__ import annotations

import json
import os
import socket

from dcvae_jax import files
from dcvae_jax.errors import WorkdirError
from dcvae_jax.log import log as _log

# Config fields that define what is trained: a workdir trained with other values cannot be resumed.
IDENTITY_KEYS = (
  "model.name",
  "model.arch",
  "model.hidden",
  "model.latent_dim",
  "model.likelihood",
  "data.name",
  "data.binarize",
  "protocol.name",
  "train.batch_size",
  "seed",
)


def _get(cfg: dict, dotted: str):
  for part in dotted.split("."):
    cfg = cfg.get(part, {}) if isinstance(cfg, dict) else {}
  return cfg


def check_workdir(config, workdir: str):
  """Refuse a workdir whose saved config trained something else; then (re)write config.json."""
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    diffs = [
      f"{k}: {_get(old, k)!r} -> {_get(new, k)!r}"
      for k in IDENTITY_KEYS
      if json.dumps(_get(old, k)) != json.dumps(_get(new, k))
    ]
    if diffs:
      raise WorkdirError(f"workdir {workdir} holds a different run ({'; '.join(diffs)}); use another --workdir")
  os.makedirs(workdir, exist_ok=True)
  files.write_json(path, new)


class WorkdirLock:
  """One run per workdir: ``<workdir>/.lock`` holds the holder's pid and host.

  A lock held by a live process is refused; one left by a dead process on this host is taken over with a
  warning. Used as a context manager; the lock is removed on exit.
  """

  def __init__(self, workdir: str, log=_log):
    self.path = os.path.join(workdir, ".lock")
    self.log = log

  def __enter__(self):
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        holder = self._read()
        if holder.get("host") == me["host"] and not _pid_alive(holder.get("pid", -1)):
          self.log(f"warning: taking over the stale lock of dead process {holder.get('pid')} in {self.path}")
          os.remove(self.path)
          continue
        raise WorkdirError(
          f"workdir {os.path.dirname(self.path)} is in use by pid {holder.get('pid')} on host "
          f"{holder.get('host')} (lock {self.path}); use another --workdir"
        ) from None
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      return self
    raise WorkdirError(f"could not take the lock {self.path}")

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def __exit__(self, *exc):
    if self._read().get("pid") == os.getpid():
      os.remove(self.path)


def _pid_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, ValueError, TypeError):
    return True
  return True
