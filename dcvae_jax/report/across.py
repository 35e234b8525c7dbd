"""Choose a (setting, score) on validation across settings of different lengths, then read its test AUROC once.

python -m dcvae_jax.report.across ROOT DATASET PROTOCOL SETTING [SETTING ...] --previous=SETTING:SCORE [--json=FILE]
python -m dcvae_jax.report.across ROOT DATASET PROTOCOL SETTING [SETTING ...] --choose
  [--earlier=FILE]: an earlier stage's --json output; its settings join the candidates (see ``load_earlier``);
  with it, no SETTING is needed (``--earlier=FILE --choose`` prints that stage's choice)
  [--pooled]: choose on validation AUROC averaged over seeds 0-2 instead of seed 0's (``pooled_validation``)

A SETTING is EPOCHS:ROW (``50:m:dcvae``): the workdirs ROOT/DATASET-PROTOCOL-EPOCHSep-ROW (seed 0) and
ROW+s1, ROW+s2 (seeds 1, 2), as docs/results/ablation.sh names them. What it prints:
  1. every setting's seed-0 mean validation / test AUROC of every score (the table the choice is made from);
  2. the choice: the (setting, score) with the highest seed-0 mean validation AUROC
     (``ablation.choose_on_validation``: ties go to the earlier setting, then to the earlier score in SCORES;
     test AUROC is never read for it); with ``--pooled``, the highest validation AUROC averaged over seeds 0-2
     (each seed is a job with its own validation split, so one split's luck weighs a third), and the table gains
     those pooled values and what the seed-0 rule would have chosen;
  3. the chosen setting's test AUROC of the chosen score at each seed, mean and population std;
  4. the paired comparison with ``--previous`` (the headline before): per-seed differences of the class-mean
     test AUROC, chosen minus previous, with a paired t-test over seeds (``ablation.paired_t``).
--choose prints only "SETTING SCORE" (step 2; no test AUROC is read), for scripts that run the chosen setting's
seeds next; it exits non-zero with one line when a setting has no seed-0 results.
docs/results/make_validation.sh uses it for stage 8 (the latent_knn scores on the leave-one-out settings),
stages 9-10 (larger latents, the wider MLP; its ``--choose`` decides which settings get seeds), stage 11, whose
earlier settings exist only as stage 10's JSON (their workdirs were lost with a machine): ``--earlier``, and
stage 12 (latent_knn's k on stage 11's checkpoints, every setting at seeds 0-2): ``--pooled``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dcvae_jax.report.ablation import choose_on_validation, paired_t, shown_scores

SEEDS = ("", "+s1", "+s2")


def load(root: str, dataset: str, protocol: str, setting: str) -> dict:
  """Suffix ("", "+s1", "+s2") -> results.json of the setting's seeds that have one."""
  epochs, row = setting.split(":", 1)
  out = {}
  for s in SEEDS:
    path = os.path.join(root, f"{dataset}-{protocol}-{epochs}ep-{row}{s}", "results.json")
    if os.path.exists(path):
      with open(path) as f:
        out[s] = json.load(f)
  return out


def settings_parser(doc: str, *, settings_optional: bool = False) -> argparse.ArgumentParser:
  """The command line ROOT DATASET PROTOCOL SETTING [SETTING ...] [--json=FILE] of the cross-setting reports
  (``settings_optional``: no SETTING is accepted, for settings that come from elsewhere)."""
  ap = argparse.ArgumentParser(description=doc.split("\n")[0])
  ap.add_argument("root")
  ap.add_argument("dataset")
  ap.add_argument("protocol")
  ap.add_argument("settings", nargs="*" if settings_optional else "+", help="EPOCHS:ROW")
  ap.add_argument("--json", default="")
  return ap


