"""Markdown table of ablation rows made by docs/results/ablation.sh: mean AUROC of every score per row.

python -m dcvae_jax.report.ablation ROOT DATASET PROTOCOL EPOCHS [--per_class=ROW:SCORE] [--json=FILE]
    [--validation] [--choose]

--validation prints each cell as "validation / test" (results.json ``val_auroc_by_score`` beside
``auroc_by_score``) and marks the row's best *validation* score; --choose prints only "ROW SCORE": the row and
score with the highest mean validation AUROC among the shown rows (``choose_on_validation``), which is how
docs/results/make_validation.sh picks a setting without reading test AUROC.
"""

import argparse
import glob
import json
import math
import os
import sys

from dcvae_jax.options import DEFAULT_SCORES, SCORES  # light: options imports nothing heavy

DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "kmnist": "KMNIST", "emnist": "EMNIST"}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("root")
  ap.add_argument("dataset")
  ap.add_argument("protocol")
  ap.add_argument("epochs")
  ap.add_argument("--per_class", action="append", default=[], help="ROW:SCORE whose per-class AUROC to print")
  ap.add_argument("--json", default="")
  ap.add_argument(
    "--seeds", action="append", default=[], help="ROW: mean and std over ROW, ROW+s1, ROW+s2, ... (seeds); repeatable"
  )
  ap.add_argument(
    "--paired",
    action="append",
    default=[],
    nargs=3,
    metavar=("A", "B", "SCORE"),
    help="per-class AUROC of row B minus row A, for every seed both have (A, A+s1, ... with B, B+s1, ...)",
  )
  ap.add_argument("--rows", default="", help="comma-separated rows to show, in this order (default: all)")
  ap.add_argument("--validation", action="store_true", help='cells read "validation / test" AUROC')
  ap.add_argument("--choose", action="store_true", help='print only "ROW SCORE" chosen on validation AUROC')
  a = ap.parse_args()
  prefix = os.path.join(a.root, f"{a.dataset}-{a.protocol}-{a.epochs}ep-")
  rows = {}
  for wd in sorted(glob.glob(prefix + "*")):
    path = os.path.join(wd, "results.json")
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    name = wd[len(prefix) :]
    args = (
      open(os.path.join(wd, "row.txt")).read().split(" ", 1)[1].strip()
      if os.path.exists(os.path.join(wd, "row.txt"))
      else ""
    )
    rows[name] = {
      "args": args,
      "train_seconds": r["train_seconds"],
      "num_runs": r["num_runs"],
      "auroc_by_score": r["auroc_by_score"],
      "val_auroc_by_score": r.get("val_auroc_by_score", {}),
      "score": r.get("score", ""),
      "score_selection": r.get("score_selection", ""),
      "auroc_std_by_score": r.get("auroc_std_by_score", {}),
      "auroc_per_class_by_score": r["auroc_per_class_by_score"],
      "complexity_likelihood": r.get("complexity_likelihood", ""),
    }
  all_rows = rows
  if a.rows:
    rows = {n: rows[n] for n in a.rows.split(",") if n in rows}
  if a.choose:
    try:
      row, score, value = choose_on_validation(rows)
    except ValueError as e:
      sys.exit(f"error: {e}")
    print(row, score)
    return
  title = f"{DATASET_NAMES.get(a.dataset, a.dataset)} {a.protocol.replace('_', '-')}, {a.epochs} epochs"
  what = "validation / test" if a.validation else "(std over classes in brackets)"
  print(f"### {title}: mean AUROC over classes, {what}\n")
  if a.validation:
    print("cells: mean validation AUROC / mean test AUROC; bold: the row's best score on *validation*.\n")
  shown = shown_scores(rows)
  print("| row | " + " | ".join(shown) + " | train s | complexity's likelihood |")
  print("|---|" + "---|" * (len(shown) + 2))
  for name, r in rows.items():
    cells = []
    judged = r["val_auroc_by_score"] if a.validation else r["auroc_by_score"]
    best = max(judged.values()) if judged else None
    for s in shown:
      v = r["auroc_by_score"].get(s)
      if v is None:
        cells.append("-")
        continue
      if a.validation:
        val = r["val_auroc_by_score"].get(s)
        txt = f"{'-' if val is None else f'{val:.3f}'} / {v:.3f}"
        cells.append(f"**{txt}**" if val is not None and val == best else txt)
        continue
      txt = f"{v:.3f} ({r['auroc_std_by_score'].get(s, 0):.3f})"
      cells.append(f"**{txt}**" if v == best else txt)
    print(f"| {name} | " + " | ".join(cells) + f" | {r['train_seconds']:.0f} | {r['complexity_likelihood']} |")
  for item in a.per_class:
    row = item.rsplit(":", 1)[0]
    if row not in rows:
      continue
    per = rows[row]["auroc_per_class_by_score"]
    classes = sorted(per["recon"], key=lambda k: (len(k), k))
    print(f"\nper class, row {row}:\n")
    print("| score | " + " | ".join(classes) + " |")
    print("|---|" + "---|" * len(classes))
    for s in SCORES:
      if s in per:
        print(f"| {s} | " + " | ".join(f"{per[s][c]:.3f}" for c in classes) + " |")
  for seed_row in a.seeds:
    names = [seed_row + suffix for suffix in _seed_suffixes(rows, seed_row)]
    print(
      f"\nrow {seed_row} over {len(names)} seed(s) ({', '.join(names)}): mean (population std over seeds) of the "
      "class-mean AUROC\n"
    )
    print("| score | " + " | ".join(names) + " | mean | std |")
    print("|---|" + "---|" * (len(names) + 2))
    for sc in SCORES:
      v = [rows[n]["auroc_by_score"][sc] for n in names if sc in rows[n]["auroc_by_score"]]
      if v and len(v) == len(names):
        print(
          f"| {sc} | " + " | ".join(f"{x:.3f}" for x in v) + f" | {sum(v) / len(v):.3f} | "
          f"{(sum((x - sum(v) / len(v)) ** 2 for x in v) / len(v)) ** 0.5:.3f} |"
        )
  for base, other, score in a.paired:
    _print_paired(all_rows, base, other, score)
  print()  # a blank line between the tables of consecutive calls
  if a.json:
    with open(a.json, "w") as f:
      json.dump(rows, f, indent=1, sort_keys=True)


