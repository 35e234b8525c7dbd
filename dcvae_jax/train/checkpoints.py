"""Orbax checkpoints of a stacked ``TrainState``: async saves, and a restore that falls back to older
checkpoints when the newest is damaged."""

from __future__ import annotations

import json
import os

import jax

from dcvae_jax.errors import CheckpointError
from dcvae_jax.log import log as _log


def checkpoint_manager(directory: str, keep: int):
  """An Orbax CheckpointManager whose checkpoints hold two items: ``state`` (the TrainState: parameters,
  optimizer and discriminator state, step, rng) and ``meta`` (JSON: step, train_seconds). Saves are async; use
  it as a context manager, whose exit waits for the last save."""
  import orbax.checkpoint as ocp

  options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "meta"))


def restore_latest(manager, target, log=_log, *, with_meta: bool = False):
  """Restore the newest checkpoint that reads back; fall back to older ones. Returns (state, step), or
  (state, step, meta) with ``with_meta``; (None, None[, {}]) when there is none. Raises CheckpointError when
  every checkpoint is damaged."""
  import orbax.checkpoint as ocp

  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return (None, None, {}) if with_meta else (None, None)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  errors: list[str] = []
  for step in steps:
    try:
      if os.path.isdir(os.path.join(str(manager.directory), str(step), "state")):
        got = manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        state, meta = got.state, dict(got.meta or {})
      else:
        state, meta = _restore_single_item(manager.directory, step, abstract)
      if errors:
        log(f"warning: checkpoint(s) {', '.join(e for e in errors)} damaged; restored step {step}")
      return (state, step, meta) if with_meta else (state, step)
    except Exception as e:  # noqa: BLE001 - any failure to read means this checkpoint is unusable
      errors.append(f"{step} ({type(e).__name__})")
  raise CheckpointError(
    f"no readable checkpoint in {manager.directory}: damaged steps {', '.join(errors)}; nothing was deleted"
  )


def _restore_single_item(directory, step: int, abstract):
  """A checkpoint written before checkpoints had items (the state alone; train time in train_seconds.json)."""
  import orbax.checkpoint as ocp

  with ocp.CheckpointManager(os.path.abspath(str(directory))) as old:
    state = old.restore(step, args=ocp.args.StandardRestore(abstract))
  seconds = os.path.join(str(directory), "train_seconds.json")
  meta = {}
  if os.path.exists(seconds):
    with open(seconds) as f:
      meta = {"train_seconds": json.load(f).get(str(step), 0.0)}
  return state, meta


def save(manager, step: int, state, meta: dict | None = None):
  """Starts an async save of ``state`` and ``meta`` (JSON) as checkpoint ``step``; returns once the arrays are
  on the host. The manager's exit (or ``wait_until_finished``) waits for it."""
  import orbax.checkpoint as ocp

  meta = {**(meta or {}), "step": int(step)}
  manager.save(
    step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True
  )