def load_earlier(path: str) -> dict:
  """An earlier stage's ``--json`` output as ``load`` gives settings: setting -> {suffix: results}.

  Every setting of the file has its seed 0 (its validation and test AUROC of every score). The file's choice also
  has its seeds 1 and 2 (``test_by_seed``: the chosen score's test AUROC only), so that it can be the ``--previous``
  headline of a paired test, or be chosen again. Raises ValueError with one line when the file is not such a JSON.
  """
  try:
    with open(path) as f:
      earlier = json.load(f)
    settings = {
      name: {"": {"val_auroc_by_score": r["val_auroc_by_score"], "auroc_by_score": r["auroc_by_score"]}}
      for name, r in earlier["settings"].items()
    }  # fmt: skip
    choice, score = earlier["choice"]["setting"], earlier["choice"]["score"]
    for seed, value in earlier["test_by_seed"].items():
      if seed != "0":
        settings[choice][f"+s{int(seed)}"] = {"auroc_by_score": {score: value}}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"--earlier={path} is not an earlier stage's report JSON ({type(e).__name__}: {e})") from None
  return settings


def load_settings(a) -> tuple[dict, list]:
  """(setting -> its seeds' results.json, the settings without seed-0 results) of parsed ``settings_parser`` args.

  With ``a.earlier`` (``--earlier``), the earlier file's settings come first (a tie keeps them), except those also
  named on the command line, which are read from ROOT."""
  earlier = load_earlier(a.earlier) if getattr(a, "earlier", "") else {}
  loaded = {s: load(a.root, a.dataset, a.protocol, s) for s in a.settings}
  settings = {**{s: seeds for s, seeds in earlier.items() if s not in loaded}, **loaded}
  return settings, [s for s, seeds in loaded.items() if "" not in seeds]


def pooled_validation(settings: dict) -> dict:
  """Setting -> {"val_auroc_by_score": {score: mean over seeds 0-2 of its mean validation AUROC}}, the rows that
  ``choose_on_validation`` picks from under ``--pooled``. A score counts only where all three seeds have it (else
  it is left out of that setting). Raises ValueError with one line when a setting lacks a seed's results."""
  out = {}
  for name, seeds in settings.items():
    absent = [s or "+s0" for s in SEEDS if "val_auroc_by_score" not in seeds.get(s, {})]
    if absent:
      raise ValueError(f"--pooled needs seeds 0-2 of every setting; {name} lacks {', '.join(absent)}")
    vals = [seeds[s]["val_auroc_by_score"] for s in SEEDS]
    common = [sc for sc in vals[0] if all(sc in v and v[sc] is not None for v in vals)]
    out[name] = {"val_auroc_by_score": {sc: sum(float(v[sc]) for v in vals) / len(vals) for sc in common}}
  return out


def write_json(path: str, out: dict) -> None:
  """``out`` as indented, key-sorted JSON at ``path`` (nothing when ``path`` is empty): the reports' --json."""
  if path:
    with open(path, "w") as f:
      json.dump(out, f, indent=1, sort_keys=True)


