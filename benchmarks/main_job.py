"""The main job's time (``make run``: configs/default.py, VAE, leave-one-out on mnist5k, 10 runs): two checkouts
side by side, and where the time goes.

  python benchmarks/main_job.py compare --before=/tmp/old_checkout --after=. --pairs=3 --cache=cold \\
      --json=benchmarks/results/main_job.json

runs the job (``python -m dcvae_jax.main``, a fresh workdir under /tmp each time) in each checkout in turn,
before / after / after / before / ..., so that each pair ran within a minute of each other on this shared machine,
and reports per run: wall and CPU seconds of the whole process (os.wait4), and its phases from inside the job:
start-up (imports, data), training (compilation included), scoring (everything after training), and the XLA
compilation seconds and persistent-cache hits of each phase (jax.monitoring). Then the after / before ratios
pair by pair and their medians, the other processes' CPU share while each run ran (/proc/stat) and the load
average, and whether both checkouts trained bitwise the same parameters (every leaf of every run's final
checkpoint). ``--cache``: ``cold`` (an empty XLA cache folder for every run: a first run on a machine), ``warm``
(one unmeasured run fills it first: every later run), ``off`` (DCVAE_XLA_CACHE=0). A checkout without the cache
ignores it. ``--merge``: add this measurement to the JSON's "measurements" instead of replacing them.

  python benchmarks/main_job.py phases [-- --config=configs/default.py:smoke ...]

runs the job once in this process's checkout and prints the same per-run figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# ----------------------------------------------------------------------------------------------------------
# Inside the job: phases and compilations (works for any checkout: it only wraps train_and_evaluate and
# train_runs, which every version of the package has).


def _inner(out_path: str, job_args: list[str]) -> None:
  t0 = time.perf_counter()
  sys.path.insert(0, os.getcwd())  # the checkout being measured, not the one this script is in
  record = {"compiles": [], "cache_hits": 0, "marks": {}}

  import jax
  from jax import monitoring

  def on_duration(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
      record["compiles"].append((time.perf_counter() - t0, float(duration)))

  def on_event(event, **kw):
    if event == "/jax/compilation_cache/cache_hits":
      record["cache_hits"] += 1
      record["marks"].setdefault("hit_times", []).append(time.perf_counter() - t0)

  monitoring.register_event_duration_secs_listener(on_duration)
  monitoring.register_event_listener(on_event)

  from dcvae_jax import experiment
  from dcvae_jax.train import trainer

  train_runs, train_and_evaluate = trainer.train_runs, experiment.train_and_evaluate

  def timed_train_runs(*a, **k):
    record["marks"].setdefault("train_start", time.perf_counter() - t0)
    out = train_runs(*a, **k)
    record["marks"]["train_end"] = time.perf_counter() - t0
    record["train_seconds"] = record.get("train_seconds", 0.0) + float(out[1])
    return out

  def timed_job(*a, **k):
    record["marks"]["job_start"] = time.perf_counter() - t0
    try:
      return train_and_evaluate(*a, **k)
    finally:
      record["marks"]["job_end"] = time.perf_counter() - t0
      with open(out_path, "w") as f:
        json.dump(record, f)

  trainer.train_runs, experiment.train_and_evaluate = timed_train_runs, timed_job
  del jax
  sys.argv = ["dcvae_jax.main", *job_args]
  from dcvae_jax import main

  main.run()


def _phases(record: dict) -> dict:
  """Seconds of start-up, training and scoring, and the compilation seconds and cache hits in each."""
  m = record["marks"]
  job_start, train_start, train_end, job_end = m["job_start"], m["train_start"], m["train_end"], m["job_end"]
  bounds = {"startup": (0.0, train_start), "train": (train_start, train_end), "score": (train_end, job_end)}
  out = {"train_seconds_reported": record.get("train_seconds"), "job_seconds": job_end - job_start}
  for name, (a, b) in bounds.items():
    out[f"{name}_seconds"] = b - a
    out[f"{name}_compile_seconds"] = sum(d for t, d in record["compiles"] if a < t <= b)
    out[f"{name}_compiles"] = sum(1 for t, _ in record["compiles"] if a < t <= b)
    out[f"{name}_cache_hits"] = sum(1 for t in m.get("hit_times", []) if a < t <= b)
  out["compile_seconds"] = sum(d for _, d in record["compiles"])
  out["compiles_over_0.2s"] = sum(1 for _, d in record["compiles"] if d >= 0.2)
  out["compile_seconds_under_0.2s"] = sum(d for _, d in record["compiles"] if d < 0.2)
  return out


# ----------------------------------------------------------------------------------------------------------
# Outside: whole-process time of one run.


def _cpu_busy():
  with open("/proc/stat") as f:
    vals = [int(v) for v in f.readline().split()[1:]]
  idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
  return sum(vals) - idle, sum(vals)


def run_once(checkout: str, config: str, extra: list[str], cache_dir: str | None, keep_workdir: str | None = None):
  """One job in ``checkout``; returns the figures of the run and the workdir (deleted unless keep_workdir)."""
  workdir = keep_workdir or tempfile.mkdtemp(prefix="main_job_wd_", dir="/tmp")
  out = tempfile.NamedTemporaryFile(prefix="main_job_", suffix=".json", dir="/tmp", delete=False).name
  env = dict(os.environ)
  env["DCVAE_XLA_CACHE"] = cache_dir if cache_dir else "0"
  python = os.path.join(checkout, ".venv", "bin", "python")
  if not os.path.exists(python):
    python = sys.executable
  cmd = [python, os.path.abspath(__file__), "inner", f"--out={out}", "--", f"--config={config}", f"--workdir={workdir}"]
  busy0, total0 = _cpu_busy()
  load0 = os.getloadavg()
  t0 = time.perf_counter()
  proc = subprocess.Popen(cmd + extra, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  stdout, stderr = proc.communicate()
  wall = time.perf_counter() - t0
  usage = resource_of_children()
  busy1, total1 = _cpu_busy()
  if proc.returncode:
    raise RuntimeError(f"job failed in {checkout} ({proc.returncode}):\n{stderr.decode()[-3000:]}")
  with open(out) as f:
    record = json.load(f)
  os.remove(out)
  cpu = usage - run_once.cpu_before
  run_once.cpu_before = usage
  own_ticks = cpu * os.sysconf("SC_CLK_TCK")
  foreign = max(0.0, (busy1 - busy0) - own_ticks) / max(total1 - total0, 1)
  text = stderr.decode(errors="replace")
  result = {
    "checkout": checkout,
    "wall_seconds": wall,
    "cpu_seconds": cpu,
    "foreign_cpu_fraction": foreign,
    "load_average_before": load0,
    "load_average_after": os.getloadavg(),
    **_phases(record),
    "cache_hits": record["cache_hits"],
    "log_trained": _grep(r"trained \d+ run\(s\).*", text),
    "log_scored": _grep(r"scored \d+ run\(s\).*", text),
    "table_tail": stdout.decode(errors="replace").strip().splitlines()[-3:],
  }
  return result, workdir


run_once.cpu_before = 0.0


def resource_of_children() -> float:
  import resource

  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def _grep(pattern: str, text: str):
  found = re.findall(pattern, text)
  return found[-1] if found else None


def same_parameters(workdir_a: str, workdir_b: str) -> bool:
  """Every leaf of every run's final parameters bitwise equal in the two workdirs."""
  import jax
  import numpy as np

  from dcvae_jax import experiment

  a, b = experiment.load_trained(workdir_a), experiment.load_trained(workdir_b)
  if set(a.params) != set(b.params):
    return False
  for run in a.params:
    la, lb = jax.tree.leaves(a.params[run]), jax.tree.leaves(b.params[run])
    if len(la) != len(lb) or not all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)):
      return False
  return True


