"""launch/colab.ipynb runs end to end (CPU, smoke config, offline) and shows the results table and the figures."""

import json
import os
import sys

import nbclient  # test dependencies: nbclient, nbformat, ipykernel
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "launch", "colab.ipynb")


def _kernel_manager(tmp_path) -> KernelManager:
  """A kernel that runs this very interpreter (the test's environment), whatever kernelspecs are installed."""
  spec_dir = tmp_path / "kernels" / "dcvae-test"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "dcvae_jax test", "language": "python"}))
  return KernelManager(kernel_name="dcvae-test",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))


def _text(cell) -> str:
  out = []
  for o in cell.get("outputs", []):
    if o.get("output_type") == "stream":
      out.append(o["text"])
    elif "data" in o:
      out.append(o["data"].get("text/plain", ""))
  return "".join(out)


def test_colab_notebook_runs_end_to_end(tmp_path, monkeypatch):
  workdir = tmp_path / "workdir"
  # The kernel inherits this environment: CPU only (conftest), the smoke config, a temporary workdir, and no
  # way to reach the network if the install cell ever decided to install.
  monkeypatch.setenv("DCVAE_WORKDIR", str(workdir))
  monkeypatch.setenv("DCVAE_CONFIG_ARG", "smoke")
  monkeypatch.setenv("DCVAE_REPO_URL", str(tmp_path / "no-such-repo"))
  monkeypatch.setenv("PIP_NO_INDEX", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device, as on a Colab CPU runtime (and faster)

  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, km=_kernel_manager(tmp_path),
                                   resources={"metadata": {"path": REPO}})
  client.execute()  # raises CellExecutionError, with the cell's traceback, if any cell fails

  code = [c for c in nb.cells if c.cell_type == "code"]
  texts = [_text(c) for c in code]
  assert "dcvae_jax is already installed" in texts[0], texts[0]  # nothing was cloned or pip-installed

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