def main(argv=None) -> int:
  ap = settings_parser(__doc__, settings_optional=True)
  ap.add_argument("--previous", default="", help="EPOCHS:ROW:SCORE, the headline before (not with --choose)")
  ap.add_argument("--choose", action="store_true", help='print only "SETTING SCORE" chosen on validation AUROC')
  ap.add_argument("--earlier", default="", help="an earlier stage's --json: its settings join the candidates first")
  ap.add_argument("--pooled", action="store_true", help="choose on validation AUROC averaged over seeds 0-2")
  a = ap.parse_args(argv)
  if not a.settings and not a.earlier:
    ap.error("give at least one SETTING, or --earlier")
  try:
    settings, missing = load_settings(a)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if not a.choose and not a.previous:
    ap.error("--previous is required (except with --choose)")
  if missing:
    if a.choose:
      sys.exit(f"error: setting {missing[0]} has no seed-0 results in {a.root}")
    print(f"({a.dataset} {a.protocol}: setting {missing[0]} has no seed-0 results in {a.root})")
    return 0
  seed0 = {s: seeds[""] for s, seeds in settings.items()}
  try:
    pooled = pooled_validation(settings) if a.pooled else None
    choice, score, value = choose_on_validation(pooled or seed0)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if a.choose:
    print(choice, score)
    return 0
  prev_setting, prev_score = a.previous.rsplit(":", 1)
  shown = shown_scores(seed0)
  print(f"### {a.dataset} {a.protocol}: seed 0, mean validation / test AUROC; bold: the choice\n")
  print("| setting | " + " | ".join(shown) + " |")
  print("|---|" + "---|" * len(shown))
  for name, r in seed0.items():
    cells = []
    for sc in shown:
      val, test = r.get("val_auroc_by_score", {}).get(sc), r["auroc_by_score"].get(sc)
      txt = "-" if test is None else f"{'-' if val is None else f'{val:.3f}'} / {test:.3f}"
      cells.append(f"**{txt}**" if (name, sc) == (choice, score) else txt)
    print(f"| {name} | " + " | ".join(cells) + " |")
  if pooled:
    print("\nvalidation AUROC averaged over seeds 0-2 (the choice is made on these):\n")
    print("| setting | " + " | ".join(shown) + " |")
    print("|---|" + "---|" * len(shown))
    for name, r in pooled.items():
      cells = [f"{r['val_auroc_by_score'][sc]:.4f}" if sc in r["val_auroc_by_score"] else "-" for sc in shown]
      cells = [f"**{c}**" if (name, sc) == (choice, score) else c for c, sc in zip(cells, shown, strict=True)]
      print(f"| {name} | " + " | ".join(cells) + " |")
    seed0_choice = choose_on_validation(seed0)
    print(f"\n(the seed-0 rule would have chosen {seed0_choice[0]} with {seed0_choice[1]}: {seed0_choice[2]:.4f})")
    print(f"\nchosen on validation averaged over seeds 0-2: {choice} with {score} (validation {value:.4f})\n")
  else:
    print(f"\nchosen on validation: {choice} with {score} (validation {value:.3f})\n")
  chosen = settings[choice]
  tests = {s: r["auroc_by_score"][score] for s, r in chosen.items() if score in r["auroc_by_score"]}  # scored seeds
  mean = sum(tests.values()) / len(tests)
  std = (sum((v - mean) ** 2 for v in tests.values()) / len(tests)) ** 0.5
  seeds_txt = ", ".join(f"{v:.3f}" for v in tests.values())
  print(f"test AUROC over {len(tests)} seed(s): {seeds_txt} = {mean:.3f} +- {std:.3f}\n")
  out = {
    "settings": {
      name: {"val_auroc_by_score": r.get("val_auroc_by_score", {}), "auroc_by_score": r["auroc_by_score"]}
      for name, r in seed0.items()
    },  # fmt: skip
    "choice": {"setting": choice, "score": score, "validation_auroc": value},
    **({"pooled": {n: r["val_auroc_by_score"] for n, r in pooled.items()}} if pooled else {}),
    "test_by_seed": {(s[2:] if s else "0"): v for s, v in tests.items()},
    "test_mean": mean,
    "test_std": std,
  }
  if a.earlier:
    out["earlier"] = os.path.basename(a.earlier)  # the settings read from it have seed 0 (the choice: its seeds)
  previous = settings.get(prev_setting) or load(a.root, a.dataset, a.protocol, prev_setting)
  both = [s for s in SEEDS if s in tests and s in previous and prev_score in previous[s]["auroc_by_score"]]
  if both and (prev_setting, prev_score) != (choice, score):
    diffs = [tests[s] - previous[s]["auroc_by_score"][prev_score] for s in both]
    line = ", ".join(f"{d:+.3f}" for d in diffs)
    print(f"against the previous headline {prev_setting} with {prev_score}, seed by seed: {line}")
    out["paired"] = {"previous": a.previous, "diffs": diffs, "mean": sum(diffs) / len(diffs)}
    if len(diffs) >= 2:
      t, p = paired_t(diffs)
      print(f"mean {sum(diffs) / len(diffs):+.3f}; paired t = {t:.2f}, two-sided p = {p:.3f}")
      out["paired"].update(t=t, p=p)
    print()
  write_json(a.json, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
