"""Figures and the HTML report: every file is written, is a valid PNG of the documented size, and is linked."""

import os
import struct

import numpy as np
import pytest

from dcvae_jax import errors, experiment
from dcvae_jax.report import html as report
from dcvae_jax.report import plots
from dcvae_jax.report import style as plot_style
from tests.helpers import tiny_config, toy_dataset

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
  """(width, height) from the IHDR chunk; fails unless the file is a PNG."""
  with open(path, "rb") as f:
    head = f.read(33)
  assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
  length, kind = struct.unpack(">I4s", head[8:16])
  assert kind == b"IHDR" and length == 13, f"{path}: first chunk is not IHDR"
  return struct.unpack(">II", head[16:24])


def assert_png(path, size):
  assert os.path.isfile(path), path
  assert png_size(path) == size, (path, png_size(path), size)
  from PIL import Image

  with Image.open(path) as im:
    im.load()  # decodes every chunk: a truncated or corrupt file fails here
    assert np.asarray(im).std() > 0, f"{path} is blank"


def expected_sizes(num_conditions, per_group, latent_dim, grid=15, values=9):
  cw, ch = plot_style.RECON_CELL
  ml, mt = plot_style.RECON_MARGIN
  panels_x, panels_y = min(num_conditions, 3), -(-num_conditions // 3)
  rows = min(latent_dim, report.MAX_TRAVERSAL_DIMS)
  return {
    "reconstructions": (ml + per_group * cw, mt + 4 * ch),
    "latent": plot_style.SCATTER_SIZE,
    "manifold": (
      panels_x * plot_style.MANIFOLD_PANEL[0],
      plot_style.MANIFOLD_TOP + panels_y * plot_style.MANIFOLD_PANEL[1],
    ),
    "traversals": (
      plot_style.TRAVERSAL_MARGIN[0] + values * plot_style.TRAVERSAL_CELL,
      plot_style.TRAVERSAL_MARGIN[1] + rows * plot_style.TRAVERSAL_CELL,
    ),
    "histograms": (2 * plot_style.HIST_PANEL[0], plot_style.HIST_PANEL[1]),
  }


@pytest.fixture(scope="module")
def toy():
  return toy_dataset()


@pytest.mark.parametrize("model", ["vae", "dcvae"])
def test_report_writes_every_figure(tmp_path, toy, model):
  config = tiny_config(model)
  config.protocol.classes = (0, 1)  # two runs: max_runs=1 draws the first only
  experiment.train_and_evaluate(config, str(tmp_path), dataset=toy, log=lambda *a: None)
  path = report.make_report(str(tmp_path), dataset=toy, max_runs=1, log=lambda *a: None)
  assert path == os.path.join(str(tmp_path), "report.html")
  with open(path) as f:
    page = f.read()

  assert_png(os.path.join(tmp_path, "figures", "roc.png"), plot_style.ROC_SIZE)
  assert 'src="figures/roc.png"' in page
  # Toy test set: 64 images over 3 classes; every class has >= 8 of each group; 2 normal classes per run.
  conditional = model == "dcvae"
  sizes = expected_sizes(2 if conditional else 1, per_group=8, latent_dim=config.model.latent_dim)
  for name in report.RUN_FIGURES:
    rel = f"figures/class0_seed0/{name}.png"
    assert_png(os.path.join(tmp_path, rel), sizes[name])
    assert f'src="{rel}"' in page, rel
  assert not os.path.exists(os.path.join(tmp_path, "figures", "class1_seed0"))  # max_runs=1
  for key in ("class0_seed0", "class1_seed0", "mean ± std", model):
    assert key in page
  results = report.load_results(str(tmp_path))  # every score's row, with its mean test AUROC ± std and AUPR
  for score, auroc in results["auroc_by_score"].items():
    row = f"<td>{score_label(score, results)}</td><td>{auroc:.3f} ± {results['auroc_std_by_score'][score]:.3f}</td>"
    row += f"<td>{results['aupr_by_score'][score]:.3f}</td>"
    val = results.get("val_auroc_by_score", {})
    row += f"<td>{val[score]:.3f}</td>" if score in val else "</tr>"  # then the validation columns, if any
    assert row in page, score
  assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def score_label(score, results):
  return f"{score} (headline)" if score == results["score"] else score


def test_score_table_with_validation_columns():
  results = {
    "score": "nelbo",
    "auroc_by_score": {"recon": 0.8125, "nelbo": 0.5},
    "auroc_std_by_score": {"recon": 0.0625, "nelbo": 0.25},
    "aupr_by_score": {"recon": 0.375, "nelbo": 0.125},
    "val_auroc_by_score": {"recon": 0.9375, "nelbo": 0.4375},
    "val_aupr_by_score": {"nelbo": 0.0625},
    "auroc_per_class_by_score": {"recon": {"0": 1.0}},  # nested: not a column
  }
  table = report.score_table(results)
  assert table == (
    "<table><tr><th>score</th><th>test AUROC</th><th>test AUPR</th><th>validation AUROC</th>"
    "<th>validation AUPR</th></tr>"
    "<tr><td>recon</td><td>0.812 ± 0.062</td><td>0.375</td><td>0.938</td><td></td></tr>"
    '<tr class="mean"><td>nelbo (headline)</td><td>0.500 ± 0.250</td><td>0.125</td><td>0.438</td><td>0.062</td></tr>'
    "</table>"
  )
  assert report.score_table({"score": "recon"}) == ""
  page = report.render_html(results, "roc.png", {}, [], root=".")
  assert "<h2>Every score (mean over runs)</h2>\n" + table in page


def test_figure_functions_on_arrays(tmp_path):
  rng = np.random.default_rng(0)
  n, d = 150, 3
  labels = np.repeat(np.arange(3), n // 3)
  is_anomaly = labels == 2
  codes = rng.normal(size=(n, d)) + labels[:, None]
  images = rng.uniform(size=(n, 6, 6))
  decode_calls = []

  def decode(z, cond):
    decode_calls.append(cond)
    return np.tile(np.tanh(np.abs(z[:, :1]))[:, :, None], (1, 6, 6))

  p = plots.reconstructions(
    str(tmp_path / "r.png"),
    images,
    images[..., None],
    is_anomaly,
    nelbo=codes[:, 0],
    recon=codes[:, 1],
    labels=labels,
    per_group=3,
  )
  assert_png(
    p,
    (
      plot_style.RECON_MARGIN[0] + 3 * plot_style.RECON_CELL[0],
      plot_style.RECON_MARGIN[1] + 4 * plot_style.RECON_CELL[1],
    ),
  )
  pca = plots.latent_umap(str(tmp_path / "pca.png"), codes, labels, is_anomaly, method="pca")
  assert_png(pca, plot_style.SCATTER_SIZE)
  xy, used, note = plots.embed_2d(codes[:20])
  assert used == "PCA" and "too few" in note and xy.shape == (20, 2)
  p = plots.manifold_2d(
    str(tmp_path / "m.png"),
    decode,
    np.zeros((4, d)),
    np.ones((4, d)),
    conditions=[0, 1, 2, 3],
    labels=list("abcd"),
    dims=(2, 0),
    grid=5,
  )
  assert decode_calls == [0, 1, 2, 3]
  assert_png(p, (3 * plot_style.MANIFOLD_PANEL[0], plot_style.MANIFOLD_TOP + 2 * plot_style.MANIFOLD_PANEL[1]))
  p = plots.traversals(str(tmp_path / "t.png"), decode, np.zeros(d), dims=[1, 2], values=[-1.0, 0.0, 1.0, 2.0])
  assert_png(
    p,
    (
      plot_style.TRAVERSAL_MARGIN[0] + 4 * plot_style.TRAVERSAL_CELL,
      plot_style.TRAVERSAL_MARGIN[1] + 2 * plot_style.TRAVERSAL_CELL,
    ),
  )
  p = plots.roc_curves(str(tmp_path / "roc.png"), {"a": (codes[:, 0], is_anomaly), "b": (-codes[:, 1], is_anomaly)})
  assert_png(p, plot_style.ROC_SIZE)
  p = plots.score_histograms(str(tmp_path / "h.png"), {"A": (codes[:, 0], is_anomaly)})
  assert_png(p, plot_style.HIST_PANEL)


def test_umap_embedding(tmp_path):
  pytest.importorskip("umap")
  rng = np.random.default_rng(1)
  labels = np.repeat(np.arange(2), 60)
  codes = rng.normal(size=(120, 4)) + 4 * labels[:, None]
  xy, used, note = plots.embed_2d(codes)
  assert used == "UMAP" and note == "" and xy.shape == (120, 2) and np.isfinite(xy).all()
  p = plots.latent_umap(str(tmp_path / "u.png"), codes, labels, labels == 1)
  assert_png(p, plot_style.SCATTER_SIZE)


def test_report_refuses_an_untrained_workdir(tmp_path):
  with pytest.raises(errors.WorkdirError, match="results.json"):
    report.make_report(str(tmp_path))


@pytest.mark.parametrize("model", ["vae", "dcvae", "vae_gaussian"])
def test_report_pictures_a_sap_complexity_headline_from_the_saved_reference(tmp_path, toy, model):
  """The report recomputes sap_complexity from the saved test and reference scores: its AUROC equals the run's;
  its complexity is iwae / ln 2 + D log2(bins) - L(x) (a per-pixel Gaussian on dequantised grey levels: 8 bits a
  pixel; binarised Bernoulli: 0), computed here from the saved scores (a constant offset leaves AUROC alone)."""
  import math

  from sklearn.metrics import roc_auc_score

  from dcvae_jax.train import restore

  config = tiny_config("vae" if model == "vae_gaussian" else model)
  if model == "vae_gaussian":
    config.model.likelihood, config.model.gaussian_variance = "gaussian", "per_pixel"
    config.data.binarize, config.data.dequantize = False, True
  config.protocol.score = "sap_complexity"
  experiment.train_and_evaluate(config, str(tmp_path), dataset=toy, log=lambda *a: None)
  trained = restore.load_trained(str(tmp_path), dataset=toy)
  offset = 8.0 * toy.x_test[0].size if model == "vae_gaussian" else 0.0
  for run in trained.runs:
    scores = report.load_scores(str(tmp_path), run.name)
    view = report.RunView(trained, run, scores)
    with open(os.path.join(tmp_path, "runs", f"{run.name}.json")) as f:
      saved = __import__("json").load(f)
    auroc = roc_auc_score(view.is_anomaly, view.reduced["sap_complexity"])
    assert auroc == pytest.approx(saved["sap_complexity_auroc"], abs=1e-9)
    if model != "dcvae":  # unconditional: one column per image
      keep = np.isin(scores["y_test"], run.normal + run.anomalous)
      want = scores["iwae"][keep, 0] / math.log(2.0) + offset - scores["length_bits"][keep]
      np.testing.assert_allclose(view.reduced["complexity"], want, rtol=1e-6)
  assert os.path.isfile(report.make_report(str(tmp_path), dataset=toy, max_runs=1, log=lambda *a: None))
