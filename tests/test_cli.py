"""The command line end to end, and every bad input as one clear error line."""

import json
import os
import signal
import subprocess
import sysconfig
import threading

import numpy as np
import pytest

from dcvae_jax.config import FIELD_HELP, base_config, leaves
from tests.cli import REPO, SMOKE, env, error_line, popen_cli, run_cli, run_cli_after


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
    (["--config.model.nme=x"], "unknown config key 'model.nme'; did you mean 'model.name'?"),
    (["--config.train.batch_size=60"], "not divisible by the 8 devices"),
    (["--config=configs/missing.py"], "no config file 'configs/missing.py'"),
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


def test_help_shows_the_projects_flags_and_modes():
  proc = run_cli("--help", timeout=60)
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  assert "usage: dcvae-jax" in out and "Try --helpfull" not in out
  for flag in ("--config", "--config.KEY=VALUE", "--workdir", "--mode", "--verbosity", "--helpfull"):
    assert flag in out, flag
  for mode in ("train", "report", "table", "rescore", "config"):
    assert f"\n  {mode} " in out, mode  # the list of modes, one per line
  names = next(l for l in out.splitlines() if "config names:" in l)
  assert "default" in names and "mnist" in names
  assert len(out.splitlines()) < 50  # short: the library flags stay behind --helpfull


def test_mode_config_prints_every_field_with_its_meaning():
  proc = run_cli("--config=mnist:smoke", "--mode=config", "--config.train.num_epochs=3", timeout=60)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  by_key = {l.split(" = ", 1)[0]: l for l in lines}
  assert sorted(by_key) == [k for k, _ in leaves(base_config())]
  assert by_key["train.num_epochs"].startswith("train.num_epochs = 3 ")  # the override is applied
  assert by_key["data.name"].startswith("data.name = 'mnist' ")  # the named config is loaded
  assert by_key["model.hidden"].startswith("model.hidden = (64, 32) ")  # and its :smoke argument
  for key, line in by_key.items():
    assert line.endswith(f"  # {FIELD_HELP[key]}"), line


def test_every_config_field_has_a_help_line():
  keys = [k for k, _ in leaves(base_config())]
  missing = [k for k in keys if not FIELD_HELP.get(k, "").strip()]
  assert not missing, f"base_config fields without a FIELD_HELP line (dcvae_jax/config.py): {missing}"
  assert sorted(FIELD_HELP) == keys, "FIELD_HELP names a field that base_config does not have"
  assert all("\n" not in v and len(v) <= 110 for v in FIELD_HELP.values())  # one line each


def test_config_key_typo_is_one_clean_line():
  proc = run_cli("--config=default:smoke", "--config.train.num_epoch=3", timeout=60)
  assert proc.returncode == 2
  assert error_line(proc) == (
    "error: bad command line: unknown config key 'train.num_epoch'; did you mean 'train.num_epochs'?"
  )
  proc = run_cli("--config.trai.num_epochs=3", timeout=60)
  assert error_line(proc) == (
    "error: bad command line: unknown config key 'trai.num_epochs'; did you mean 'train.num_epochs'?"
  )
  # A flat model weight of earlier versions names its new places (each model's own section).
  proc = run_cli("--config=default:smoke", "--config.model.tc_beta=2", timeout=60)
  assert proc.returncode == 2
  assert error_line(proc) == (
    "error: bad command line: config key 'model.tc_beta' has moved to each model's own section: "
    "'model.beta_tcvae.tc_beta' or 'model.dcvae.tc_beta' (e.g. --config.model.dcvae.tc_beta=...)"
  )
  proc = run_cli("--config=default:smoke", "--config.model.dcvae.tc_bta=2", timeout=60)
  assert error_line(proc).endswith("unknown config key 'model.dcvae.tc_bta'; did you mean 'model.dcvae.tc_beta'?")


def test_named_configs_resolve_from_any_directory(tmp_path):
  """A bare name (and configs/<name>.py) finds the checkout's configs/ from another folder; a path still works."""
  for arg in ("mnist", "mnist.py", "configs/mnist.py", os.path.join(REPO, "configs", "mnist.py")):
    proc = run_cli(f"--config={arg}", "--mode=config", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, (arg, proc.stderr)
    assert "data.name = 'mnist' " in proc.stdout, arg
  (tmp_path / "mine.py").write_text(
    "from dcvae_jax.config import base_config\n\ndef get_config():\n  c = base_config()\n  c.seed = 7\n  return c\n"
  )
  proc = run_cli("--config=mine.py", "--mode=config", cwd=tmp_path, timeout=60)
  assert proc.returncode == 0 and "seed = 7 " in proc.stdout, proc.stderr
  proc = run_cli("--config=mnst", "--mode=config", cwd=tmp_path, timeout=60)
  assert proc.returncode == 2 and "no config file 'mnst'" in error_line(proc) and "mnist" in error_line(proc)


def test_url_workdir_is_refused_before_anything_is_created(tmp_path):
  proc = run_cli(*SMOKE, "--workdir=gs://bucket/run", cwd=tmp_path, timeout=60)
  line = error_line(proc)
  assert proc.returncode == 2
  assert "gs://bucket/run" in line and "gcsfuse" in line and "launch/tpu_pod.sh" in line
  assert list(tmp_path.iterdir()) == []  # no gs: folder


# Each case blocks the import of the modules that an extra brings, and also JAX's: the check must come before
# JAX starts (and so before any data is loaded or anything trained), or the run fails on `import jax` instead.
@pytest.mark.parametrize(
  "blocked, args, wanted",
  [
    (["matplotlib"], ["--mode=report"], '--mode=report needs matplotlib: pip install -e ".[plots]"'),
    (["matplotlib"], ["--mode=table"], '"dcvae_jax[plots]"'),
    (["tensorflow_datasets"], ["--config=mnist:smoke"], 'pip install -e ".[tfds]"'),
    (["tensorboardX"], [*SMOKE, "--config.train.tensorboard=True"], "--config.train.tensorboard=False"),
  ],
)
def test_missing_extra_is_one_line_at_once(tmp_path, blocked, args, wanted):
  prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in [*blocked, "jax"])
  proc = run_cli_after(prelude, *args, f"--workdir={tmp_path / 'wd'}", timeout=60)
  assert proc.returncode == 1, proc.stderr
  assert wanted in error_line(proc)
  assert not (tmp_path / "wd").exists()


