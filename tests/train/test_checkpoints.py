"""Checkpoint items: each checkpoint holds the state and a JSON meta item (step, train seconds); a checkpoint
written before checkpoints had items (the state alone, train time in train_seconds.json) still restores."""

import json
import os

from dcvae_jax.train import checkpoints
from tests.helpers import assert_trees_equal, tiny_config, toy_dataset, toy_runs, train_toy


def _trained(tmp_path):
  ds = toy_dataset()
  config = tiny_config("vae")
  runs = toy_runs(config, ds)
  state, seconds, steps = train_toy(config, ds, runs, tmp_path / "ck")
  return config, ds, runs, state, seconds, steps


def test_meta_item_holds_step_and_train_seconds(tmp_path):
  config, ds, runs, state, seconds, steps = _trained(tmp_path)
  assert {"meta", "state"} <= set(os.listdir(tmp_path / "ck" / str(steps)))
  assert not (tmp_path / "ck" / "train_seconds.json").exists()
  with checkpoints.checkpoint_manager(str(tmp_path / "ck"), 2) as manager:
    restored, step, meta = checkpoints.restore_latest(manager, state, with_meta=True)
  assert step == steps == meta["step"] and 0 < meta["train_seconds"] <= seconds  # the time when the save began
  assert_trees_equal(state, restored)
  # A rerun finds the run finished and reports the training time recorded in the checkpoint.
  again, again_seconds, again_steps = train_toy(config, ds, runs, tmp_path / "ck")
  assert again_steps == steps and again_seconds == meta["train_seconds"]


def test_single_item_checkpoint_of_earlier_versions_restores(tmp_path):
  import orbax.checkpoint as ocp

  _, _, _, state, _, steps = _trained(tmp_path)
  old = tmp_path / "old"
  with ocp.CheckpointManager(os.path.abspath(old), options=ocp.CheckpointManagerOptions(create=True)) as manager:
    manager.save(steps, args=ocp.args.StandardSave(state))
  (old / "train_seconds.json").write_text(json.dumps({str(steps): 12.5}))
  with checkpoints.checkpoint_manager(str(old), 2) as manager:
    restored, step, meta = checkpoints.restore_latest(manager, state, with_meta=True)
  assert step == steps and meta == {"train_seconds": 12.5}
  assert_trees_equal(state, restored)
