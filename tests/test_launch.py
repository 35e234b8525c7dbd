"""launch/*: syntax, and the commands each script prints in dry-run mode (and runs, against fake gcloud/srun).

No test needs gcloud, srun or scontrol installed, and none reaches the network: the dry runs put fakes first on
PATH that record any call (and the tests check there was none); the real-mode runs use fakes that record what
they were asked to do.
"""

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tarfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")
TPU = os.path.join(LAUNCH, "tpu_pod.sh")
SLURM = os.path.join(LAUNCH, "slurm_gpu.sbatch")
MULTI = os.path.join(LAUNCH, "multi_gpu.sh")
SCRIPTS = [TPU, SLURM, MULTI]
CLUSTER_TOOLS = ["gcloud", "gsutil", "srun", "sbatch", "scontrol", "nvidia-smi"]
# Variables a user may have set that would change what the scripts print.
USER_VARS = [
  "TPU_NAME",
  "ZONE",
  "PROJECT",
  "BUCKET",
  "MOUNT_ROOT",
  "POLL_SECONDS",
  "ACCELERATOR_TYPE",
  "RUNTIME_VERSION",
  "SPOT",
  "CONFIG",
  "WORKDIR",
  "RESULTS_DIR",
  "REPO_URL",
  "REPO_REF",
  "REMOTE_DIR",
  "PYTHON",
  "PIP_EXTRAS",
  "EXTRA_ARGS",
  "STEPS",
  "DRY_RUN",
  "REPO_DIR",
  "VENV",
  "COORDINATOR_PORT",
  "GPUS",
  "JAX_PLATFORMS",
  "DCVAE_DISTRIBUTED",
  "JAX_COORDINATOR_ADDRESS",
  "JAX_NUM_PROCESSES",
  "JAX_PROCESS_ID",
  "CUDA_VISIBLE_DEVICES",
]


def _write_exe(path, text):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
  return str(path)


@pytest.fixture
def fakes(tmp_path):
  """A bin folder (first on PATH) whose cluster tools only record their arguments (one JSON list a line)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "calls.jsonl"
  for tool in CLUSTER_TOOLS:
    _write_exe(
      bin_dir / tool,
      f"""#!{sys.executable}
import json, os, sys
with open({str(log)!r}, "a") as f:
  f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
sys.exit(97)
""",
    )
  return bin_dir, log


def _env(bin_dir, tmp_path, **overrides):
  env = {k: v for k, v in os.environ.items() if k not in USER_VARS and not k.startswith("SLURM_")}
  env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
  env["TMPDIR"] = str(tmp_path)
  env.update({k: str(v) for k, v in overrides.items()})
  return env


def _run(script, env, *args, check=True, cwd=None):
  proc = subprocess.run(["bash", script, *args], env=env, cwd=cwd or REPO, capture_output=True, text=True, timeout=300)
  if check:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
  return proc


def _commands(stdout):
  """The printed commands ('+ ...' lines), each split into words as the shell would."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _flag(words, name):
  values = [w.split("=", 1)[1] for w in words if w.startswith(name + "=")]
  assert len(values) == 1, (name, words)
  return values[0]


def _no_calls(log):
  assert not log.exists(), f"a dry run called cluster tools: {log.read_text()}"


def _bash_syntax_ok(script_text):
  proc = subprocess.run(["bash", "-n", "-c", script_text], capture_output=True, text=True)
  assert proc.returncode == 0, (script_text, proc.stderr)


def _main_argv(remote):
  """The ``python -m dcvae_jax.main ...`` words of a remote shell command (after the last '&&')."""
  words = shlex.split(remote.split("&&")[-1])
  words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]  # leading VAR=value assignments
  assert words[1:3] == ["-m", "dcvae_jax.main"], words
  return words


# ----------------------------------------------------------------------------------------------------------
# All scripts.


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


# ----------------------------------------------------------------------------------------------------------
# TPU VM pod.


def _detached_argv(remote):
  """The program's words inside the run step's ``setsid nohup bash -c '...'`` job."""
  words = shlex.split(remote)
  i = words.index("setsid")
  assert words[i - 1] == "DCVAE_DISTRIBUTED=1" and words[i + 1 : i + 4] == ["nohup", "bash", "-c"], words
  job = [part.strip() for part in words[i + 4].split(";")]
  assert len(job) == 2 and job[-1] == "echo $? > logs/run.exit", job
  assert words[i + 5 : i + 13] == [">", "logs/run.log", "2>&1", "<", "/dev/null", "&", "echo", "$!"], words
  return _main_argv(job[0])


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
  assert 'pip install -q -e ".[tpu]"' in remote

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


# ----------------------------------------------------------------------------------------------------------
# SLURM GPU cluster.


