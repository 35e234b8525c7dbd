"""The paper's Table 1 as one command: every selected model over every class of the protocol and every seed.

  python -m dcvae_jax.main --config=configs/mnist.py --mode=table --config.data.data_dir=DIR

Each model trains in ``<workdir>/<model>/`` (all of a protocol's runs at once, vmapped), so an interrupted table
resumes: finished models and finished runs are not retrained. Writes ``results.json``, ``results.csv`` and
``results.md`` in the workdir: per model AUROC and AUPR (mean +- std over classes and seeds), mean negative ELBO E
and reconstruction error A of normal and anomalous test images, and training time; and, with
``table.figures``, each model's figures and report.html.
"""

from __future__ import annotations

import copy
import csv
import io
import os

from dcvae_jax import experiment, files
from dcvae_jax.errors import DataError
from dcvae_jax.log import log as _log
from dcvae_jax.models import registry as models

PAPER_MODELS = ("vae", "cvae", "beta_vae", "factor_vae", "rf_vae", "dcvae")
COLUMNS = (
  "model",
  "auroc_mean",
  "auroc_std",
  "aupr_mean",
  "aupr_std",
  "E_normal_mean",
  "E_anomalous_mean",
  "A_normal_mean",
  "A_anomalous_mean",
  "train_seconds",
  "num_runs",
)


def run_table(config, workdir: str, *, log=_log, dataset=None) -> list[dict]:
  names = tuple(config.table.models) or PAPER_MODELS
  for name in names:
    models.get_model(name)  # fail before any training on an unknown name
  ds = dataset if dataset is not None else experiment.load_data(config)
  if ds.x_test.shape[0] == 0:
    raise DataError(
      f"--mode=table compares AUROC, and {ds.source} has no test images (data.name=folder: add test/normal/ and "
      "test/anomalous/)"
    )
  rows = []
  for name in names:
    cfg = copy.deepcopy(config)
    cfg.unlock() if hasattr(cfg, "unlock") else None
    cfg.model.name = name
    sub = os.path.join(workdir, name)
    results = experiment.train_and_evaluate(cfg, sub, log=log, dataset=ds)
    rows.append(
      {k: results[k] for k in COLUMNS if k in results}
      | {"workdir": sub, "dataset": results["dataset"], "protocol": results["protocol"], "score": results["score"]}
    )
    write_table(rows, workdir)
    if config.table.figures:
      from dcvae_jax.report import html as report

      report.make_report(sub, dataset=ds, max_runs=int(config.table.figure_runs), log=log)
  return rows


def write_table(rows: list[dict], workdir: str):
  os.makedirs(workdir, exist_ok=True)
  files.write_json(os.path.join(workdir, "results.json"), {"rows": rows})
  buffer = io.StringIO()
  w = csv.DictWriter(buffer, fieldnames=list(COLUMNS) + ["dataset", "protocol", "score", "workdir"])
  w.writeheader()
  w.writerows(rows)
  files.write_text(os.path.join(workdir, "results.csv"), buffer.getvalue())
  files.write_text(os.path.join(workdir, "results.md"), format_markdown(rows))


def format_markdown(rows: list[dict]) -> str:
  if not rows:
    return ""
  head = (
    f"Dataset {rows[0]['dataset']}, protocol {rows[0]['protocol']}, score {rows[0]['score']} "
    f"(mean +- std over classes and seeds)\n\n"
  )
  lines = [
    "| model | AUROC | AUPR | E normal | E anomalous | A normal | A anomalous | train time (s) | runs |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
      f"| {r['model']} | {r['auroc_mean']:.3f} +- {r['auroc_std']:.3f} | "
      f"{r['aupr_mean']:.3f} +- {r['aupr_std']:.3f} | {_num(r, 'E_normal_mean', '.1f')} | "
      f"{_num(r, 'E_anomalous_mean', '.1f')} | {_num(r, 'A_normal_mean', '.2f')} | "
      f"{_num(r, 'A_anomalous_mean', '.2f')} | {r['train_seconds']:.0f} | {r['num_runs']} |"
    )
  return head + "\n".join(lines) + "\n"


def _num(row: dict, key: str, fmt: str) -> str:
  """A number of the row, or "n/a" when its score was not computed (eval.scores)."""
  return format(row[key], fmt) if key in row else "n/a"
