"""Figures and a one-page HTML report of a trained workdir (``--mode=report``).

Reads only what training and evaluation saved: config.json, results.json, scores/<run>.npz and the checkpoints
(through ``restore.load_trained``); the encoder and decoder are run (jitted, batched) for the pictures.
Writes:
  DIR/figures/roc.png                      ROC of the headline score, one curve per run (held-out class)
  DIR/figures/<run>/reconstructions.png    normal and anomalous test images, reconstructions, E and A
  DIR/figures/<run>/latent.png             UMAP of the encoder means of the test images
  DIR/figures/<run>/manifold.png           decodings over the two most active latent dims, per condition
  DIR/figures/<run>/traversals.png         each latent dim varied around a normal test image's code
  DIR/figures/<run>/histograms.png         A and E of normal vs anomalous test images
  DIR/report.html                          the results table, the table of every score (mean test AUROC and AUPR;
                                           validation columns when results.json has them) and every figure

Conditional models: a test image's class is unknown, so its code and reconstruction are taken under the
condition the detector itself uses (``chosen_condition``): the best-scoring normal condition for
``score_condition`` = min / marginal, the image's own class (the all-zero condition for anomalies) for "given".
The E and A printed on the pictures are the reduced scores the results table is computed from.
"""

from __future__ import annotations

import html
import json
import os

import numpy as np

from dcvae_jax import extras, files
from dcvae_jax.data import input_pipeline, protocols
from dcvae_jax.errors import WorkdirError
from dcvae_jax.evaluators import detection, scoring
from dcvae_jax.evaluators.scoring import chosen_condition
from dcvae_jax.log import log as _log
from dcvae_jax.models import inference
from dcvae_jax.report import plots, style
from dcvae_jax.train import restore

RUN_FIGURES = ("reconstructions", "latent", "manifold", "traversals", "histograms")
MAX_TRAVERSAL_DIMS = 10


def load_scores(workdir: str, run_name: str) -> dict:
  path = os.path.join(workdir, "scores", f"{run_name}.npz")
  if not os.path.exists(path):
    raise WorkdirError(f"{workdir}: run {run_name} has no scores ({path}); train it first")
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def load_results(workdir: str) -> dict:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{workdir} has no results.json: training has not finished")
  with open(path) as f:
    return json.load(f)


class RunView:
  """One run's test data, reduced scores and pictured conditions (the arrays every figure of it uses)."""

  def __init__(self, trained, run, scores: dict):
    ds, protocol = trained.dataset, trained.config.protocol
    conditional = trained.setup.spec.conditional
    y = np.asarray(scores.get("y_test", ds.y_test))
    keep = np.isin(y, run.normal + run.anomalous)
    self.run, self.x, self.y = run, ds.x_test[keep], y[keep]
    self.is_anomaly = np.isin(self.y, run.anomalous)
    cond_of_example = protocols.condition_ids(run, self.y, missing=-1)
    per_condition_scores = {name: scores[name][keep] for name in scoring.PER_CONDITION_SCORES if name in scores}
    # the reduced scores exactly as the results table computed them (one path: scoring.reduce_scores)
    self.reduced = scoring.reduce_scores(
      run,
      per_condition_scores,
      self.y,
      conditional=conditional,
      condition_counts=input_pipeline.condition_counts(run, ds.y_train),
      protocol=protocol,
      length_bits=np.asarray(scores["length_bits"])[keep] if "length_bits" in scores else None,
      offset_bits=detection.complexity_offset_bits(trained.config, ds.x_test.shape[1:]),
      reference={p: scores[f"reference_{p}"] for p in scoring.REFERENCE_SCORES if f"reference_{p}" in scores},
    )
    self.headline = protocol.score
    # complexity = iwae - L(x) + const: the same condition minimises both; a standardised sum is pictured under
    # rapp_sap's condition (each of its parts is reduced over conditions on its own).
    picture_by = {"complexity": "iwae", **{n: "rapp_sap" for n in scoring.STANDARDISED_SUMS}}.get(
      protocol.score, protocol.score
    )
    per_condition = scores[picture_by]
    self.cond = chosen_condition(
      per_condition[keep], protocol.score_condition, conditional=conditional, cond_of_example=cond_of_example
    )