def _slurm_tasks(out):
  """{task id: (node, env, argv)} from the dry run's '# task i on node: cd ... && env ... python ...' lines."""
  tasks = {}
  for line in out.splitlines():
    m = re.match(r"# task (\d+) on (\S+): (.*)$", line)
    if m:
      words = shlex.split(m.group(3).split("&&")[-1])
      assert words[0] == "env"
      env = dict(w.split("=", 1) for w in words[1:] if re.match(r"^[A-Z_]+=", w))
      argv = [w for w in words[1:] if not re.match(r"^[A-Z_]+=", w)]
      tasks[int(m.group(1))] = (m.group(2), env, argv)
  return tasks


def test_sbatch_header():
  with open(SLURM) as f:
    header = [l for l in f if l.startswith("#SBATCH")]
  opts = dict(l.split()[1].split("=", 1) for l in header)
  assert opts["--ntasks-per-node"] == "1"
  assert int(opts["--nodes"]) >= 2 and int(opts["--gpus-per-node"]) >= 1


def test_slurm_dry_run_expands_nodelist(fakes, tmp_path):
  bin_dir, log = fakes
  (bin_dir / "scontrol").unlink()
  path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
  if subprocess.run(["bash", "-c", "command -v scontrol"], env={"PATH": path}, capture_output=True).returncode == 0:
    pytest.skip("a real scontrol is installed; the fallback expander is not used")
  env = _env(
    bin_dir,
    tmp_path,
    DRY_RUN=1,
    SLURM_JOB_ID=777,
    SLURM_JOB_NODELIST="gpu[009-011],login5",
    SLURM_NTASKS=4,
    SLURM_CPUS_PER_TASK=12,
    CONFIG="configs/default.py:smoke",
    WORKDIR="/shared/wd",
    VENV="/shared/venv",
    EXTRA_ARGS="--config.seed=1",
  )
  out = _run(SLURM, env, "--config.train.num_epochs=2").stdout
  _no_calls(log)
  ((export, srun),) = [_commands(out)]
  assert export == [
    "export",
    "DCVAE_DISTRIBUTED=1",
    "JAX_COORDINATOR_ADDRESS=gpu009:20777",
    "JAX_NUM_PROCESSES=4",
    "JAX_PLATFORMS=cuda",
  ]
  assert srun[:5] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
  assert "--cpus-per-task=12" in srun
  assert srun[-3:-1] == ["bash", "-c"]
  task_script = srun[-1]
  _bash_syntax_ok(task_script)
  assert task_script.startswith(f"cd {REPO} && source /shared/venv/bin/activate && ")
  assert 'export JAX_PROCESS_ID="$SLURM_PROCID"' in task_script  # evaluated by each task
  argv = [
    "python",
    "-m",
    "dcvae_jax.main",
    "--config=configs/default.py:smoke",
    "--workdir=/shared/wd",
    "--config.seed=1",
    "--config.train.num_epochs=2",
  ]
  assert shlex.split(task_script.split("&&")[-1]) == ["exec"] + argv

  tasks = _slurm_tasks(out)
  assert sorted(tasks) == [0, 1, 2, 3]
  for i, node in enumerate(["gpu009", "gpu010", "gpu011", "login5"]):
    assert tasks[i][0] == node
    assert tasks[i][1] == {
      "DCVAE_DISTRIBUTED": "1",
      "JAX_COORDINATOR_ADDRESS": "gpu009:20777",
      "JAX_NUM_PROCESSES": "4",
      "JAX_PROCESS_ID": str(i),
      "JAX_PLATFORMS": "cuda",
    }
    assert tasks[i][2] == argv


