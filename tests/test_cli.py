"""The command line end to end, and every bad input as one clear error line."""

import json
import os
import subprocess
import sysconfig

import numpy as np
import pytest

from tests.cli import REPO, SMOKE, env, error_line, run_cli


def test_smoke_run_end_to_end_then_resume(tmp_path):
  wd = str(tmp_path / "wd")
  proc = run_cli(*SMOKE, f"--workdir={wd}", "--config.model.name=cvae")
  assert proc.returncode == 0, proc.stderr
  assert "mean" in proc.stdout and "AUROC" in proc.stdout
  assert "mnist5k" in proc.stderr and "train /" in proc.stderr  # progress: absl logging, INFO shown by default
  assert "train /" not in proc.stdout and "results: " not in proc.stderr
  results = json.load(open(os.path.join(wd, "results.json")))
  for key in (
    "model",
    "dataset",
    "protocol",
    "auroc_mean",
    "auroc_per_class",
    "aupr_mean",
    "train_seconds",
    "A_normal_mean",
    "E_anomalous_mean",
    "nelbo_auroc_mean",
  ):
    assert key in results
  assert results["model"] == "cvae" and results["dataset"] == "mnist5k"
  assert results["protocol"] == "leave_one_out" and list(results["auroc_per_class"]) == ["0"]
  assert 0.0 <= results["auroc_mean"] <= 1.0 and results["train_seconds"] > 0
  config = json.load(open(os.path.join(wd, "config.json")))
  assert config["model"]["name"] == "cvae" and config["model"]["hidden"] == [32, 16]
  lines = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert lines and all(np.isfinite(l["loss"]) for l in lines)
  assert lines[-1]["step"] == 50  # 3240 normal training images (90%: 10% are validation) // 64, one epoch
  scores = np.load(os.path.join(wd, "scores", "class0_seed0.npz"))
  assert scores["recon"].shape == (1000, 10)  # 9 conditions + the all-zero one
  # A rerun finds every run finished: nothing retrained, same results.
  again = run_cli(*SMOKE, f"--workdir={wd}", "--config.model.name=cvae", "--verbosity=-1")
  assert again.returncode == 0, again.stderr
  assert "train /" not in again.stderr and "AUROC" in again.stdout  # --verbosity=-1: warnings only
  assert again.stdout.splitlines()[-1] == f"results: {os.path.join(wd, 'results.json')}"
  assert len(open(os.path.join(wd, "metrics.jsonl")).readlines()) == len(lines)
  assert json.load(open(os.path.join(wd, "results.json")))["auroc_mean"] == results["auroc_mean"]


def test_more_epochs_continue_training(tmp_path):
  wd = str(tmp_path / "wd")
  assert run_cli(*SMOKE, f"--workdir={wd}").returncode == 0
  os.remove(os.path.join(wd, "runs", "class0_seed0.json"))  # ask for the run again, with more epochs
  proc = run_cli(*SMOKE, f"--workdir={wd}", "--config.train.num_epochs=2")
  assert proc.returncode == 0, proc.stderr
  assert "resuming 1 run(s) from step 50 of 100" in proc.stderr
  steps = [json.loads(l)["step"] for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert steps[-1] == 100 and 51 <= min(s for s in steps if s > 50)


@pytest.mark.parametrize(
  "args, message",
  [
    (["--config.model.name=nope"], "unknown model 'nope'"),
    (["--config.data.name=nope"], "nope"),
    (["--config.protocol.name=nope"], "unknown protocol 'nope'"),
    (["--config.protocol.score=nope"], "unknown score 'nope'"),
    (["--config.protocol.score_condition=nope"], "unknown score_condition 'nope'"),
    (["--config.protocol.classes=(12,)"], "out of range"),
    (["--config.protocol.name=split", "--config.protocol.normal=()", "--config.protocol.anomalous=(1,)"], "non-empty"),
    (["--config.model.nme=x"], 'Did you mean "name"'),
    (["--config.train.batch_size=60"], "not divisible by the 8 devices"),
    (["--config=configs/missing.py"], "No such file"),
    (["--config.model.arch=resnet"], "model.arch"),
    (["--config.protocol.score=auto", "--config.data.validation_fraction=0"], "validation_fraction=0 turns it off"),
    (["--config.data.validation_fraction=0.001"], "gives class 0 of mnist5k 0 of its 400 training images"),
    (["--config.protocol.name=ood", "--config.protocol.ood_dataset=shapes64"], "needs the same image shape"),
  ],
)
def test_bad_input_is_one_error_line(tmp_path, args, message):
  proc = run_cli(*SMOKE, f"--workdir={tmp_path / 'wd'}", *args, timeout=120)
  assert message in error_line(proc)


def test_data_dir_without_files(tmp_path):
  (tmp_path / "empty").mkdir()
  proc = run_cli(
    *SMOKE,
    f"--workdir={tmp_path / 'wd'}",
    "--config.data.name=mnist",
    f"--config.data.data_dir={tmp_path / 'empty'}",
    timeout=120,
  )
  assert "mnist_train.npz" in error_line(proc)


def test_incompatible_workdir_is_refused_and_kept(tmp_path):
  wd = tmp_path / "wd"
  assert run_cli(*SMOKE, f"--workdir={wd}").returncode == 0
  before = sorted(p.name for p in wd.rglob("*"))
  proc = run_cli(*SMOKE, f"--workdir={wd}", "--config.model.name=cvae", timeout=120)
  assert "holds a different run" in error_line(proc) and "model.name" in error_line(proc)
  assert sorted(p.name for p in wd.rglob("*")) == before
  assert json.load(open(wd / "config.json"))["model"]["name"] == "vae"


def test_console_command_from_another_directory(tmp_path):
  """``dcvae-jax`` (pyproject [project.scripts]) run outside the checkout, with the config given by path."""
  script = os.path.join(sysconfig.get_path("scripts"), "dcvae-jax")
  if not os.path.exists(script):
    pytest.skip(
      f"the dcvae-jax console script is not installed next to this interpreter ({script}); pip install -e . installs it"
    )
  config = os.path.join(REPO, "configs", "default.py")  # imports dcvae_jax.config: must work from any cwd
  proc = subprocess.run(
    [script, f"--config={config}:smoke", *SMOKE[1:], f"--workdir={tmp_path / 'wd'}"],
    cwd=tmp_path,
    env=env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[-1] == f"results: {tmp_path / 'wd' / 'results.json'}"
  assert json.load(open(tmp_path / "wd" / "results.json"))["dataset"] == "mnist5k"