def shown_scores(rows: dict) -> list[str]:
  """The score columns of a table of ``rows`` (name -> results.json), in SCORES order: the default scores always
  (a dash where a row lacks one), the opt-in ones where some row has them."""
  return [s for s in SCORES if s in DEFAULT_SCORES or any(s in r["auroc_by_score"] for r in rows.values())]


def choose_on_validation(rows: dict) -> tuple[str, str, float]:
  """The (row, score, value) with the highest mean validation AUROC over every row and score of ``rows`` (the
  loaded table: name -> {"val_auroc_by_score": {score: AUROC}}); ties go to the earlier row, then to the earlier
  score in SCORES; a non-finite AUROC is never chosen. Test AUROC is never read. Raises ValueError when no row has validation AUROCs."""
  best = None
  for name, r in rows.items():
    val = r.get("val_auroc_by_score") or {}
    for score in sorted(val, key=lambda k: SCORES.index(k) if k in SCORES else len(SCORES)):
      if val[score] is None or not math.isfinite(val[score]):
        continue  # a score that could not be computed is never chosen
      if best is None or val[score] > best[2]:
        best = (name, score, float(val[score]))
  if best is None:
    raise ValueError(f"no validation AUROC in rows {', '.join(rows) or '(none)'}: train them with a validation split")
  return best


def _seed_suffixes(rows, row):
  """The seed suffixes of ``row`` present in ``rows``, in row order: "" (seed 0) for ``row`` itself, "+sN" for ``row+sN``."""
  suffixes = [n[len(row) :] for n in rows if n == row or n.startswith(row + "+s")]
  return [x for x in suffixes if x == "" or x[2:].isdigit()]


def _print_paired(rows, base, other, score):
  """Per-class AUROC differences other - base at each seed both rows have (seed 0 = no suffix)."""
  seeds = [s for s in _seed_suffixes(rows, base) if other + s in rows]
  if not seeds:
    return
  per = [
    (rows[base + s]["auroc_per_class_by_score"][score], rows[other + s]["auroc_per_class_by_score"][score])
    for s in seeds
  ]
  classes = sorted(per[0][0], key=lambda k: (len(k), k))
  print(f"\n`{score}`: per-class AUROC of {other} minus {base}, seed by seed\n")
  print("| seed | " + " | ".join(classes) + " | mean |")
  print("|---|" + "---|" * (len(classes) + 1))
  means = []
  for s, (b, o) in zip(seeds, per, strict=True):
    d = [o[c] - b[c] for c in classes]
    means.append(sum(d) / len(d))
    print(f"| {s[2:] if s else '0'} | " + " | ".join(f"{x:+.3f}" for x in d) + f" | {means[-1]:+.3f} |")
  if len(means) >= 2:
    t, p = paired_t(means)
    print(f"\nmean over {len(means)} seeds {sum(means) / len(means):+.3f}; paired t = {t:.2f}, two-sided p = {p:.3f}")


def paired_t(diffs):
  """Paired t-test of per-seed differences d_1..d_n against 0: t = mean(d) / (s / sqrt(n)), s the sample std
  (n - 1), and the two-sided p-value of Student's t with n - 1 degrees of freedom."""
  from scipy import stats

  n = len(diffs)
  m = sum(diffs) / n
  s = (sum((x - m) ** 2 for x in diffs) / (n - 1)) ** 0.5
  t = m / (s / n**0.5) if s > 0 else float("inf") if m else 0.0
  return t, 2 * stats.t.sf(abs(t), n - 1)


if __name__ == "__main__":
  main()