def test_slurm_dry_run_uses_scontrol_and_port(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _write_exe(
    bin_dir / "scontrol", '#!/usr/bin/env bash\n[ "$1 $2 $3" = "show hostnames a[1-2]" ] && printf "alpha\\nbeta\\n"\n'
  )
  env = _env(bin_dir, tmp_path, DRY_RUN=1, SLURM_JOB_NODELIST="a[1-2]", COORDINATOR_PORT=4567)
  out = _run(SLURM, env).stdout
  tasks = _slurm_tasks(out)
  assert [tasks[i][0] for i in (0, 1)] == ["alpha", "beta"]
  assert tasks[1][1]["JAX_COORDINATOR_ADDRESS"] == "alpha:4567" and tasks[1][1]["JAX_PROCESS_ID"] == "1"
  assert tasks[1][1]["JAX_NUM_PROCESSES"] == "2"
  assert tasks[0][2][3:] == ["--config=configs/mnist.py", "--workdir=workdirs/mnist_slurm"]


def test_slurm_defaults_outside_slurm(fakes, tmp_path):
  bin_dir, log = fakes
  (bin_dir / "scontrol").unlink()
  out = _run(SLURM, _env(bin_dir, tmp_path), "--dry-run").stdout
  _no_calls(log)
  assert "coordinator node01:20000" in out
  assert sorted(_slurm_tasks(out)) == [0, 1]
  proc = _run(SLURM, _env(bin_dir, tmp_path), check=False)  # not dry, not in a job
  assert proc.returncode == 2 and "sbatch" in proc.stderr
  _no_calls(log)


def test_slurm_real_mode_sets_each_tasks_env(tmp_path):
  """Inside a (fake) job: a fake srun runs the task script once per task, as SLURM would, with SLURM_PROCID."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _write_exe(bin_dir / "scontrol", '#!/usr/bin/env bash\nprintf "n1\\nn2\\nn3\\n"\n')
  _write_exe(
    bin_dir / "srun",
    f"""#!{sys.executable}
import os, subprocess, sys
args = sys.argv[1:]
n = int([a for a in args if a.startswith("--ntasks=")][0].split("=")[1])
cmd = args[args.index("bash"):]
for i in range(n):
  subprocess.run(cmd, env=dict(os.environ, SLURM_PROCID=str(i)), check=True)
""",
  )
  fake_python = _write_exe(
    tmp_path / "fakepython",
    f"""#!{sys.executable}
import json, os, sys
with open(os.path.join({str(tmp_path)!r}, "task" + os.environ["JAX_PROCESS_ID"] + ".json"), "w") as f:
  json.dump({{"argv": sys.argv[1:], "cwd": os.getcwd(),
             "env": {{k: v for k, v in os.environ.items() if k.startswith(("JAX_", "DCVAE_"))}}}}, f)
""",
  )
  env = _env(
    bin_dir,
    tmp_path,
    SLURM_JOB_ID=123,
    SLURM_JOB_NODELIST="n[1-3]",
    SLURM_NTASKS=3,
    SLURM_SUBMIT_DIR=REPO,
    PYTHON=fake_python,
    CONFIG="configs/mnist.py",
    WORKDIR="/shared/w",
  )
  _run(SLURM, env, "--config.seed=5")
  for i in range(3):
    task = json.loads((tmp_path / f"task{i}.json").read_text())
    assert task["env"] == {
      "DCVAE_DISTRIBUTED": "1",
      "JAX_COORDINATOR_ADDRESS": "n1:20123",
      "JAX_NUM_PROCESSES": "3",
      "JAX_PROCESS_ID": str(i),
      "JAX_PLATFORMS": "cuda",
    }
    assert task["argv"] == [
      "-m",
      "dcvae_jax.main",
      "--config=configs/mnist.py",
      "--workdir=/shared/w",
      "--config.seed=5",
    ]
    assert task["cwd"] == REPO


# ----------------------------------------------------------------------------------------------------------
# Single host, several GPUs.


def test_multi_gpu_dry_run(fakes, tmp_path):
  bin_dir, log = fakes
  env = _env(
    bin_dir,
    tmp_path,
    DRY_RUN=1,
    GPUS="0,1,2,3",
    CONFIG="configs/fashion_mnist.py",
    DCVAE_DISTRIBUTED=1,
    JAX_COORDINATOR_ADDRESS="x:1",
  )
  out = _run(MULTI, env, "--config.train.batch_size=256", cwd=str(tmp_path)).stdout
  _no_calls(log)
  cd, cmd = _commands(out)
  assert cd == ["cd", REPO]
  assert cmd[0] == "env"
  pairs = list(zip(cmd, cmd[1:]))
  for var in ["DCVAE_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"]:
    assert ("-u", var) in pairs, var  # removed: one process, no jax.distributed
  assert "CUDA_VISIBLE_DEVICES=0,1,2,3" in cmd and "JAX_PLATFORMS=cuda" in cmd
  i = cmd.index("python")
  assert cmd[i:] == [
    "python",
    "-m",
    "dcvae_jax.main",
    "--config=configs/fashion_mnist.py",
    "--workdir=workdirs/fashion_mnist",
    "--config.train.batch_size=256",
  ]
  out = _run(MULTI, _env(bin_dir, tmp_path), "--dry-run").stdout  # no GPUS: all GPUs, no CUDA_VISIBLE_DEVICES
  assert "CUDA_VISIBLE_DEVICES" not in out and "--config=configs/mnist.py" in out
  _no_calls(log)


def test_multi_gpu_really_trains_on_cpu(fakes, tmp_path):
  """The real command line, on CPU (JAX_PLATFORMS=cpu) with the smoke config: trains and writes results."""
  bin_dir, log = fakes
  workdir = tmp_path / "wd"
  env = _env(
    bin_dir,
    tmp_path,
    JAX_PLATFORMS="cpu",
    CONFIG="configs/default.py:smoke",
    WORKDIR=workdir,
    PYTHON=sys.executable,
    DCVAE_DISTRIBUTED=1,
  )
  env.pop("XLA_FLAGS", None)
  proc = _run(MULTI, env, "--config.protocol.classes=(0,)", cwd=str(tmp_path))
  results = json.loads((workdir / "results.json").read_text())
  assert results["backend"] == "cpu" and list(results["auroc_per_class"]) == ["0"]
  assert "AUROC" in proc.stdout
  _no_calls(log)