def run_figures(
  trained,
  run,
  out_dir: str,
  *,
  scores: dict | None = None,
  model: inference.Model | None = None,
  workdir: str | None = None,
  per_group: int = 8,
  grid: int = 15,
  seed: int = 0,
) -> dict:
  """Every per-run figure of ``run`` (a protocols.Run of ``trained``) under ``out_dir``: {name: path}.

  ``scores``: the run's saved scores (default: read from ``workdir``/scores); ``model``: an ``inference.Model``
  to reuse across runs (compiles once).
  """
  if scores is None:
    if workdir is None:
      raise ValueError("run_figures needs scores= or workdir=")
    scores = load_scores(workdir, run.name)
  model = model or inference.Model(trained.setup, mesh=trained.mesh)
  params = trained.params[run.name]
  view = RunView(trained, run, scores)
  conditional = trained.setup.spec.conditional
  decode = model.decoder(params)
  name = f"{trained.config.model.name} {run.name} (normal {_classes(run.normal)}, anomalous {_classes(run.anomalous)})"
  out = {}

  # Reconstructions: the first per_group normal and anomalous test images.
  shown = np.concatenate([np.flatnonzero(~view.is_anomaly)[:per_group], np.flatnonzero(view.is_anomaly)[:per_group]])
  x_shown = view.x[shown]
  inputs = style._images(
    input_pipeline.preprocess(
      x_shown, trained.setup.binarize, trained.setup.dequantize, image_shape=trained.setup.module.image_shape
    )
  )
  recons = model.reconstruct(params, x_shown, view.cond[shown])
  out["reconstructions"] = plots.reconstructions(
    os.path.join(out_dir, "reconstructions.png"),
    inputs,
    recons,
    view.is_anomaly[shown],
    nelbo=view.reduced["nelbo"][shown],
    recon=view.reduced["recon"][shown],
    labels=view.y[shown],
    per_group=per_group,
    title=f"{name}\nE: negative ELBO, A: reconstruction error",
  )

  # Latent space of the test images (encoder means under the pictured condition).
  mu, _ = model.encode(params, view.x, view.cond)
  out["latent"] = plots.latent_umap(
    os.path.join(out_dir, "latent.png"), mu, view.y, view.is_anomaly, seed=seed, title=f"{run.name}"
  )

  # Most active latent dimensions: variance of the encoder mean over the normal test images.
  activity = mu[~view.is_anomaly].std(axis=0) if (~view.is_anomaly).any() else mu.std(axis=0)
  order = np.argsort(-activity)
  means, stds = model.prior(params)
  dims = tuple(int(d) for d in order[:2]) if mu.shape[1] >= 2 else (0, 0)
  conds = list(range(len(run.normal))) if conditional else [None]
  labels = [f"c = class {k}" for k in run.normal] if conditional else ["N(0, I) prior"]
  out["manifold"] = plots.manifold_2d(
    os.path.join(out_dir, "manifold.png"),
    decode,
    means,
    stds,
    conditions=conds,
    labels=labels,
    dims=dims,
    grid=grid,
    title=f"{run.name}: decodings over z{dims[0]} (across), z{dims[1]} (down)\nthe other dims at the prior mean",
  )

  # Traversals around the first normal test image's code, most active dimensions first.
  base_i = int(np.flatnonzero(~view.is_anomaly)[0]) if (~view.is_anomaly).any() else 0
  c0 = int(view.cond[base_i])
  pc = min(c0, means.shape[0] - 1)
  tdims = [int(d) for d in order[:MAX_TRAVERSAL_DIMS]]
  out["traversals"] = plots.traversals(
    os.path.join(out_dir, "traversals.png"),
    decode,
    mu[base_i],
    condition=c0 if conditional else None,
    dims=tdims,
    means=means[pc],
    stds=stds[pc],
    dim_labels=[f"z{d} (sd {activity[d]:.2f})" for d in tdims],
    title=f"{run.name}: traversals of a class-{int(view.y[base_i])} image"
    + (f" under c = class {run.normal[c0]}" if conditional and c0 < len(run.normal) else ""),
  )

  out["histograms"] = plots.score_histograms(
    os.path.join(out_dir, "histograms.png"),
    {
      "A (reconstruction error)": (view.reduced["recon"], view.is_anomaly),
      "E (negative ELBO)": (view.reduced["nelbo"], view.is_anomaly),
    },
    title=f"{run.name}: scores of normal vs anomalous test images",
  )
  return out


