"""launch/*: syntax, and the commands each script prints in dry-run mode (and runs, against fake gcloud/srun).

No test needs gcloud, srun or scontrol installed, and none reaches the network: the dry runs put fakes first on
PATH that record any call (and the tests check there was none); the real-mode runs use fakes that record what
they were asked to do.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

from tests.launch_helpers import (
  LAUNCH,
  REPO,
  SCRIPTS,
  SLURM,
  TPU,
  _bash_syntax_ok,
  _commands,
  _data_note,
  _detached_argv,
  _env,
  _error_line,
  _flag,
  _no_calls,
  _run,
  _write_exe,
)


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_syntax_and_executable(script):
  proc = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  with open(script) as f:
    text = f.read()
  assert text.startswith("#!/usr/bin/env bash\n")
  assert "set -euo pipefail" in text
  assert os.access(script, os.X_OK)


def test_readme_documents_every_script_and_variable():
  with open(os.path.join(LAUNCH, "README.md")) as f:
    readme = f.read()
  for name in ["tpu_pod.sh", "slurm_gpu.sbatch", "multi_gpu.sh", "colab.ipynb", "DRY_RUN"]:
    assert name in readme, name
  for script in SCRIPTS:
    with open(script) as f:
      variables = set(re.findall(r'^([A-Z_]+)="\$\{\1:-', f.read(), re.M))
    assert variables, script
    for var in variables:
      assert f"`{var}`" in readme, f"{os.path.basename(script)}: {var} is not documented in launch/README.md"


def test_tpu_dry_run_defaults(fakes, tmp_path):
  """Defaults: a gs:// workdir in the project's bucket, mounted on every worker; the run detached."""
  bin_dir, log = fakes
  env = _env(
    bin_dir,
    tmp_path,
    DRY_RUN=1,
    TPU_NAME="my-tpu",
    ZONE="europe-west4-a",
    ACCELERATOR_TYPE="v4-32",
    CONFIG="configs/default.py:smoke",
    EXTRA_ARGS="--config.seed=3 --config.train.num_epochs=2",
  )
  out = _run(TPU, env, "--config.model.latent_dim=4").stdout
  _no_calls(log)
  assert [l for l in out.splitlines() if l.startswith("# step:")] == [
    "# step: create",
    "# step: install",
    "# step: run",
    "# step: wait",
    "# step: fetch",
  ]
  assert (
    "# workdir: gs://PROJECT-dcvae/dcvae/default_smoke (every worker: /tmp/gcs/PROJECT-dcvae/dcvae/"
    "default_smoke, gcsfuse mount of gs://PROJECT-dcvae)" in out
  )
  assert "PROJECT is not set; a real run takes it from `gcloud config get-value project`" in out
  lines = [l for l in out.splitlines() if l.startswith("+ ")]

  # The bucket, then the TPU VM: describe || create, one line each.
  describe, create = (shlex.split(w) for w in lines[0][2:].replace(">/dev/null", "").split(" || "))
  assert describe == ["gcloud", "storage", "buckets", "describe", "gs://PROJECT-dcvae"]
  assert create[:5] == ["gcloud", "storage", "buckets", "create", "gs://PROJECT-dcvae"]
  assert _flag(create, "--location") == "europe-west4"
  describe, create = lines[1][2:].split(" || ")
  assert shlex.split(describe)[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "my-tpu"]
  create = shlex.split(create)
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "my-tpu"]
  assert _flag(create, "--zone") == "europe-west4-a"
  assert _flag(create, "--accelerator-type") == "v4-32"
  assert _flag(create, "--version") == "tpu-ubuntu2204-base"
  assert "--spot" not in create and not any(w.startswith("--project") for w in create)

  cmds = _commands(out)[2:]
  # Local copy: a tarball of this checkout to every worker, unpacked and pip-installed on every worker.
  tar, scp, install, run, wait, mkdir, fetch = cmds
  assert tar[:2] == ["tar", "-czf"] and tar[tar.index("-C") + 1] == REPO and "--exclude=.git" in tar
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and scp[5] == tar[2]
  assert scp[6] == "my-tpu:dcvae_jax_code.tgz" and "--worker=all" in scp
  assert install[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"] and "--worker=all" in install
  remote = _flag(install, "--command")
  _bash_syntax_ok(remote)
  assert "tar -xzf dcvae_jax_code.tgz -C dcvae_jax" in remote
  assert "command -v gcsfuse >/dev/null || " in remote and "apt-get install -y -qq gcsfuse" in remote
  assert shlex.split(remote.split("&&")[-1]) == ["python3", "-m", "pip", "install", "-q", "-e", ".[tpu]"]

  # Run: every worker mounts the bucket and starts the program detached; no copy of the workdir anywhere.
  assert run[4:6] == ["ssh", "my-tpu"] and "--worker=all" in run and _flag(run, "--zone") == "europe-west4-a"
  remote = _flag(run, "--command")
  _bash_syntax_ok(remote)
  assert remote.startswith("cd dcvae_jax && mkdir -p logs /tmp/gcs/PROJECT-dcvae && ")
  assert (
    "{ mountpoint -q /tmp/gcs/PROJECT-dcvae || gcsfuse --implicit-dirs PROJECT-dcvae /tmp/gcs/PROJECT-dcvae; }"
    in remote
  )
  assert not any("rsync" in w for c in (install, run) for w in c) and " cp " not in remote
  assert _detached_argv(remote) == [
    "python3",
    "-m",
    "dcvae_jax.main",
    "--config=configs/default.py:smoke",
    "--workdir=/tmp/gcs/PROJECT-dcvae/dcvae/default_smoke",
    "--config.seed=3",
    "--config.train.num_epochs=2",
    "--config.model.latent_dim=4",
  ]

  # Wait on worker 0, then fetch the results (not the checkpoints) from the bucket.
  assert wait[4:6] == ["ssh", "my-tpu"] and "--worker=0" in wait
  _bash_syntax_ok(_flag(wait, "--command"))
  results_dir = "workdirs/tpu_my-tpu_default_smoke"
  assert mkdir == ["mkdir", "-p", results_dir]
  assert fetch == [
    "gcloud",
    "storage",
    "rsync",
    "-r",
    "--exclude=^checkpoints/",
    "gs://PROJECT-dcvae/dcvae/default_smoke",
    results_dir,
  ]


def test_tpu_dry_run_repo_url_bucket_project(fakes, tmp_path):
  bin_dir, log = fakes
  env = _env(
    bin_dir,
    tmp_path,
    TPU_NAME="pod",
    PROJECT="my-proj",
    SPOT=1,
    ACCELERATOR_TYPE="v5litepod-16",
    RUNTIME_VERSION="v2-alpha-tpuv5-lite",
    REPO_URL="https://github.com/me/dcvae_jax",
    REPO_REF="v0.1",
    WORKDIR="gs://bucket/runs/mnist",
    RESULTS_DIR=str(tmp_path / "res"),
    CONFIG="configs/mnist.py",
    STEPS="create install run fetch delete",
  )
  out = _run(TPU, env, "--dry-run").stdout
  _no_calls(log)
  lines = [l for l in out.splitlines() if l.startswith("+ ")]
  bucket = shlex.split(lines[0].split(" || ")[1])
  assert bucket[:5] == ["gcloud", "storage", "buckets", "create", "gs://bucket"]
  assert _flag(bucket, "--project") == "my-proj"
  create = shlex.split(lines[1].split(" || ")[1])
  assert "--spot" in create and _flag(create, "--project") == "my-proj"
  assert _flag(create, "--accelerator-type") == "v5litepod-16"
  assert _flag(create, "--version") == "v2-alpha-tpuv5-lite"
  cmds = _commands(out)[2:]
  for c in cmds:
    if c[0] == "gcloud" and c[1] == "compute":
      assert _flag(c, "--project") == "my-proj" and _flag(c, "--zone")
  install, run, mkdir, fetch, delete = cmds
  assert not any(c[0] == "tar" or "scp" in c for c in cmds)  # cloned, not copied
  remote = _flag(install, "--command")
  _bash_syntax_ok(remote)
  assert "git clone -q https://github.com/me/dcvae_jax dcvae_jax" in remote
  assert "git -C dcvae_jax checkout -q v0.1" in remote and "--worker=all" in install
  assert 'pip install -q -e ".[tpu,tfds]"' in remote  # configs/mnist.py reads TFDS

  # A gs:// WORKDIR is written in place through the mount: nothing is copied before or after the run.
  remote = _flag(run, "--command")
  _bash_syntax_ok(remote)
  assert "--worker=all" in run and "rsync" not in remote
  assert "gcsfuse --implicit-dirs bucket /tmp/gcs/bucket" in remote
  assert _detached_argv(remote)[3:] == ["--config=configs/mnist.py", "--workdir=/tmp/gcs/bucket/runs/mnist"]
  assert mkdir == ["mkdir", "-p", str(tmp_path / "res")]
  assert fetch == [
    "gcloud",
    "storage",
    "rsync",
    "-r",
    "--exclude=^checkpoints/",
    "gs://bucket/runs/mnist",
    str(tmp_path / "res"),
  ]
  assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod"] and "--quiet" in delete


def test_tpu_dry_run_local_workdir(fakes, tmp_path):
  """A non-gs:// WORKDIR is a folder on each worker (one-host slices): no bucket, no mount; fetched by tar."""
  bin_dir, log = fakes
  env = _env(
    bin_dir,
    tmp_path,
    DRY_RUN=1,
    TPU_NAME="one",
    WORKDIR="workdirs/here",
    ACCELERATOR_TYPE="v4-8",
    STEPS="create run fetch",
  )
  out = _run(TPU, env).stdout
  _no_calls(log)
  assert "gcsfuse" not in out and "storage" not in out
  _, run, mkdir, pack, fetch, unpack = _commands(out)
  remote = _flag(run, "--command")
  _bash_syntax_ok(remote)
  assert remote.startswith("cd dcvae_jax && mkdir -p logs && if ")
  assert _detached_argv(remote)[3:] == ["--config=configs/mnist.py", "--workdir=workdirs/here"]
  assert (
    _flag(pack, "--command") == "tar -czf dcvae_jax_results.tgz --exclude=./checkpoints -C dcvae_jax/workdirs/here ."
  )
  assert fetch[4] == "scp" and fetch[5] == "one:dcvae_jax_results.tgz" and "--worker=0" in fetch
  assert unpack == ["tar", "-xzf", fetch[6], "-C", "workdirs/tpu_one_mnist"]


def test_tpu_run_survives_its_session_and_wait_reports_it(fakes, tmp_path):
  """The run step's worker command, executed here: it returns at once, the program runs in a session of its
  own (a closed ssh session's SIGHUP does not reach it), a second start is refused while it lives, and the
  wait step's command waits for it and returns its exit status."""
  bin_dir, log = fakes
  home = tmp_path / "home"
  (home / "dcvae_jax").mkdir(parents=True)
  marker = tmp_path / "program.json"
  fake = _write_exe(
    tmp_path / "fakepython",
    f"""#!{sys.executable}
import json, os, sys, time
time.sleep(4)
with open({str(marker)!r}, "w") as f:
  json.dump({{"argv": sys.argv[1:], "sid": os.getsid(0), "cwd": os.getcwd(),
             "distributed": os.environ.get("DCVAE_DISTRIBUTED")}}, f)
print("trained")
sys.exit(7)
""",
  )
  env = _env(bin_dir, tmp_path, DRY_RUN=1, TPU_NAME="t", WORKDIR="wd", PYTHON=fake, STEPS="run wait", POLL_SECONDS=1)
  out = _run(TPU, env).stdout
  run, wait = _commands(out)
  start = _flag(run, "--command")
  t0 = time.monotonic()
  proc = subprocess.run(
    ["bash", "-c", start], cwd=str(home), capture_output=True, text=True, timeout=60, start_new_session=True
  )  # as an ssh session would
  assert proc.returncode == 0 and "started, log dcvae_jax/logs/run.log" in proc.stdout, proc
  assert time.monotonic() - t0 < 3.5 and not marker.exists()  # detached: did not wait for the program
  again = subprocess.run(["bash", "-c", start], cwd=str(home), capture_output=True, text=True, timeout=60)
  assert "already running" in again.stdout, again
  waited = subprocess.run(
    ["bash", "-c", _flag(wait, "--command")], cwd=str(home), capture_output=True, text=True, timeout=60
  )
  assert waited.returncode == 7 and "trained" in waited.stdout, waited
  program = json.loads(marker.read_text())
  assert program["argv"][:2] == ["-m", "dcvae_jax.main"] and "--workdir=wd" in program["argv"]
  assert program["cwd"] == str(home / "dcvae_jax") and program["distributed"] == "1"
  pid = int((home / "dcvae_jax" / "logs" / "run.pid").read_text())
  assert program["sid"] == pid != os.getsid(0)  # a session of its own, led by the job whose pid was recorded
  assert (home / "dcvae_jax" / "logs" / "run.exit").read_text().strip() == "7"
  _no_calls(log)


def test_tpu_unknown_step_fails(fakes, tmp_path):
  bin_dir, log = fakes
  proc = _run(TPU, _env(bin_dir, tmp_path, DRY_RUN=1, STEPS="create launch"), check=False)
  assert proc.returncode == 2 and "unknown step 'launch'" in proc.stderr
  _no_calls(log)


@pytest.mark.parametrize("workdir", ["workdirs/one_host", ""], ids=["local_workdir", "bucket_workdir"])
def test_tpu_real_mode_runs_what_dry_run_prints(tmp_path, workdir):
  """Against a fake gcloud: describe fails (so create runs), scp or rsync of the results hands them back."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcloud.jsonl"
  payload = tmp_path / "payload.tgz"
  (tmp_path / "payload").mkdir()
  (tmp_path / "payload" / "results.json").write_text('{"auroc_mean": 0.5}')
  with tarfile.open(payload, "w:gz") as t:
    t.add(tmp_path / "payload" / "results.json", arcname="./results.json")
  _write_exe(
    bin_dir / "gcloud",
    f"""#!{sys.executable}
import json, shutil, sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as f:
  f.write(json.dumps(["gcloud"] + args) + "\\n")
if "describe" in args:
  sys.exit(1)
if "scp" in args and ":" not in args[args.index("scp") + 2]:  # remote -> local
  shutil.copy({str(payload)!r}, args[args.index("scp") + 2])
if args[:2] == ["storage", "rsync"]:  # bucket -> local
  shutil.copy({str(tmp_path / "payload" / "results.json")!r}, args[-1])
""",
  )
  results = tmp_path / "results"
  common = dict(
    TPU_NAME="t1",
    ZONE="us-central2-b",
    CONFIG="configs/default.py:smoke",
    RESULTS_DIR=results,
    WORKDIR=workdir,
    PROJECT="proj",
  )
  dry = _run(TPU, _env(bin_dir, tmp_path, DRY_RUN=1, **common)).stdout
  assert not log.exists()
  real = _run(TPU, _env(bin_dir, tmp_path, **common))
  assert json.loads((results / "results.json").read_text()) == {"auroc_mean": 0.5}

  norm = lambda words: [re.sub(r"_\d+\.tgz$", "_PID.tgz", w) for w in words]  # noqa: E731
  called = [norm(json.loads(l)) for l in log.read_text().splitlines()]
  printed = []
  for line in dry.splitlines():
    if line.startswith("+ "):
      parts = (
        line[2:].split(" || ")
        if line.startswith(("+ gcloud storage buckets describe", "+ gcloud compute tpus tpu-vm describe"))
        else [line[2:]]
      )
      printed += [norm(shlex.split(re.sub(r" >/dev/null$", "", part))) for part in parts]
  assert called == [c for c in printed if c[0] == "gcloud"]
  assert not list(tmp_path.glob("dcvae_jax_*_*.tgz"))  # temporary tarballs removed
  assert "+ gcloud compute tpus tpu-vm create t1" in real.stderr  # real mode traces on stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_dry_run_from_defaults(fakes, tmp_path, script):
  """DRY_RUN=1 and nothing else set: every script prints its commands (configs/mnist.py, MNIST from TFDS)."""
  bin_dir, log = fakes
  (bin_dir / "scontrol").unlink()  # slurm_gpu.sbatch: the built-in node list expander
  out = _run(script, _env(bin_dir, tmp_path, DRY_RUN=1), cwd=str(tmp_path)).stdout
  _no_calls(log)
  assert _data_note(out).startswith(
    "mnist from TFDS (the tfds extra), or set DATA_DIR to a folder with mnist_train.npz"
  )
  cmds = _commands(out)
  assert cmds
  if script == TPU:
    install = [c for c in cmds if any(w.startswith("--command=") and "pip install" in w for w in c)]
    assert len(install) == 1 and _flag(install[0], "--command").endswith('pip install -q -e ".[tpu,tfds]"')
    (run,) = [c for c in cmds if any("dcvae_jax.main" in w for w in c)]
    main = _detached_argv(_flag(run, "--command"))
  else:
    main = next(c for c in cmds if "dcvae_jax.main" in c or any("dcvae_jax.main" in w for w in c))
    main = shlex.split(main[-1]) if script == SLURM else main  # srun ... bash -c 'TASK SCRIPT'
  i = main.index("-m")
  assert main[i : i + 3] == ["-m", "dcvae_jax.main", "--config=configs/mnist.py"]
  assert not any("data_dir" in w for w in main)


@pytest.mark.parametrize(
  "config, args, tfds",
  [
    ("configs/fashion_mnist.py", [], True),
    ("configs/emnist.py:smoke", [], True),
    ("configs/mnist_paper.py", [], True),
    ("configs/default.py", [], False),  # mnist5k: shipped with the package
    ("configs/shapes.py:smoke", [], False),  # rendered
    ("configs/default.py:smoke", ["--config.data.name=kmnist"], True),  # the argument decides
    ("configs/mnist.py", ["--config.data.name=shapes"], False),
  ],
)
def test_tpu_installs_tfds_for_a_tfds_config(fakes, tmp_path, config, args, tfds):
  bin_dir, log = fakes
  env = _env(bin_dir, tmp_path, DRY_RUN=1, CONFIG=config, STEPS="install run")
  out = _run(TPU, env, *args).stdout
  _no_calls(log)
  install, run = [c for c in _commands(out) if c[4] == "ssh"]
  extras = ".[tpu,tfds]" if tfds else ".[tpu]"
  assert shlex.split(_flag(install, "--command").split("&&")[-1])[-1] == extras
  assert ("from TFDS" in _data_note(out)) == tfds
  assert not any("data_dir" in w for w in _detached_argv(_flag(run, "--command")))


def test_tpu_tfds_extra_added_once_and_for_unknown_configs(fakes, tmp_path):
  bin_dir, log = fakes
  env = _env(bin_dir, tmp_path, DRY_RUN=1, PIP_EXTRAS="tpu,tfds,plots", STEPS="install")
  out = _run(TPU, env).stdout
  assert _flag(_commands(out)[-1], "--command").endswith('pip install -q -e ".[tpu,tfds,plots]"')
  # A config file that does not say its dataset: tfds is installed in case.
  config = tmp_path / "mine.py"
  config.write_text("from dcvae_jax.config import base_config\n\ndef get_config():\n  return base_config()\n")
  out = _run(TPU, _env(bin_dir, tmp_path, DRY_RUN=1, CONFIG=config, STEPS="install")).stdout
  assert _flag(_commands(out)[-1], "--command").endswith('pip install -q -e ".[tpu,tfds]"')
  assert "# data: installing the tfds extra in case the config reads TFDS" in out
  _no_calls(log)


def test_tpu_data_dir_in_a_bucket_is_mounted_and_passed_through(fakes, tmp_path):
  """DATA_DIR=gs://...: no TFDS; its bucket is mounted on every worker (once, if it is the workdir's too) and the
  program reads the mount."""
  bin_dir, log = fakes
  common = dict(DRY_RUN=1, TPU_NAME="t", CONFIG="configs/mnist.py", STEPS="install run")
  env = _env(bin_dir, tmp_path, DATA_DIR="gs://data-bucket/mnist/", WORKDIR="gs://wd/runs/mnist", **common)
  out = _run(TPU, env).stdout
  _no_calls(log)
  install, run = _commands(out)[2:]
  assert _flag(install, "--command").endswith('pip install -q -e ".[tpu]"')  # no TFDS
  remote = _flag(run, "--command")
  _bash_syntax_ok(remote)
  assert remote.startswith("cd dcvae_jax && mkdir -p logs /tmp/gcs/wd /tmp/gcs/data-bucket && ")
  assert "{ mountpoint -q /tmp/gcs/wd || gcsfuse --implicit-dirs wd /tmp/gcs/wd; }" in remote
  assert "{ mountpoint -q /tmp/gcs/data-bucket || gcsfuse --implicit-dirs data-bucket /tmp/gcs/data-bucket; }" in remote
  assert _detached_argv(remote)[3:] == [
    "--config=configs/mnist.py",
    "--workdir=/tmp/gcs/wd/runs/mnist",
    "--config.data.data_dir=/tmp/gcs/data-bucket/mnist",
  ]
  assert "no TFDS" in _data_note(out)

  env = _env(bin_dir, tmp_path, DATA_DIR="gs://wd/data", WORKDIR="gs://wd/runs/mnist", **common)
  remote = _flag(_commands(_run(TPU, env).stdout)[-1], "--command")
  assert remote.count("gcsfuse") == 1 and "--config.data.data_dir=/tmp/gcs/wd/data" in remote
  _no_calls(log)


@pytest.mark.parametrize("data_dir", ["dcvae_jax/data_files", "/mnt/disks/data"], ids=["checkout", "absolute"])
def test_tpu_data_dir_on_the_workers(fakes, tmp_path, data_dir):
  """A folder of this checkout (copied to the workers with it) or an absolute path on every worker: passed
  through as is, no TFDS, no extra mount."""
  bin_dir, log = fakes
  env = _env(bin_dir, tmp_path, DRY_RUN=1, WORKDIR="wd", DATA_DIR=data_dir, STEPS="install run")
  out = _run(TPU, env).stdout
  _no_calls(log)
  install, run = [c for c in _commands(out) if c[4] == "ssh"]
  assert _flag(install, "--command").endswith('pip install -q -e ".[tpu]"')
  remote = _flag(run, "--command")
  assert "gcsfuse" not in remote
  assert _detached_argv(remote)[3:] == [
    "--config=configs/mnist.py",
    "--workdir=wd",
    f"--config.data.data_dir={data_dir}",
  ]


@pytest.mark.parametrize(
  "env, args, message",
  [
    (dict(DATA_DIR="no/such/folder"), [], "DATA_DIR=no/such/folder is not a folder that install copies"),
    (dict(DATA_DIR="workdirs"), [], "DATA_DIR=workdirs is not a folder that install copies"),
    (dict(DATA_DIR="configs/../.."), [], "DATA_DIR=configs/../.. is not a folder that install copies"),
    (dict(DATA_DIR="/d"), ["--config.data.data_dir=/e"], "DATA_DIR=/d and --config.data.data_dir=/e"),
  ],
  ids=["missing", "not_copied", "outside", "twice"],
)
def test_tpu_bad_data_dir_fails_before_any_command(fakes, tmp_path, env, args, message):
  """Not a dry run: the one-line error comes before gcloud is called at all (no VM, no bucket)."""
  bin_dir, log = fakes
  proc = _run(TPU, _env(bin_dir, tmp_path, PROJECT="p", **env), *args, check=False)
  assert message in _error_line(proc)
  _no_calls(log)
