"""Nothing lost: killed runs resume exactly, bad numbers stop cleanly, damaged checkpoints, one run per workdir."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dcvae_jax import errors, experiment
from dcvae_jax.data import protocols
from dcvae_jax.train import checkpoints, trainer
from tests.cli import SMOKE, error_line, popen_cli, run_cli
from tests.helpers import assert_trees_equal, tiny_config, toy_dataset

# 30 epochs of 50 steps (3,240 normal training images // 64), a checkpoint every 100 steps (saved at call
# boundaries: steps_per_call = 10). Long enough (1,500 steps) that a signal sent after the first call lands well before the end.
LONG_STEPS = 1500
LONG = [
  *SMOKE,
  "--config.train.num_epochs=30",
  "--config.train.checkpoint_every_steps=100",
  "--config.train.keep_checkpoints=3",
]


def _ckpt_dir(wd):
  return os.path.join(wd, "checkpoints", "class0_seed0")


def _steps(wd):
  d = _ckpt_dir(wd)
  return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def _final_state(wd):
  with checkpoints.checkpoint_manager(_ckpt_dir(wd), 3) as manager:
    step = manager.latest_step()
  import orbax.checkpoint as ocp

  with ocp.CheckpointManager(os.path.abspath(_ckpt_dir(wd))) as manager:
    return step, manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state


def _assert_same_checkpoint(wd_a, wd_b):
  step_a, a = _final_state(wd_a)
  step_b, b = _final_state(wd_b)
  assert step_a == step_b
  assert_trees_equal(a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("straight") / "wd")
  proc = run_cli(*LONG, f"--workdir={wd}", devices=1)
  assert proc.returncode == 0, proc.stderr
  return wd


def _wait_for_checkpoint(proc, wd, timeout=240):
  start = time.time()
  while time.time() - start < timeout:
    if any(s >= 10 for s in _steps(wd)):
      return
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.2)
  raise AssertionError("no checkpoint appeared")


def test_sigkill_then_restart_is_bitwise_identical(tmp_path, uninterrupted):
  wd = str(tmp_path / "wd")
  proc = popen_cli(*LONG, f"--workdir={wd}", devices=1)
  _wait_for_checkpoint(proc, wd)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert max(_steps(wd)) < LONG_STEPS
  again = run_cli(*LONG, f"--workdir={wd}", devices=1)  # the stale lock of the killed run is taken over
  assert again.returncode == 0, again.stderr
  assert "resuming" in again.stderr and "stale lock" in again.stderr  # absl logging: INFO and WARNING
  _assert_same_checkpoint(uninterrupted, wd)
  a = np.load(os.path.join(uninterrupted, "scores", "class0_seed0.npz"))
  b = np.load(os.path.join(wd, "scores", "class0_seed0.npz"))
  np.testing.assert_array_equal(a["recon"], b["recon"])


def test_sigterm_saves_a_checkpoint_then_resumes(tmp_path, uninterrupted):
  wd = str(tmp_path / "wd")
  proc = popen_cli(*LONG, "--config.train.checkpoint_every_steps=1000", f"--workdir={wd}", devices=1)
  start = time.time()
  while not os.path.exists(os.path.join(wd, "metrics.jsonl")) or not open(os.path.join(wd, "metrics.jsonl")).read():
    assert time.time() - start < 240 and proc.poll() is None
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err
  assert "checkpoint saved" in err
  assert _steps(wd) and max(_steps(wd)) < LONG_STEPS
  assert not os.path.exists(os.path.join(wd, ".lock"))
  again = run_cli(*LONG, "--config.train.checkpoint_every_steps=1000", f"--workdir={wd}", devices=1)
  assert again.returncode == 0, again.stderr
  _assert_same_checkpoint(uninterrupted, wd)


def test_nonfinite_loss_stops_and_keeps_the_good_checkpoint(tmp_path):
  wd = str(tmp_path / "wd")
  assert run_cli(*SMOKE, f"--workdir={wd}").returncode == 0
  good = _steps(wd)
  # The workdir refuses another learning rate (tests/test_workdir_identity.py): the trainer itself continues
  # its checkpoints at a rate that diverges.
  config = tiny_config("vae", num_epochs=2, learning_rate=1e30, steps_per_call=10)
  config.model.hidden, config.model.latent_dim, config.protocol.classes = (32, 16), 10, (0,)
  config.train.batch_size = 64
  ds = experiment.load_data(config)
  runs = protocols.make_runs(config.protocol, ds.num_classes, config.seed)
  with pytest.raises(errors.NonFiniteError) as e:
    trainer.train_runs(
      config,
      ds.x_train,
      ds.y_train,
      runs,
      _ckpt_dir(wd),
      image_shape=(28, 28, 1),
      num_conditions=9,
      log=lambda *_: None,
    )
  line = str(e.value)
  assert "non-finite" in line and "at step" in line and "class0_seed0" in line
  assert "step 50" in line  # the last good checkpoint is named
  assert _steps(wd) == good
  step, state = _final_state(wd)
  assert step == 50 and all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))
  # On the command line (a fresh workdir): one error line.
  line = error_line(run_cli(*SMOKE, f"--workdir={tmp_path / 'wd2'}", "--config.train.learning_rate=1e30"))
  assert "non-finite" in line and "at step" in line and "class0_seed0" in line


def test_skip_mode_counts_skipped_updates(tmp_path):
  ds = toy_dataset()
  config = tiny_config("vae", on_nonfinite="skip", learning_rate=1e30)
  config.protocol.classes = (0,)
  results = experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=ds, log=lambda *_: None)
  assert results["runs"][0]["skipped_updates"] > 0


def _damage(step_dir):
  for root, _, files in os.walk(step_dir):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")


def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path):
  ds = toy_dataset()
  config = tiny_config("vae", num_epochs=2, checkpoint_every_steps=4, keep_checkpoints=3)
  config.protocol.classes = (0,)
  wd = str(tmp_path / "wd")
  runs = protocols.make_runs(config.protocol, 3, 0)
  ckpt = os.path.join(wd, "ck")
  state, _, steps = trainer.train_runs(
    config, ds.x_train, ds.y_train, runs, ckpt, image_shape=(8, 8, 1), num_conditions=2, log=lambda *_: None
  )
  all_steps = sorted(int(s) for s in os.listdir(ckpt) if s.isdigit())
  assert all_steps[-1] == steps and len(all_steps) >= 2
  _damage(os.path.join(ckpt, str(steps)))
  messages = []
  with checkpoints.checkpoint_manager(ckpt, 3) as manager:
    restored, step = checkpoints.restore_latest(manager, state, log=messages.append)
  assert step == all_steps[-2]
  assert any("damaged" in m for m in messages)
  # Every checkpoint damaged: a clear error, nothing deleted.
  for s in all_steps:
    _damage(os.path.join(ckpt, str(s)))
  before = sorted(os.listdir(ckpt))
  with checkpoints.checkpoint_manager(ckpt, 3) as manager:
    with pytest.raises(errors.CheckpointError, match="no readable checkpoint.*nothing was deleted"):
      checkpoints.restore_latest(manager, state)
  assert sorted(os.listdir(ckpt)) == before


def test_all_checkpoints_damaged_via_cli(tmp_path):
  wd = str(tmp_path / "wd")
  assert run_cli(*SMOKE, f"--workdir={wd}").returncode == 0
  os.remove(os.path.join(wd, "runs", "class0_seed0.json"))
  for s in _steps(wd):
    _damage(os.path.join(_ckpt_dir(wd), str(s)))
  before = sorted(os.listdir(_ckpt_dir(wd)))
  proc = run_cli(*SMOKE, f"--workdir={wd}", timeout=120)
  assert "no readable checkpoint" in error_line(proc)
  assert sorted(os.listdir(_ckpt_dir(wd))) == before


def test_live_lock_is_refused_stale_lock_taken_over(tmp_path):
  wd = tmp_path / "wd"
  wd.mkdir()
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (wd / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
    with pytest.raises(errors.WorkdirError, match=f"in use by pid {sleeper.pid}"):
      with experiment.WorkdirLock(str(wd)):
        pass
    assert (wd / ".lock").exists()
  finally:
    sleeper.kill()
    sleeper.wait()
  messages = []
  with experiment.WorkdirLock(str(wd), log=messages.append):
    assert json.loads((wd / ".lock").read_text())["pid"] == os.getpid()
  assert any("stale lock" in m for m in messages)
  assert not (wd / ".lock").exists()
