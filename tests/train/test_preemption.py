"""Preemption on several processes: SIGTERM to one of two processes stops both at the same step (Orbax's
preemption sync point), each with a checkpoint of that step and the usual exit status, and a rerun ends bitwise
equal to an uninterrupted two-process run."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax

from tests.cli import REPO, SMOKE, env
from tests.helpers import assert_trees_equal

# 30 epochs of 50 steps (10 per compiled call): long enough that a signal sent after the first call lands well
# before the end; no periodic checkpoint, so the only one before the end is the preemption's.
ARGS = [
  *SMOKE,
  "--config.train.num_epochs=30",
  "--config.train.checkpoint_every_steps=100000",
  "--config.train.keep_checkpoints=3",
]
TOTAL_STEPS = 1500


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(workdir):
  port = _free_port()
  procs = []
  for pid in range(2):
    e = env(devices=1)
    e.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
    procs.append(
      subprocess.Popen(
        [sys.executable, "-m", "dcvae_jax.main", *ARGS, f"--workdir={workdir}"],
        cwd=REPO,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  return procs


def _finish(procs, timeout=400):
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=timeout))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  return outs


def _ckpt(workdir):
  return os.path.join(workdir, "checkpoints", "class0_seed0")


def _steps(workdir):
  d = _ckpt(workdir)
  return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def _final_state(workdir):
  import orbax.checkpoint as ocp

  step = _steps(workdir)[-1]
  handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
  with ocp.CheckpointManager(os.path.abspath(_ckpt(workdir)), item_handlers=handlers) as manager:
    # Saved by two processes: restore onto this process's one device.
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), manager.item_metadata(step).state
    )
    got = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
    )
  return step, got.state, got.meta


def test_sigterm_to_one_of_two_processes(tmp_path):
  ref = str(tmp_path / "ref")
  procs = _start(ref)  # the uninterrupted reference
  for p, (_out, err) in zip(procs, _finish(procs), strict=True):
    assert p.returncode == 0, err[-3000:]

  wd = str(tmp_path / "wd")
  procs = _start(wd)
  metrics = os.path.join(wd, "metrics.jsonl")
  start = time.time()
  while not (os.path.exists(metrics) and open(metrics).read()):  # the first compiled call is done
    assert time.time() - start < 300 and all(p.poll() is None for p in procs), [p.poll() for p in procs]
    time.sleep(0.1)
  procs[1].send_signal(signal.SIGTERM)  # to process 1 only
  outs = _finish(procs, timeout=300)
  stopped = []
  for p, (_out, err) in zip(procs, outs, strict=True):
    assert p.returncode == 130, err[-3000:]
    m = re.search(r"stopped by signal \d+ at step (\d+); checkpoint saved", err)
    assert m, err[-3000:]
    stopped.append(int(m.group(1)))
  assert stopped[0] == stopped[1] < TOTAL_STEPS  # both at the same step
  assert _steps(wd) == [stopped[0]]  # that step's checkpoint, complete (an unfinished one has no number)
  step, _, meta = _final_state(wd)
  assert meta["step"] == step == stopped[0] and meta["train_seconds"] > 0
  assert not os.path.exists(os.path.join(wd, ".lock"))

  procs = _start(wd)  # the rerun resumes
  for p, (_out, err) in zip(procs, _finish(procs), strict=True):
    assert p.returncode == 0, err[-3000:]
  step_a, a, _ = _final_state(ref)
  step_b, b, _ = _final_state(wd)
  assert step_a == step_b == TOTAL_STEPS
  assert_trees_equal(a, b)
