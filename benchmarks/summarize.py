"""Markdown tables of the figures in benchmarks/results/*.json (pasted into benchmarks/README.md).

  python benchmarks/summarize.py [results_dir]
"""

from __future__ import annotations

import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("vae", "cvae", "beta_vae", "factor_vae", "rf_vae", "beta_tcvae", "dcvae")


def load(d, name):
  path = os.path.join(d, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def fmt(x, nd=0):
  return "–" if x is None else f"{x:,.{nd}f}"


def foreign(obj):
  for key in ("foreign_cpu_fraction_median", "foreign_cpu_fraction_during"):
    if obj and key in obj:
      return f"{obj[key]:.0%}"
  return "–"


def main():
  d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results")
  out = []
  rows = []
  for path in sorted(glob.glob(os.path.join(d, "throughput_*_b*.json"))):
    r = load(d, os.path.basename(path))
    rows.append((MODELS.index(r["model"]) if r["model"] in MODELS else 99, r["batch_size"], r))
  if rows:
    out += ["### Throughput of the pipeline's step (throughput.py; MLP 512-256, latent 10, one model, 50 steps/call)",
            "", "| model | batch | images/s (median run) | all runs | ms/step | MFLOP/image | GFLOP/s | % of matmul peak "
            "| other procs' CPU |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for _, _, r in sorted(rows, key=lambda t: (t[1], t[0])):
      runs = ", ".join(fmt(x) for x in r.get("images_per_second_runs", []))
      out.append(f"| {r['model']} | {r['batch_size']} | {fmt(r['images_per_second'])} | {runs} | "
                 f"{1e3 * r['seconds_per_step']:.2f} | {r['flops_per_image'] / 1e6:.2f} | {r['achieved_gflops']:.1f} | "
                 f"{100 * r['fraction_of_peak']:.1f}% (peak {r['matmul_peak_gflops']:.0f}) | {foreign(r.get('load'))} |")
    out.append("")
  vt = load(d, "vs_torch.json")
  if vt:
    out += ["### Against the PyTorch eager step (vs_torch.py; dcvae; torch and ours in separate warm processes, "
            "interleaved)", "",
            f"Same-loss check (Flax params copied into torch, same batch and noise): ok = {vt['same_loss_check']['ok']}, "
            "max relative error of the loss terms "
            + ", ".join(f"{c['max_term_rel_err']:.1e}" for c in vt["same_loss_check"]["cases"].values())
            + ", of the gradients "
            + ", ".join(f"{c['max_grad_rel_err']:.1e}" for c in vt["same_loss_check"]["cases"].values()) + ".", "",
            f"| batch | torch ({vt['torch_default_threads']} threads) | torch (1 thread) | ours, 50 steps/call | "
            "ours, 1 step/call | ours(50)/torch default | ours(50)/best torch | ours(1)/best torch | other procs' CPU |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b, r in sorted(vt["results"].items(), key=lambda t: int(t[0])):
      ips = r["images_per_second"]
      out.append(f"| {b} | {fmt(ips['torch_default_threads']['median'])} | {fmt(ips['torch_1_thread']['median'])} | "
                 f"{fmt(ips['jax_spc50']['median'])} | {fmt(ips['jax_spc1']['median'])} | "
                 f"{r['ratio_jax_spc50_over_torch_default']:.2f} | {r['ratio_jax_spc50_over_best_torch']:.2f} | "
                 f"{r['ratio_jax_spc1_over_best_torch']:.2f} | {foreign(r['load'])} |")
    out.append("")
  tr = load(d, "torch_reference.json")
  if tr:
    out += [f"torch_reference.py alone (torch {tr['torch']}, {tr['torch_threads']} threads): "
            + ", ".join(f"batch {b}: {fmt(v)} images/s" for b, v in tr["images_per_second"].items())
            + f" (other processes' CPU {foreign(tr['load'])}).", ""]
  sc = load(d, "scan.json")
  if sc:
    steps = sc["steps_per_call"]
    out += ["### Steps fused per compiled call (scan.py; dcvae, the pipeline's call)", "",
            "| batch | " + " | ".join(f"{s} steps/call" for s in steps) + " | other procs' CPU |",
            "|---:|" + "---:|" * len(steps) + "---:|"]
    for b, r in sorted(sc["results"].items(), key=lambda t: int(t[0])):
      cells = [f"{fmt(r['images_per_second'][f'spc{s}']['median'])} ({r['speedup_over_spc1'][f'spc{s}']:.2f}x)"
               for s in steps]
      out.append(f"| {b} | " + " | ".join(cells) + f" | {foreign(r['load'])} |")
    out += ["", "(images/s, and in brackets the speed-up over 1 step per call)", ""]
  for path in sorted(glob.glob(os.path.join(d, "ensemble*.json"))):
    en = load(d, os.path.basename(path))
    flags = f"; XLA_FLAGS=`{en['xla_flags']}`" if en.get("xla_flags") else ""
    k = en["num_models"]
    out += [f"### {k} runs in one program (vmapped, or mapped: one after another inside it) vs {k} single-run "
            f"programs (ensemble.py; batch {en['batch_size']}, {en['steps_per_call']} steps/call{flags})", "",
            "| model | MLP | params | vmapped images/s | mapped images/s | sequential images/s | vmap speed-up | "
            "map speed-up | auto picks | other procs' CPU |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in en["results"]:
      ips = r["images_per_second"]
      if "mapped" not in ips:  # an older file: vmapped and sequential only
        out.append(f"| {r['model']} | {r['hidden']} | | {fmt(ips['vmapped']['median'])} | | "
                   f"{fmt(ips['sequential']['median'])} | {r['speedup_vmapped_over_sequential']:.2f}x | | | "
                   f"{foreign(r['load'])} |")
        continue
      out.append(f"| {r['model']} | {r['hidden']} | {r['params_per_model']:,} | {fmt(ips['vmapped']['median'])} | "
                 f"{fmt(ips['mapped']['median'])} | {fmt(ips['sequential']['median'])} | "
                 f"{r['speedup_vmapped_over_sequential']:.2f}x | {r['speedup_mapped_over_sequential']:.2f}x | "
                 f"{r['auto']} | {foreign(r['load'])} |")
    out.append("")
  for path in sorted(glob.glob(os.path.join(d, "step_variants_b*.json")), key=lambda p: (len(p), p)):
    sv = load(d, os.path.basename(path))
    out += [f"### Variants of the step (step_variants.py; dcvae, batch {sv['batch_size']}, MLP {sv['hidden']}, "
            f"{sv['steps_per_call']} steps/call; other procs' CPU {foreign(sv['load'])})", "",
            "| variant | images/s | ms/step | vs pipeline |", "|---|---:|---:|---:|"]
    for n, v in sv["images_per_second"].items():
      out.append(f"| {n} | {fmt(v['median'])} | {sv['ms_per_step'][n]:.2f} | {sv['ratio_to_pipeline'][n]:.2f}x |")
    out.append("")
  for path in sorted(glob.glob(os.path.join(d, "xla_flags_b*.json"))):
    xf = load(d, os.path.basename(path))
    variants = list(next(iter(xf["images_per_second"].values())))
    out += [f"### XLA CPU flags (xla_flags.py; batch {xf['batch_size']}, MLP {xf.get('hidden', '512,256')}, "
            f"{xf['steps_per_call']} steps/call; one process per measurement; "
            f"other procs' CPU {foreign(xf['load'])})", "",
            "| flags | " + " | ".join(f"{v} images/s (vs default)" for v in variants) + " |",
            "|---|" + "---:|" * len(variants)]
    for s, r in xf["images_per_second"].items():
      out.append(f"| `{xf['flag_sets'][s] or '(none)'}` | " + " | ".join(
          f"{fmt(r[v])} ({xf['ratio_to_default'][s][v]:.2f}x)" for v in variants) + " |")
    out.append("")
  fr = load(d, "full_run.json")
  if fr:
    out += ["### A full training run (full_run.py)", "",
            f"{fr['model']}, {fr['num_epochs']} epochs over all {fr['train_images']:,} {fr['dataset']} training "
            f"images ({fr['steps']:,} steps of batch {fr['batch_size']}, MLP {'-'.join(map(str, fr['hidden']))}), "
            f"the pipeline's train_runs with its checkpoints: **{fr['wall_seconds']:.0f} s wall** "
            f"({fr['images_per_second']:,.0f} images/s, compilation included; target < {fr['target_seconds']:.0f} s: "
            f"{'met' if fr['meets_target'] else 'missed'}; other procs' CPU {fr['foreign_cpu_fraction']:.0%}).", ""]
  print("\n".join(out))


if __name__ == "__main__":
  main()
