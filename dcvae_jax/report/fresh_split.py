"""The winner's curse of a choice made on one validation split, measured on fresh ones (no training, no test).

python -m dcvae_jax.report.fresh_split ROOT DATASET PROTOCOL SETTING [SETTING ...] [--json=FILE]

A SETTING is EPOCHS:ROW, as in ``report.across``: seed 0 is ROOT/DATASET-PROTOCOL-EPOCHSep-ROW, seeds 1 and 2 are
ROW+s1 and ROW+s2. Each seed is its own job with config.seed = s, so it has its own validation split
(``data.splits.validation_indices`` is seeded by config.seed) and its own training: seeds 1 and 2 are fresh
replicates of the whole pipeline, unseen when the choice was made on seed 0.

With V_s(a, k) the mean validation AUROC of setting a and score k at seed s, the report gives:
  1. the choice at each seed, by the rule the study used (``ablation.choose_on_validation``: argmax of V_s over
     the settings that have seed s and all their scores; ties keep the earlier setting, then the earlier score),
     and the choice on seeds 1-2 pooled, argmax of (V_1 + V_2) / 2 over the settings that have both;
  2. the optimism of the seed-0 choice (a*, k*): O = V_0(a*, k*) - (V_1(a*, k*) + V_2(a*, k*)) / 2. A maximum
     over many (setting, score) pairs of noisy estimates is biased upward, so O > 0 is expected; seeds 1-2 are
     independent of the choice, so their mean is an unbiased estimate of the chosen pair's validation AUROC;
  3. beside it, the same difference for every setting's own seed-0 best score, and its mean over the settings
     not chosen. O also holds the difference in difficulty between seed 0's split and seeds 1-2's (and their
     trainings), which every setting shares; the settings not chosen carry that and only the smaller bias of
     choosing their own best score, so the choice's O minus their mean is the part due to choosing the setting.
Test AUROC is never read. A setting without seeds 1 and 2 appears in the seed-0 choice only, and the report
says so.
"""

from __future__ import annotations

import math
import sys

from dcvae_jax.report.ablation import choose_on_validation
from dcvae_jax.report.across import SEEDS, load_settings, settings_parser, write_json


def _val(r: dict, score: str) -> float:
  v = (r.get("val_auroc_by_score") or {}).get(score)
  return float("nan") if v is None else float(v)


def fresh_split(settings: dict) -> dict:
  """``settings``: setting -> {seed suffix: results.json}. The choices per seed, the pooled seeds 1-2 choice and
  the optimism of each setting's seed-0 best score (module docstring). Raises ValueError when no setting has
  seed-0 validation AUROCs."""
  choices = {}
  for s in SEEDS:
    rows = {a: seeds[s] for a, seeds in settings.items() if s in seeds}
    if rows:
      a, k, v = choose_on_validation(rows)
      choices[s[2:] if s else "0"] = {"setting": a, "score": k, "validation_auroc": v, "among": list(rows)}
  if "0" not in choices:
    raise ValueError("no setting has seed-0 results")
  fresh = {a: seeds for a, seeds in settings.items() if "+s1" in seeds and "+s2" in seeds}
  pooled = {}
  for a, seeds in fresh.items():
    common = set(seeds["+s1"].get("val_auroc_by_score") or {}) & set(seeds["+s2"].get("val_auroc_by_score") or {})
    pooled[a] = {"val_auroc_by_score": {k: (_val(seeds["+s1"], k) + _val(seeds["+s2"], k)) / 2 for k in common}}
  if pooled:
    a, k, v = choose_on_validation(pooled)
    choices["1-2"] = {"setting": a, "score": k, "validation_auroc": v, "among": list(pooled)}
  optimism: dict[str, dict] = {}
  for a, seeds in settings.items():
    if "" not in seeds:
      continue
    _, k, v0 = choose_on_validation({a: seeds[""]})
    entry: dict = {"score": k, "seed0": v0}
    if a in fresh:
      v12 = (_val(seeds["+s1"], k) + _val(seeds["+s2"], k)) / 2
      entry.update(seeds12=v12, optimism=v0 - v12)
    optimism[a] = entry
  chosen = str(choices["0"]["setting"])
  others = [e["optimism"] for a, e in optimism.items() if a != chosen and "optimism" in e]
  return {
    "choices": choices,
    "optimism": optimism,
    "chosen_optimism": optimism[chosen].get("optimism"),
    "others_mean_optimism": sum(others) / len(others) if others else None,
    "seed0_only": [a for a in settings if a not in fresh],
  }


def _fmt(x) -> str:
  return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def main(argv=None) -> int:
  a = settings_parser(__doc__).parse_args(argv)
  settings, missing = load_settings(a)
  if missing:
    sys.exit(f"error: setting {missing[0]} has no seed-0 results in {a.root}")
  try:
    out = fresh_split(settings)
  except ValueError as e:
    sys.exit(f"error: {e}")
  print(f"### {a.dataset} {a.protocol}: the choice on fresh validation splits (seeds 1 and 2)\n")
  print("| seed (its own split) | chosen setting | score | its mean validation AUROC | among |")
  print("|---|---|---|---|---|")
  for s, c in out["choices"].items():
    among = ", ".join(c["among"])
    print(f"| {s} | {c['setting']} | {c['score']} | {c['validation_auroc']:.4f} | {among} |")
  print("\n| setting (its seed-0 best score) | seed 0 | seeds 1-2 | seed 0 minus seeds 1-2 |")
  print("|---|---|---|---|")
  for name, row in out["optimism"].items():
    mark = " (the choice)" if name == out["choices"]["0"]["setting"] else ""
    cells = [_fmt(row["seed0"]), _fmt(row.get("seeds12")), _fmt(row.get("optimism"))]
    print(f"| {name}{mark}, {row['score']} | " + " | ".join(cells) + " |")
  if out["seed0_only"]:
    print(f"\nseed 0 only (no fresh split): {', '.join(out['seed0_only'])}")
  print(
    f"\noptimism of the choice: {_fmt(out['chosen_optimism'])}; "
    f"mean over the settings not chosen: {_fmt(out['others_mean_optimism'])}\n"
  )
  write_json(a.json, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
