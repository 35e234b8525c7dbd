"""launch/colab.ipynb: run end to end (CPU, smoke config, offline) in a fresh environment without TensorFlow and
without dcvae_jax, from an archive of the repository as a user would upload it; and run from inside this
checkout, it installs nothing.

The fresh environment is a new venv that sees this environment's packages through a folder of links (so
nothing is downloaded), less dcvae_jax, TensorFlow, TFDS and TensorBoard: like a runtime that has jax and the
scientific stack but not this package.
"""

import json
import os
import subprocess
import sys
import sysconfig
import tarfile

import pytest

nbclient = pytest.importorskip("nbclient")  # test dependencies: nbclient, nbformat, ipykernel
nbformat = pytest.importorskip("nbformat")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "launch", "colab.ipynb")
HIDDEN = ("dcvae_jax", "__editable__", "tensorflow", "tf_keras", "keras", "mlxtend")  # name prefixes
HIDDEN_EXACT = ("tensorboard", "tensorboard_data_server")  # the TensorBoard app (not tensorboardX)


def _hidden(entry: str) -> bool:
  base = entry.split("-")[0].split(".")[0].lower()
  return base.startswith(HIDDEN) or base in HIDDEN_EXACT or entry.endswith(".pth")


def _kernel_manager(tmp_path, python) -> KernelManager:
  """A kernel that runs ``python``, whatever kernelspecs are installed."""
  spec_dir = tmp_path / "kernels" / "dcvae-test"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(
    json.dumps(
      {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "dcvae_jax test",
        "language": "python",
      }
    )
  )
  return KernelManager(
    kernel_name="dcvae-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
  )


def _text(cell) -> str:
  out = []
  for o in cell.get("outputs", []):
    if o.get("output_type") == "stream":
      out.append(o["text"])
    elif "data" in o:
      out.append(o["data"].get("text/plain", ""))
  return "".join(out)


def _fresh_env(tmp_path):
  """A venv without pip whose only packages are links to this environment's, less HIDDEN and .pth files."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = venv / "bin" / "python"
  site = subprocess.run(
    [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  shared = tmp_path / "runtime_packages"
  shared.mkdir()
  ours = sysconfig.get_path("purelib")
  for name in os.listdir(ours):
    if _hidden(name):
      continue
    os.symlink(os.path.join(ours, name), shared / name)
  with open(os.path.join(site, "runtime_packages.pth"), "w") as f:
    f.write(str(shared) + "\n")
  return python, site


def _execute(nb, tmp_path, python, cwd):
  client = nbclient.NotebookClient(
    nb, timeout=600, km=_kernel_manager(tmp_path, python), resources={"metadata": {"path": str(cwd)}}
  )
  client.execute()  # raises CellExecutionError, with the cell's traceback, if any cell fails
  return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture
def notebook_env(monkeypatch):
  # The kernel inherits this environment: CPU only, no package index (nothing may be downloaded).
  monkeypatch.setenv("PIP_NO_INDEX", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device, as on a Colab CPU runtime (and faster)
  monkeypatch.delenv("DCVAE_SOURCE", raising=False)


def test_colab_notebook_runs_end_to_end_from_an_archive(tmp_path, monkeypatch, notebook_env):
  python, site = _fresh_env(tmp_path)
  probe = subprocess.run(
    [
      str(python),
      "-c",
      "import importlib.util as u; print(u.find_spec('tensorflow'), "
      "u.find_spec('dcvae_jax'), u.find_spec('jax') is not None)",
    ],
    capture_output=True,
    text=True,
    check=True,
    cwd=str(tmp_path),
  )
  assert probe.stdout.split() == ["None", "None", "True"], probe.stdout  # jax, but no TensorFlow nor dcvae_jax

  archive = tmp_path / "dcvae_jax-main.tar.gz"  # what a user uploads: the repository in one top folder
  with tarfile.open(archive, "w:gz") as t:
    for name in ("pyproject.toml", "README.md", "dcvae_jax", "configs"):
      t.add(
        os.path.join(REPO, name),
        arcname=f"dcvae_jax-main/{name}",
        filter=lambda m: None if "__pycache__" in m.name or m.name.endswith(".egg-info") else m,
      )
  workdir = tmp_path / "workdir"
  monkeypatch.setenv("DCVAE_SOURCE", str(archive))
  monkeypatch.setenv("DCVAE_WORKDIR", str(workdir))
  monkeypatch.setenv("DCVAE_CONFIG_ARG", "smoke")
  runtime = tmp_path / "content"  # Colab's /content
  runtime.mkdir()

  code = _execute(nbformat.read(NOTEBOOK, as_version=4), tmp_path, python, runtime)
  texts = [_text(c) for c in code]
  install = texts[1]
  assert "pip install --no-deps" in install and "every dependency is already installed" in install, install
  assert f"repository: {runtime / 'dcvae_jax_src' / 'dcvae_jax-main'}" in install
  # Only dcvae_jax went into the fresh environment: jax and the rest stayed the runtime's.
  added = sorted(n for n in os.listdir(site) if not n.startswith(("runtime_packages", "_", "README")))
  assert added and all(n.lower().startswith(("dcvae_jax", "__editable__")) for n in added), added

  table = next((t for t in texts if "AUROC" in t), None)
  assert table is not None, texts
  assert "vae on mnist5k (leave_one_out" in table
  assert " mean " in table
  assert (workdir / "results.json").exists()

  pngs = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  figures = sorted((workdir / "figures").rglob("*.png"))
  assert (workdir / "figures" / "roc.png") in figures
  assert len(figures) > 1, figures  # the ROC curves and per-run figures
  assert len(pngs) == len(figures)
  assert all(len(o["data"]["image/png"]) > 1000 for o in pngs)
  assert (workdir / "report.html").exists()
  assert any("HTML report:" in t for t in texts)


def test_colab_install_cell_in_a_checkout_installs_nothing(tmp_path, notebook_env):
  """Started inside this checkout (where dcvae_jax is installed from it), the first cells find it and install
  nothing."""
  import importlib.metadata

  url = json.loads(importlib.metadata.distribution("dcvae_jax").read_text("direct_url.json") or "{}")
  if os.path.realpath(url.get("url", "").replace("file://", "", 1)) != os.path.realpath(REPO):
    pytest.skip("dcvae_jax is not installed from this checkout")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  first_code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"][:2]
  nb.cells = nb.cells[: first_code[-1] + 1]
  code = _execute(nb, tmp_path, sys.executable, os.path.join(REPO, "launch"))
  install = _text(code[1])
  assert "dcvae_jax is already installed" in install and "pip install" not in install, install
  assert f"repository: {REPO}" in install