def roc_figure(trained, workdir: str, path: str, scores_by_run: dict) -> str:
  """ROC of the headline score, one curve per run."""
  curves = {}
  for run in trained.runs:
    view = RunView(trained, run, scores_by_run[run.name])
    curves[run.name if trained.config.num_seeds > 1 else f"class {run.label}"] = (
      view.reduced[view.headline],
      view.is_anomaly,
    )
  protocol = trained.config.protocol
  return plots.roc_curves(
    path, curves, title=f"{trained.config.model.name}: ROC of {protocol.score} ({protocol.score_condition})"
  )


def make_report(workdir: str, *, dataset=None, max_runs: int | None = None, log=_log) -> str:
  """Every figure of a trained workdir under DIR/figures/ and DIR/report.html; returns the report's path.

  ``dataset``: pass it when the workdir was trained on an in-memory dataset; ``max_runs``: draw the per-run
  figures of the first ``max_runs`` runs only (the ROC figure and the table always cover every run).
  """
  extras.require("matplotlib", extra="plots", package="matplotlib", needed_by="the report's figures")
  results = load_results(workdir)
  if results.get("auroc_mean") is None and results.get("note"):
    raise WorkdirError(
      f"{workdir}: {results['note']}; the figures need test images (for data.name=folder: add test/normal/ and "
      "test/anomalous/ to data_dir, run --mode=rescore, then --mode=report)"
    )
  trained = restore.load_trained(workdir, dataset=dataset)
  if trained.config.protocol.score == "auto":  # the score chosen on validation
    trained.config.protocol.score = results["score"]
  scores = {run.name: load_scores(workdir, run.name) for run in trained.runs}
  fig_dir = os.path.join(workdir, "figures")
  os.makedirs(fig_dir, exist_ok=True)
  roc = roc_figure(trained, workdir, os.path.join(fig_dir, "roc.png"), scores)
  model = inference.Model(trained.setup, mesh=trained.mesh)
  runs = trained.runs if max_runs is None else trained.runs[: max(int(max_runs), 0)]
  per_run = {}
  for i, run in enumerate(runs):
    log(f"figures {i + 1}/{len(runs)}: {run.name}")
    per_run[run.name] = run_figures(
      trained, run, os.path.join(fig_dir, run.name), scores=scores[run.name], model=model, seed=int(trained.config.seed)
    )
  path = os.path.join(workdir, "report.html")
  files.write_text(path, render_html(results, roc, per_run, trained.runs, root=workdir))
  log(f"report: {path}")
  return path


# ----------------------------------------------------------------------------------------------------------
# HTML.

_CSS = """body{font-family:sans-serif;max-width:1400px;margin:1em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}tr.mean td{font-weight:bold}.warn{color:#b00;font-weight:bold}
.figs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}.figs img{max-width:100%;border:1px solid #ddd}
h3{margin-top:1.6em}"""


def _classes(cs) -> str:
  cs = list(cs)
  return ",".join(map(str, cs)) if len(cs) <= 4 else f"{len(cs)} classes"


def _f(v, fmt="{:.3f}") -> str:
  return "" if v is None else fmt.format(v)


def _img(path: str, root: str, alt: str) -> str:
  rel = os.path.relpath(path, root).replace(os.sep, "/")
  return f'<a href="{html.escape(rel)}"><img src="{html.escape(rel)}" alt="{html.escape(alt)}"></a>'


def _metric_label(name: str) -> str:
  """'auroc' -> 'test AUROC', 'val_aupr' -> 'validation AUPR' (the key of a results.json ``<name>_by_score``)."""
  prefix, _, metric = name.rpartition("_")
  where = {"": "test", "val": "validation"}.get(prefix, prefix.replace("_", " "))
  return f"{where} {metric.upper()}"


def score_table(results: dict) -> str:
  """Every score's mean AUROC (± std over runs) and AUPR, from results.json's ``*_by_score`` dicts: test first,
  then any other split (``val_auroc_by_score``, ...). The headline score's row is bold. '' if there are none."""
  dicts = {
    k[: -len("_by_score")]: v
    for k, v in results.items()
    if k.endswith("_by_score") and isinstance(v, dict) and v and all(isinstance(x, (int, float)) for x in v.values())
  }
  names = sorted(
    (n for n in dicts if n.rpartition("_")[2] in ("auroc", "aupr")),  # metrics, not counts (nonfinite_by_score)
    key=lambda n: (n.rpartition("_")[0] != "", n.rpartition("_")[0], n.rpartition("_")[2] != "auroc", n),
  )
  if not names:
    return ""
  scores = [s for s in scoring.SCORES if any(s in dicts[n] for n in names)]
  scores += sorted({s for n in names for s in dicts[n]} - set(scores))

  def cell(name, score):
    value = dicts[name].get(score)
    std = dicts.get(f"{name}_std", {}).get(score)
    return "" if value is None else f"{value:.3f}" + ("" if std is None else f" ± {std:.3f}")

  e = html.escape
  head = "<tr><th>score</th>" + "".join(f"<th>{e(_metric_label(n))}</th>" for n in names) + "</tr>"
  rows = [
    (f'<tr class="mean"><td>{e(s)} (headline)</td>' if s == results.get("score") else f"<tr><td>{e(s)}</td>")
    + "".join(f"<td>{cell(n, s)}</td>" for n in names)
    + "</tr>"
    for s in scores
  ]
  return f"<table>{head}{''.join(rows)}</table>"


