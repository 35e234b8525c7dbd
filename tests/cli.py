"""Run the command line as a user would (a subprocess), for the CLI and resilience tests."""

import os
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config=configs/default.py:smoke", "--config.protocol.classes=(0,)", "--config.model.hidden=(32,16)"]


def env(devices: int = 8):
  e = dict(os.environ)
  e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  e["JAX_PLATFORMS"] = "cpu"
  e["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [e.get("PYTHONPATH")])])  # this checkout, from any cwd
  return e


def run_cli(*args, timeout=300, devices=8, cwd=REPO, **kw):
  return subprocess.run(
    [sys.executable, "-m", "dcvae_jax.main", *args],
    cwd=cwd,
    env=env(devices),
    capture_output=True,
    text=True,
    timeout=timeout,
    **kw,
  )


def _sigint_default():
  # A test run started in the background (`make test &`) inherits SIGINT ignored, and so would the job: Python then
  # installs no KeyboardInterrupt handler. The interrupt tests need the job to see Ctrl-C as a terminal gives it.
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_cli(*args, devices=8):
  return subprocess.Popen(
    [sys.executable, "-m", "dcvae_jax.main", *args],
    cwd=REPO,
    env=env(devices),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    preexec_fn=_sigint_default,
  )


def run_cli_after(prelude: str, *args, timeout=300, cwd=REPO):
  """The command line run after the Python statements ``prelude`` (e.g. ones that block a module's import with
  ``sys.modules[name] = None``, or replace a function), in a fresh interpreter."""
  code = f"{prelude}\nimport sys\nsys.argv = ['dcvae-jax', *{list(args)!r}]\nfrom dcvae_jax.main import run\nrun()"
  return subprocess.run(
    [sys.executable, "-c", code], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
  )


def error_line(proc) -> str:
  """The one ``error:`` line a failed run must print (and nothing that looks like a traceback)."""
  assert proc.returncode != 0, proc.stdout + proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, proc.stderr
  return lines[0]
