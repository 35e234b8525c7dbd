"""Two processes on this CPU (localhost coordinator, gloo collectives) train exactly what one process does."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.cli import REPO, SMOKE, env, run_cli
from tests.helpers import assert_trees_close

ARGS = [*SMOKE, "--config.model.name=dcvae", "--config.train.checkpoint_every_steps=20"]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
  port = _free_port()
  wd2 = str(tmp_path / "two")
  procs = []
  for pid in range(2):
    e = env(devices=2)  # 2 processes x 2 devices = the same 4-device mesh as the single process below
    e.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
    procs.append(
      subprocess.Popen(
        [sys.executable, "-m", "dcvae_jax.main", *ARGS, f"--workdir={wd2}"],
        cwd=REPO,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_out, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-3000:]
  assert "AUROC" in outs[0][0] and "AUROC" not in outs[1][0]  # only process 0 reports
  wd1 = str(tmp_path / "one")
  one = run_cli(*ARGS, f"--workdir={wd1}", devices=4)
  assert one.returncode == 0, one.stderr
  r1 = json.load(open(os.path.join(wd1, "results.json")))
  r2 = json.load(open(os.path.join(wd2, "results.json")))
  assert r2["num_processes"] == 2 and r1["num_processes"] == 1
  assert r1["num_devices"] == r2["num_devices"] == 4
  np.testing.assert_allclose(r2["auroc_mean"], r1["auroc_mean"], atol=1e-6)
  s1 = np.load(os.path.join(wd1, "scores", "class0_seed0.npz"))
  s2 = np.load(os.path.join(wd2, "scores", "class0_seed0.npz"))
  np.testing.assert_allclose(s2["recon"], s1["recon"], rtol=1e-5)
  np.testing.assert_allclose(s2["nelbo"], s1["nelbo"], rtol=1e-5)
  # Same parameters: reload both workdirs' final checkpoints and compare leaf by leaf.
  from dcvae_jax import experiment

  p1 = experiment.load_trained(wd1).params["class0_seed0"]
  p2 = experiment.load_trained(wd2).params["class0_seed0"]
  # float32 reduction order differs between 1 and 2 processes. Measured after the whole run: up to 8.6e-6 apart
  # (a few of 304 leaves; the scores above still agree to 1e-5). Before the validation split it was 1.1e-6: an
  # open question (docs: the closing note), not a settled bound.
  assert_trees_close(p1, p2, rtol=1e-3, atol=2e-5)