def render_html(results: dict, roc_path: str, per_run: dict, runs, *, root: str) -> str:
  e = html.escape
  r = results
  cols = [
    ("AUROC", "auroc"),
    ("AUPR", "aupr"),
    ("AUROC A", "recon_auroc"),
    ("AUROC E", "nelbo_auroc"),
    ("A normal", "A_normal"),
    ("A anomalous", "A_anomalous"),
    ("E normal", "E_normal"),
    ("E anomalous", "E_anomalous"),
  ]
  fmt = {k: "{:.1f}" if k[:2] in ("A_", "E_") else "{:.3f}" for _, k in cols}
  rows = []
  for run in r.get("runs", []):
    rows.append(
      "<tr><td>"
      + e(str(run["run"]))
      + "</td><td>"
      + e(_classes(run["normal"]))
      + "</td><td>"
      + e(_classes(run["anomalous"]))
      + "</td>"
      + "".join(f"<td>{_f(run.get(k), fmt[k])}</td>" for _, k in cols)
      + "</tr>"
    )
  rows.append(
    '<tr class="mean"><td>mean ± std</td><td></td><td></td>'
    + "".join(f"<td>{_f(r.get(k + '_mean'), fmt[k])} ± {_f(r.get(k + '_std'), fmt[k])}</td>" for _, k in cols)
    + "</tr>"
  )
  head = "<tr><th>run</th><th>normal</th><th>anomalous</th>" + "".join(f"<th>{e(c)}</th>" for c, _ in cols) + "</tr>"
  meta = (
    f"protocol <b>{e(str(r.get('protocol')))}</b>, headline score <b>{e(str(r.get('score')))}</b> "
    f"(A = reconstruction error, E = negative ELBO), score_condition <b>{e(str(r.get('score_condition')))}</b>, "
    f"{r.get('num_runs')} run(s), training {_f(r.get('train_seconds'), '{:.1f}')} s on "
    f"{e(str(r.get('num_devices', '?')))} {e(str(r.get('backend', '')))} device(s)"
  )
  parts = [
    f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(str(r.get('model')))} on "
    f"{e(str(r.get('dataset')))}</title><style>{_CSS}</style></head><body>",
    f"<h1>{e(str(r.get('model')))} on {e(str(r.get('dataset')))}</h1>",
    f"<p>{meta}</p>",
  ]
  if r.get("warning"):
    parts.append(f'<p class="warn">{e(r["warning"])}</p>')
  parts += [
    "<h2>Results</h2>",
    f"<table>{head}{''.join(rows)}</table>",
  ]
  every = score_table(r)
  if every:
    parts += ["<h2>Every score (mean over runs)</h2>", every]
  parts += [
    "<h2>ROC curves</h2>",
    f'<div class="figs">{_img(roc_path, root, "ROC curves")}</div>',
  ]
  if per_run:
    parts.append("<h2>Per run</h2>")
  by_name = {run.name: run for run in runs}
  auroc = {x["run"]: x.get("auroc") for x in r.get("runs", [])}
  for name, figs in per_run.items():
    run = by_name[name]
    parts.append(
      f"<h3>{e(name)}: normal {e(_classes(run.normal))}, anomalous {e(_classes(run.anomalous))}, "
      f"AUROC {_f(auroc.get(name))}</h3>"
    )
    parts.append('<div class="figs">' + "".join(_img(p, root, f"{name} {k}") for k, p in figs.items()) + "</div>")
  skipped = [run.name for run in runs if run.name not in per_run]
  if skipped:
    parts.append(f"<p>Per-run figures not drawn for {len(skipped)} run(s) (max_runs).</p>")
  parts.append("</body></html>")
  return "\n".join(parts)