def test_data_dir_makes_tfds_unnecessary(tmp_path):
  """With data.data_dir the dataset is read from files: no TFDS needed, so no error about it (the empty folder
  then fails on its missing files, after the check)."""
  (tmp_path / "empty").mkdir()
  proc = run_cli_after(
    "import sys\nsys.modules['tensorflow_datasets'] = None",
    *SMOKE,
    "--config.data.name=mnist",
    f"--config.data.data_dir={tmp_path / 'empty'}",
    f"--workdir={tmp_path / 'wd'}",
    timeout=120,
  )
  assert "mnist_train.npz" in error_line(proc) and "pip install" not in error_line(proc)


@pytest.mark.parametrize(
  "mode, target",
  [
    ("train", "dcvae_jax.experiment.train_and_evaluate"),
    ("report", "dcvae_jax.report.html.make_report"),
    ("table", "dcvae_jax.table.run_table"),
  ],
)
def test_ctrl_c_in_any_mode_is_one_line(tmp_path, mode, target):
  module, name = target.rsplit(".", 1)
  prelude = f"import {module}\ndef _interrupt(*a, **k):\n  raise KeyboardInterrupt\n{module}.{name} = _interrupt"
  proc = run_cli_after(prelude, *SMOKE, f"--mode={mode}", f"--workdir={tmp_path / 'wd'}", timeout=120)
  assert proc.returncode == 130, proc.stderr
  assert error_line(proc).startswith(f"error: interrupted (Ctrl-C) in --mode={mode};")
  assert "rerun the same command" in error_line(proc)


def _interrupt_when(proc, ready, timeout=400):
  """SIGINT to ``proc`` once ``ready(stderr so far)`` holds; returns (exit status, the whole stderr)."""
  err, seen = [], threading.Event()

  def read():
    for line in iter(proc.stderr.readline, ""):
      err.append(line)
      if ready("".join(err)):
        seen.set()
    seen.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  try:
    assert seen.wait(timeout) and proc.poll() is None, "".join(err)[-3000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
  reader.join(timeout=60)
  proc.stdout.close()
  return proc.returncode, "".join(err)


@pytest.mark.slow
def test_ctrl_c_while_training_ends_the_progress_bar_line(tmp_path):
  """The error line is a line of its own: the progress bar's line is ended first (not overwritten with \\r)."""
  wd = tmp_path / "wd"
  metrics = wd / "metrics.jsonl"
  proc = popen_cli(
    *SMOKE,
    f"--workdir={wd}",
    "--config.train.progress=True",
    "--config.train.num_epochs=30",
    "--config.train.checkpoint_every_steps=100000",
  )
  status, err = _interrupt_when(proc, lambda _: metrics.exists() and metrics.read_text().strip() != "")
  assert status == 130, err[-3000:]
  lines = err.split("\n")
  assert any("train 1 run(s)" in l for l in lines), err[-3000:]  # the bar was drawn
  errors = [l for l in lines if "error:" in l]
  assert len(errors) == 1 and errors[0].startswith("error: stopped by signal 2 at step"), repr(errors)
  assert "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_while_scoring_keeps_finished_runs_and_a_rerun_finishes(tmp_path):
  wd = tmp_path / "wd"
  # K = 1024 makes each run's scoring last seconds, so the interrupt lands while the second run is scored.
  args = [*SMOKE, "--config.protocol.classes=(0,1)", "--config.train.runs_per_program=1", f"--workdir={wd}"]
  args += ["--config.eval.iwae_samples=1024"]
  proc = popen_cli(*args)
  status, err = _interrupt_when(proc, lambda text: text.count("scoring 1 run(s)") >= 2)  # the second run
  assert status == 130, err[-3000:]
  assert "Traceback" not in err
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert lines == [
    "error: interrupted (Ctrl-C) in --mode=train; finished runs and their scores are kept: rerun the same "
    "command to finish"
  ], err[-3000:]
  finished = json.loads((wd / "runs" / "class0_seed0.json").read_text())
  assert finished["run"] == "class0_seed0"
  with np.load(wd / "scores" / "class0_seed0.npz") as f:
    assert f["recon"].shape == (1000, 1)
  assert not (wd / "runs" / "class1_seed0.json").exists() and not (wd / "results.json").exists()
  assert not [p for p in wd.rglob("*") if ".tmp" in p.name], "a half-written file was left"
  assert not (wd / ".lock").exists()

  again = run_cli(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stderr.count("scoring 1 run(s)") == 1  # only the unfinished run is scored again
  assert json.loads((wd / "runs" / "class0_seed0.json").read_text()) == finished
  results = json.loads((wd / "results.json").read_text())
  assert sorted(results["auroc_per_class"]) == ["0", "1"]
