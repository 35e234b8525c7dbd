"""Packaging: a non-editable wheel ships the embedded data (mnist5k.npz and its licence note), every module and
the named configs; installed in a fresh venv it runs from any folder; the core dependencies hold no TensorFlow,
TFDS or mlxtend."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def test_core_dependencies_are_light():
  core = " ".join(_pyproject()["project"]["dependencies"]).lower()
  for heavy in ("tensorflow", "tensorflow-datasets", "mlxtend", "umap-learn", "pandas", "tensorboard "):
    assert heavy not in core, heavy
  extras = _pyproject()["project"]["optional-dependencies"]
  assert any(r.startswith("tensorflow-datasets[tensorflow]") for r in extras["tfds"])
  assert any(r.startswith("tensorboard") for r in extras["tensorboard"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """A non-editable wheel of this checkout, built from a copy (building in place would leave build/ here)."""
  pytest.importorskip("setuptools")
  tmp = tmp_path_factory.mktemp("wheel")
  src = tmp / "src"
  ignore = shutil.ignore_patterns("__pycache__")
  for name in ("dcvae_jax", "configs"):
    shutil.copytree(os.path.join(REPO, name), src / name, ignore=ignore)
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), src / name)
  proc = subprocess.run(
    [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp)],
    capture_output=True,
    text=True,
    cwd=str(tmp),
  )
  if proc.returncode != 0 and "No module named" in proc.stderr:
    pytest.skip(f"cannot build a wheel here: {proc.stderr.strip().splitlines()[-1]}")
  assert proc.returncode == 0, proc.stderr
  (name,) = [p for p in os.listdir(tmp) if p.endswith(".whl")]
  return tmp / name


@pytest.mark.slow
def test_wheel_ships_the_embedded_data_every_module_and_the_configs(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    assert "dcvae_jax/data_files/mnist5k.npz" in names and "dcvae_jax/data_files/README.md" in names
    with open(os.path.join(REPO, "dcvae_jax", "data_files", "mnist5k.npz"), "rb") as f:
      assert z.read("dcvae_jax/data_files/mnist5k.npz") == f.read()
    # pyproject.toml lists the packages: a new folder of modules must be listed there too.
    for root, _, files in os.walk(os.path.join(REPO, "dcvae_jax")):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(root, f), REPO).replace(os.sep, "/")
          assert rel in names, f"{rel} is not in the wheel: add its package to pyproject.toml [tool.setuptools]"
    configs = sorted(f for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py"))
    assert "default.py" in configs
    for f in configs:
      with open(os.path.join(REPO, "configs", f), "rb") as src:
        assert z.read(f"dcvae_jax/_configs/{f}") == src.read(), f


def _venv_with_the_wheel(tmp_path, wheel):
  """A fresh venv that sees this venv's dependencies (a .pth line) and holds the wheel, installed --no-deps."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
  python = venv / "bin" / "python"
  purelib = subprocess.run(
    [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  deps = os.path.realpath(sysconfig.get_path("purelib"))  # its .pth files are not run: no editable dcvae_jax
  with open(os.path.join(purelib, "deps.pth"), "w") as f:
    f.write(deps + "\n")
  proc = subprocess.run(
    [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr
  return venv


@pytest.mark.slow
def test_installed_wheel_runs_named_configs_from_any_directory(tmp_path, wheel):
  """pip install of the wheel (not editable), then the command from a folder outside the checkout: named configs
  (and the default config) come with the package."""
  venv = _venv_with_the_wheel(tmp_path, wheel)
  work = tmp_path / "elsewhere"
  work.mkdir()
  e = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  e.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")

  def run(*args, timeout=120):
    return subprocess.run(args, cwd=work, env=e, capture_output=True, text=True, timeout=timeout)

  where = run(str(venv / "bin" / "python"), "-c", "import dcvae_jax; print(dcvae_jax.__file__)")
  assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # the wheel's copy, not the checkout's
  command = str(venv / "bin" / "dcvae-jax")
  help_ = run(command, "--help")
  assert help_.returncode == 0 and "--mode" in help_.stdout and "mnist" in help_.stdout, help_.stderr
  shown = run(command, "--config=mnist", "--mode=config")
  assert shown.returncode == 0, shown.stderr
  assert "data.name = 'mnist' " in shown.stdout and "model.name = 'dcvae' " in shown.stdout
  default = run(command, "--mode=config")  # no --config: the shipped default.py
  assert default.returncode == 0 and "data.name = 'mnist5k' " in default.stdout, default.stderr
  smoke = run(
    command,
    "--config=default:smoke",
    "--config.protocol.classes=(0,)",
    "--config.model.hidden=(32,16)",
    "--config.train.tensorboard=False",
    "--workdir=wd",
    timeout=600,
  )
  assert smoke.returncode == 0, smoke.stderr[-3000:]
  assert smoke.stdout.splitlines()[-1] == f"results: {os.path.join('wd', 'results.json')}"
  assert json.load(open(work / "wd" / "results.json"))["dataset"] == "mnist5k"
  assert sorted(os.listdir(work)) == ["wd"]  # nothing else written outside the workdir
