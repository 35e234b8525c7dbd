"""Helpers of the launch-script tests (test_launch.py, test_launch_cluster.py): paths of the scripts, fake cluster
tools, running a script and reading what it called. Their fixtures are in conftest.py."""

import importlib.util
import json
import os
import pkgutil
import re
import shlex
import shutil
import stat
import subprocess
import sys

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
  "DATA_DIR",
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


# What this machine's python (the one running the tests) lacks: the CPU-only-jaxlib and no-TFDS tests need it.
HAS_CUDA_JAXLIB = any(re.fullmatch(r"jax_cuda\d+_(plugin|pjrt)", m.name) for m in pkgutil.iter_modules())
HAS_TFDS = importlib.util.find_spec("tensorflow_datasets") is not None


def _write_exe(path, text):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
  return str(path)


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


def _detached_argv(remote):
  """The program's words inside the run step's ``setsid nohup bash -c '...'`` job."""
  words = shlex.split(remote)
  i = words.index("setsid")
  assert words[i - 1] == "DCVAE_DISTRIBUTED=1" and words[i + 1 : i + 4] == ["nohup", "bash", "-c"], words
  job = [part.strip() for part in words[i + 4].split(";")]
  assert len(job) == 2 and job[-1] == "echo $? > logs/run.exit", job
  assert words[i + 5 : i + 13] == [">", "logs/run.log", "2>&1", "<", "/dev/null", "&", "echo", "$!"], words
  return _main_argv(job[0])


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


def _fake_repo(tmp_path, venv=True):
  """A copy of launch/ in tmp_path/repo, with configs/mnist.py and, if venv, a fake .venv/bin/python. The fake
  python records each call (argv, and for the preflight check (`python - ...`) its stdin's first line) in
  tmp_path/python.jsonl and succeeds."""
  repo = tmp_path / "repo"
  shutil.copytree(LAUNCH, repo / "launch")
  (repo / "configs").mkdir()
  shutil.copy(os.path.join(REPO, "configs", "mnist.py"), repo / "configs")
  if venv:
    (repo / ".venv" / "bin").mkdir(parents=True)
    _write_exe(
      repo / ".venv" / "bin" / "python",
      f"""#!{sys.executable}
import json, sys
call = {{"argv": sys.argv[1:], "stdin": sys.stdin.readline().strip() if sys.argv[1:2] == ["-"] else None}}
with open({str(tmp_path / "python.jsonl")!r}, "a") as f:
  f.write(json.dumps(call) + "\\n")
""",
    )
  return repo


def _python_calls(tmp_path):
  log = tmp_path / "python.jsonl"
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _data_note(out):
  """The '# data: ...' line a script prints."""
  (line,) = [line for line in out.splitlines() if line.startswith("# data: ") and "in case" not in line]
  return line[len("# data: ") :]


def _error_line(proc):
  """A failed run's stderr: exactly one line, an 'error: ...' (no traceback)."""
  assert proc.returncode == 2, proc
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  return lines[0]