def compare(args) -> dict:
  before, after = os.path.abspath(args.before), os.path.abspath(args.after)
  extra = args.job_args
  cache_root = tempfile.mkdtemp(prefix="main_job_xla_", dir="/tmp")
  warm_dir = os.path.join(cache_root, "warm")

  def cache_for(i):
    if args.cache == "off":
      return None
    if args.cache == "warm":
      return warm_dir
    return os.path.join(cache_root, f"cold{i}")

  if args.cache == "warm":  # fill it once, unmeasured
    for checkout in (before, after):
      _, wd = run_once(checkout, args.config, extra, warm_dir)
      shutil.rmtree(wd, ignore_errors=True)
  runs = {"before": [], "after": []}
  workdirs = {}
  for i in range(args.pairs):
    order = ("before", "after") if i % 2 == 0 else ("after", "before")
    for which in order:
      checkout = before if which == "before" else after
      res, wd = run_once(checkout, args.config, extra, cache_for(f"{which}{i}"))
      print(
        f"[main_job] pair {i} {which}: wall {res['wall_seconds']:.1f} s, cpu {res['cpu_seconds']:.1f} s, "
        f"train {res['train_seconds']:.1f} s, score {res['score_seconds']:.1f} s, "
        f"others' CPU {res['foreign_cpu_fraction']:.0%}",
        file=sys.stderr,
        flush=True,
      )
      runs[which].append(res)
      if i == 0:
        workdirs[which] = wd
      else:
        shutil.rmtree(wd, ignore_errors=True)
  identical = same_parameters(workdirs["before"], workdirs["after"])
  for wd in workdirs.values():
    shutil.rmtree(wd, ignore_errors=True)
  shutil.rmtree(cache_root, ignore_errors=True)

  def med(which, key):
    vals = [r[key] for r in runs[which] if r.get(key) is not None]
    return statistics.median(vals) if vals else None

  keys = (
    "wall_seconds",
    "cpu_seconds",
    "startup_seconds",
    "train_seconds",
    "score_seconds",
    "compile_seconds",
    "train_compile_seconds",
    "score_compile_seconds",
  )
  ratios = {
    k: statistics.median(a[k] / b[k] for a, b in zip(runs["after"], runs["before"], strict=True) if b[k]) for k in keys
  }
  return {
    "config": args.config,
    "extra_args": extra,
    "cache": args.cache,
    "pairs": args.pairs,
    "before": before,
    "after": after,
    "median": {w: {k: med(w, k) for k in keys} for w in runs},
    "ratio_after_over_before_median_of_pairs": ratios,
    "trained_parameters_bitwise_identical": identical,
    "runs": runs,
  }


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "inner":
    out = sys.argv[2].split("=", 1)[1]
    rest = sys.argv[sys.argv.index("--") + 1 :]
    _inner(out, rest)
    return
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="cmd", required=True)
  c = sub.add_parser("compare", help="two checkouts, interleaved")
  c.add_argument("--before", required=True)
  c.add_argument("--after", default=os.path.dirname(HERE))
  c.add_argument("--pairs", type=int, default=3)
  c.add_argument("--cache", choices=("cold", "warm", "off"), default="cold")
  c.add_argument("--config", default="configs/default.py")
  c.add_argument("--json", default=None)
  c.add_argument("--merge", action="store_true", help="append to the JSON's measurements")
  c.add_argument("job_args", nargs="*", help="after --: more arguments for the job")
  ph = sub.add_parser("phases", help="one run of this checkout")
  ph.add_argument("--cache_dir", default=None, help="XLA cache folder (default: off)")
  ph.add_argument("job_args", nargs="*")
  args = p.parse_args()
  if args.cmd == "phases":
    config = next((a.split("=", 1)[1] for a in args.job_args if a.startswith("--config=")), "configs/default.py")
    extra = [a for a in args.job_args if not a.startswith("--config=")]
    res, wd = run_once(os.path.dirname(HERE), config, extra, args.cache_dir)
    shutil.rmtree(wd, ignore_errors=True)
    print(json.dumps(res, indent=1))
    return
  result = compare(args)
  result["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
  result["cpus"] = os.cpu_count()
  print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
  if args.json:
    doc = {"measurements": []}
    if args.merge and os.path.exists(args.json):
      with open(args.json) as f:
        doc = json.load(f)
    doc["measurements"].append(result)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(doc, f, indent=1)
      f.write("\n")


if __name__ == "__main__":
  main()
