"""launch/*: syntax, and the commands each script prints in dry-run mode (and runs, against fake gcloud/srun).

No test needs gcloud, srun or scontrol installed, and none reaches the network: the dry runs put fakes first on
PATH that record any call (and the tests check there was none); the real-mode runs use fakes that record what
they were asked to do.
"""

import itertools
import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.launch_helpers import (
  HAS_CUDA_JAXLIB,
  HAS_TFDS,
  MULTI,
  REPO,
  SLURM,
  _bash_syntax_ok,
  _commands,
  _data_note,
  _env,
  _error_line,
  _fake_repo,
  _no_calls,
  _python_calls,
  _run,
  _slurm_tasks,
  _write_exe,
)


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
  assert task_script.startswith(
    f"cd {REPO} && source /shared/venv/bin/activate && source launch/lib.sh && preflight python cuda && "
  )  # mnist5k: no TFDS to check for
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
if sys.argv[1] == "-":  # the preflight check, before the program
  with open(os.path.join({str(tmp_path)!r}, "preflight" + os.environ["SLURM_PROCID"] + ".json"), "w") as f:
    json.dump(sys.argv[2:], f)
  sys.exit(0)
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
    # each task checked first that its python can run the program, and for TFDS (configs/mnist.py)
    assert json.loads((tmp_path / f"preflight{i}.json").read_text()) == [fake_python, "cuda", "mnist"]


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
  pairs = list(itertools.pairwise(cmd))
  for var in ["DCVAE_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"]:
    assert ("-u", var) in pairs, var  # removed: one process, no jax.distributed
  assert "CUDA_VISIBLE_DEVICES=0,1,2,3" in cmd and "JAX_PLATFORMS=cuda" in cmd
  python = ".venv/bin/python" if os.access(os.path.join(REPO, ".venv", "bin", "python"), os.X_OK) else "python"
  i = cmd.index(python)
  assert cmd[i:] == [
    python,
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


def test_slurm_real_mode_fails_on_a_tasks_preflight(tmp_path):
  """A task whose python has a CPU-only jaxlib (this machine's) stops before the program with one line."""
  if HAS_CUDA_JAXLIB:
    pytest.skip("this python's jaxlib has a CUDA backend")
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _write_exe(bin_dir / "scontrol", '#!/usr/bin/env bash\nprintf "n1\\n"\n')
  _write_exe(
    bin_dir / "srun",
    f"""#!{sys.executable}
import os, subprocess, sys
args = sys.argv[1:]
sys.exit(subprocess.run(args[args.index("bash"):], env=dict(os.environ, SLURM_PROCID="0")).returncode)
""",
  )
  env = _env(
    bin_dir,
    tmp_path,
    SLURM_JOB_ID=5,
    SLURM_JOB_NODELIST="n1",
    SLURM_NTASKS=1,
    SLURM_SUBMIT_DIR=REPO,
    PYTHON=sys.executable,
    CONFIG="configs/default.py:smoke",
    WORKDIR=str(tmp_path / "wd"),
  )
  proc = _run(SLURM, env, check=False)
  line = _error_line(proc)
  assert "CPU-only jaxlib (no CUDA backend)" in line and 'pip install -e ".[gpu]"' in line
  assert not (tmp_path / "wd").exists()  # the program never started


@pytest.mark.parametrize("venv", [True, False], ids=["venv", "no_venv"])
def test_multi_gpu_and_slurm_pick_the_checkouts_venv(fakes, tmp_path, venv):
  bin_dir, log = fakes
  (bin_dir / "scontrol").unlink()
  repo = _fake_repo(tmp_path, venv=venv)
  python = ".venv/bin/python" if venv else "python"
  out = _run(str(repo / "launch" / "multi_gpu.sh"), _env(bin_dir, tmp_path, DRY_RUN=1)).stdout
  cd, cmd = _commands(out)
  assert cd == ["cd", str(repo)] and cmd[cmd.index("-m") - 1] == python
  out = _run(str(repo / "launch" / "slurm_gpu.sbatch"), _env(bin_dir, tmp_path, DRY_RUN=1)).stdout
  for _, _, argv in _slurm_tasks(out).values():
    assert argv[0] == python
  assert f"preflight {python} cuda mnist && " in _commands(out)[-1][-1]
  # VENV: its python, activated in every task
  out = _run(str(repo / "launch" / "slurm_gpu.sbatch"), _env(bin_dir, tmp_path, DRY_RUN=1, VENV="/v")).stdout
  assert all(argv[0] == "python" for _, _, argv in _slurm_tasks(out).values())
  _no_calls(log)


def test_multi_gpu_real_run_uses_the_venv(fakes, tmp_path):
  """Not a dry run, with the checkout's (fake) venv: its python passes the check, then runs the program."""
  bin_dir, log = fakes
  repo = _fake_repo(tmp_path)
  _run(str(repo / "launch" / "multi_gpu.sh"), _env(bin_dir, tmp_path), "--config.seed=2", cwd=str(tmp_path))
  check, program = _python_calls(tmp_path)
  assert check["argv"] == ["-", ".venv/bin/python", "cuda", "mnist"] and check["stdin"].startswith("import ")
  assert program["argv"] == [
    "-m",
    "dcvae_jax.main",
    "--config=configs/mnist.py",
    "--workdir=workdirs/mnist",
    "--config.seed=2",
  ]


def test_multi_gpu_data_dir(fakes, tmp_path):
  """DATA_DIR is passed through as config.data.data_dir and replaces TFDS (no TFDS check); a missing folder
  fails with one line before the program; DATA_DIR and the argument together are an error."""
  bin_dir, log = fakes
  repo = _fake_repo(tmp_path)
  script = str(repo / "launch" / "multi_gpu.sh")
  out = _run(script, _env(bin_dir, tmp_path, DRY_RUN=1, DATA_DIR="data/mnist")).stdout
  assert _commands(out)[-1][-5:] == [
    "-m",
    "dcvae_jax.main",
    "--config=configs/mnist.py",
    "--workdir=workdirs/mnist",
    "--config.data.data_dir=data/mnist",
  ]
  assert _data_note(out) == "mnist from the data_dir data/mnist (npz or IDX files), no TFDS"

  proc = _run(script, _env(bin_dir, tmp_path, DATA_DIR="data/mnist"), check=False)
  assert "the data_dir data/mnist is not a folder" in _error_line(proc)
  assert not _python_calls(tmp_path)

  (repo / "data" / "mnist").mkdir(parents=True)
  _run(script, _env(bin_dir, tmp_path, DATA_DIR="data/mnist"))
  check, program = _python_calls(tmp_path)
  assert check["argv"] == ["-", ".venv/bin/python", "cuda", ""]  # no TFDS to check for
  assert program["argv"][-1] == "--config.data.data_dir=data/mnist"

  proc = _run(script, _env(bin_dir, tmp_path, DATA_DIR="x"), "--config.data.data_dir=y", check=False)
  assert "DATA_DIR=x and --config.data.data_dir=y" in _error_line(proc)


def test_slurm_data_dir(fakes, tmp_path):
  bin_dir, log = fakes
  (bin_dir / "scontrol").unlink()
  env = _env(bin_dir, tmp_path, DRY_RUN=1, DATA_DIR="/shared/data", CONFIG="configs/kmnist.py")
  out = _run(SLURM, env).stdout
  _no_calls(log)
  assert _data_note(out) == "kmnist from the data_dir /shared/data (npz or IDX files), no TFDS"
  for _, _, argv in _slurm_tasks(out).values():
    assert argv[-1] == "--config.data.data_dir=/shared/data"
  assert " cuda && export JAX_PROCESS_ID=" in _commands(out)[-1][-1]  # no TFDS to check for
  # not a dry run: a DATA_DIR that is not a folder fails before srun
  env = _env(bin_dir, tmp_path, SLURM_JOB_ID=1, SLURM_JOB_NODELIST="n1", DATA_DIR=str(tmp_path / "none"))
  proc = _run(SLURM, env, check=False)
  assert "is not a folder" in _error_line(proc)
  _no_calls(log)


def _cpu_python(tmp_path, isolated=False):
  """This machine's python (CPU-only jaxlib, no TFDS); isolated: without its site-packages (no absl, no jax)."""
  if not isolated:
    return sys.executable
  return _write_exe(tmp_path / "barepython", f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')


@pytest.mark.parametrize(
  "platform, config, isolated, expected",
  [
    ("", "configs/default.py:smoke", False, 'has a CPU-only jaxlib (no CUDA backend): {py} -m pip install -e ".[gpu]"'),
    (
      "cpu",
      "configs/mnist.py",
      False,
      'has no TFDS, which dataset mnist needs: {py} -m pip install -e ".[tfds]" (or set DATA_DIR to a folder '
      "with mnist_train.npz + mnist_test.npz or its IDX files)",
    ),
    (
      "",
      "configs/fashion_mnist.py",
      False,
      "has a CPU-only jaxlib (no CUDA backend) and no TFDS, which dataset fashion_mnist needs: "
      '{py} -m pip install -e ".[gpu,tfds]"',
    ),
    ("", "configs/shapes.py", True, "cannot run dcvae_jax (no module absl"),
  ],
  ids=["cpu_only_jaxlib", "no_tfds", "both", "no_dependencies"],
)
def test_multi_gpu_preflight_one_line(fakes, tmp_path, platform, config, isolated, expected):
  """Not a dry run, with this machine's CPU-only python: one 'error:' line that says what to install, no
  traceback, and the program never starts."""
  if HAS_CUDA_JAXLIB and not platform and not isolated:
    pytest.skip("this python's jaxlib has a CUDA backend")
  if HAS_TFDS and "tfds" in expected:
    pytest.skip("this python has TFDS")
  bin_dir, log = fakes
  python = _cpu_python(tmp_path, isolated)
  env = _env(bin_dir, tmp_path, PYTHON=python, CONFIG=config, WORKDIR=tmp_path / "wd")
  if platform:
    env["JAX_PLATFORMS"] = platform
  proc = _run(MULTI, env, check=False)
  line = _error_line(proc)
  assert line.startswith(f"error: {python} " + expected.format(py=python)), line
  assert not (tmp_path / "wd").exists() and "Traceback" not in proc.stderr
  _no_calls(log)
