"""The main job's time (``make run``: configs/default.py, VAE, leave-one-out on mnist5k, 10 runs): two checkouts
side by side, and where the time goes.

  python benchmarks/main_job.py compare --before=/tmp/old_checkout --after=. --reps=3 \\
      --json=benchmarks/results/main_job.json

runs the job (``python -m dcvae_jax.main``, a fresh workdir under /tmp each time) in turn as: ``before`` (the old
checkout), ``after_cold`` (this one with an empty XLA cache folder: a first run on a machine) and ``after_warm``
(this one with a cache folder that one unmeasured run filled: every later run), the order rotating from one
repetition to the next, so that the runs compared ran within minutes of each other on this shared machine. Per
run: wall and CPU seconds of the whole process (its rusage), and its phases from inside the job: start-up
(imports, data), training (compilation included), scoring (everything after training), and the XLA compilation
seconds and persistent-cache hits of each phase (jax.monitoring). Then the ratios to ``before`` repetition by
repetition and their medians, the other processes' CPU share while each run ran (/proc/stat) and the load
average, and whether all three trained bitwise the same parameters (every leaf of every run's final checkpoint,
the first repetition's). The JSON is rewritten after every run. A checkout without the cache ignores it.

  python benchmarks/main_job.py models --models=vae,cvae,dcvae [--before=/tmp/old_checkout] \\
      --json=benchmarks/results/main_job_models.json

is the phase benchmark: the default job once per model (``--config.model.name``), each with an empty XLA cache
folder, and its compile, training and scoring seconds, training images per second, the scoring stages of the
job's log line, and scoring / training; with ``--before`` the old checkout's job beside each, taking turns.

  python benchmarks/main_job.py cache --config=configs/mnist.py:smoke --json=benchmarks/results/compile_cache.json \\
      [-- --config.data.data_dir=/work/shared/data]

runs the same job twice, separate workdirs, one XLA cache folder that starts empty, and compares their compile
seconds (jax.monitoring's backend_compile_duration: a compilation, or its load from the cache).

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
REPO = os.path.dirname(HERE)

# ----------------------------------------------------------------------------------------------------------
# Inside the job: phases and compilations (works for any checkout: it only wraps train_and_evaluate and
# train_runs, which every version of the package has).


def _inner(out_path: str, job_args: list[str]) -> None:
  t0 = time.perf_counter()
  sys.path.insert(0, os.getcwd())  # the checkout being measured, not the one this script is in
  record = {"compiles": [], "traces": [], "cache_hits": 0, "cache_misses": 0, "marks": {}}

  import jax
  from jax import monitoring

  def on_duration(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":  # an XLA compilation, or its load from the cache
      record["compiles"].append((time.perf_counter() - t0, float(duration)))
    elif event in ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration"):
      record["traces"].append((time.perf_counter() - t0, float(duration)))  # never cached: every run pays it

  def on_event(event, **kw):
    if event == "/jax/compilation_cache/cache_hits":
      record["cache_hits"] += 1
      record["marks"].setdefault("hit_times", []).append(time.perf_counter() - t0)
    elif event == "/jax/compilation_cache/cache_misses":
      record["cache_misses"] += 1

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
    try:  # training images: the steps of every run times the batch size
      import numpy as np

      steps = int(np.sum(np.asarray(out[0].step)))
      record["train_images"] = record.get("train_images", 0) + steps * int(a[0].train.batch_size)
    except Exception:  # an old checkout whose state differs: no images/s then
      pass
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
  out["trace_seconds"] = sum(d for _, d in record.get("traces", []))
  out["cache_misses"] = record.get("cache_misses", 0)
  if record.get("train_images"):
    out["train_images"] = record["train_images"]
    out["train_images_per_second"] = record["train_images"] / record["train_seconds"]
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
  text = stderr.decode(errors="replace") + stdout.decode(errors="replace")
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
    "score_stages": _stages(_grep(r"scored \d+ run\(s\).*", text)),
    "table_tail": stdout.decode(errors="replace").strip().splitlines()[-3:],
    **_mean_aurocs(workdir),
  }
  return result, workdir


def _mean_aurocs(workdir: str) -> dict:
  """The job's mean test and validation AUROC of every score (results.json), rounded to 4 decimals: before and
  after are compared on what they detect, not only on time."""
  try:
    with open(os.path.join(workdir, "results.json")) as f:
      r = json.load(f)
  except (OSError, ValueError):
    return {}
  keys = ("auroc_by_score", "val_auroc_by_score")
  return {k: {n: round(float(v), 4) for n, v in r[k].items()} for k in keys if isinstance(r.get(k), dict)}


run_once.cpu_before = 0.0


def resource_of_children() -> float:
  import resource

  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def _grep(pattern: str, text: str):
  found = re.findall(pattern, text)
  return found[-1] if found else None


def _stages(line: str | None) -> dict | None:
  """The seconds of each scoring stage in the job's "scored N run(s) in T s (NAP fit a s, ...)" line."""
  if not line or "(" not in line:
    return None
  inner = line.split("(", 2)[-1].rstrip(")")
  return {m.group(1).strip(): float(m.group(2)) for m in re.finditer(r"([^,]+?) ([0-9.]+) s", inner)}


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo; else the platform's processor name)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  import platform

  return platform.processor() or "unknown"


def same_parameters(workdir_a: str, workdir_b: str) -> bool:
  """Every leaf of every run's final parameters bitwise equal in the two workdirs (run in the checkout's own
  interpreter by ``python benchmarks/main_job.py same A B``)."""
  sys.path.insert(0, REPO)
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


def _same_in(checkout: str, a: str, b: str):
  python = os.path.join(checkout, ".venv", "bin", "python")
  proc = subprocess.run(
    [python if os.path.exists(python) else sys.executable, os.path.abspath(__file__), "same", a, b],
    cwd=checkout,
    capture_output=True,
    text=True,
  )
  last = (proc.stdout.strip().splitlines() or ["?"])[-1]
  return {"True": True, "False": False}.get(last, f"comparison failed: {proc.stderr[-500:]}")


KEYS = (
  "wall_seconds",
  "cpu_seconds",
  "startup_seconds",
  "train_seconds",
  "score_seconds",
  "compile_seconds",
  "train_compile_seconds",
  "score_compile_seconds",
)


def compare(args, save) -> dict:
  before, after = os.path.abspath(args.before), os.path.abspath(args.after)
  extra = args.job_args
  cache_root = tempfile.mkdtemp(prefix="main_job_xla_", dir="/tmp")
  warm_dir = os.path.join(cache_root, "warm")
  _, wd = run_once(after, args.config, extra, warm_dir)  # fill the warm cache, unmeasured
  shutil.rmtree(wd, ignore_errors=True)
  variants = {"before": (before, None), "after_cold": (after, "cold"), "after_warm": (after, warm_dir)}
  names = list(variants)
  result = {
    "config": args.config,
    "extra_args": extra,
    "reps": args.reps,
    "before": before,
    "after": after,
    "runs": {n: [] for n in names},
  }
  first_workdirs = {}
  for i in range(args.reps):
    order = names[i % 3 :] + names[: i % 3]
    for name in order:
      checkout, cache = variants[name]
      if cache == "cold":
        cache = os.path.join(cache_root, f"cold{i}")
      res, wd = run_once(checkout, args.config, extra, cache)
      print(
        f"[main_job] rep {i} {name}: wall {res['wall_seconds']:.1f} s, cpu {res['cpu_seconds']:.1f} s, "
        f"train {res['train_seconds']:.1f} s, score {res['score_seconds']:.1f} s, "
        f"compile {res['compile_seconds']:.1f} s, others' CPU {res['foreign_cpu_fraction']:.0%}",
        file=sys.stderr,
        flush=True,
      )
      result["runs"][name].append(res)
      if i == 0:
        first_workdirs[name] = wd
      else:
        shutil.rmtree(wd, ignore_errors=True)
      save(summarise(result))
  result["trained_parameters_bitwise_identical"] = {
    f"{name} vs before": _same_in(after, first_workdirs["before"], first_workdirs[name])
    for name in ("after_cold", "after_warm")
  }
  for wd in first_workdirs.values():
    shutil.rmtree(wd, ignore_errors=True)
  shutil.rmtree(cache_root, ignore_errors=True)
  return summarise(result)


def summarise(result: dict) -> dict:
  runs = result["runs"]
  out = dict(result)
  out["median"] = {name: {k: statistics.median([r[k] for r in rs]) for k in KEYS} for name, rs in runs.items() if rs}
  out["ratio_to_before_median_of_reps"] = {
    name: {
      k: statistics.median([a[k] / b[k] for a, b in zip(runs[name], runs["before"], strict=False) if b[k]])
      for k in KEYS
      if any(b[k] for b in runs["before"][: len(runs[name])])
    }
    for name in runs
    if name != "before" and runs[name] and runs["before"]
  }
  out["foreign_cpu_fraction_median"] = statistics.median(
    [r["foreign_cpu_fraction"] for rs in runs.values() for r in rs] or [0.0]
  )
  return out


def _model_figures(res: dict) -> dict:
  """The phase benchmark's figures of one job."""
  keep = (
    "wall_seconds",
    "train_seconds",
    "score_seconds",
    "compile_seconds",
    "train_compile_seconds",
    "score_compile_seconds",
    "trace_seconds",
    "train_images_per_second",
    "cache_hits",
    "cache_misses",
    "foreign_cpu_fraction",
    "load_average_before",
    "score_stages",
    "log_trained",
    "log_scored",
    "table_tail",
    "auroc_by_score",
    "val_auroc_by_score",
  )
  out = {k: res.get(k) for k in keep}
  out["score_to_train"] = res["score_seconds"] / res["train_seconds"]
  out["score_to_train_without_compiling"] = (res["score_seconds"] - res["score_compile_seconds"]) / max(
    res["train_seconds"] - res["train_compile_seconds"], 1e-9
  )
  return out


def models(args, save) -> dict:
  """Per model: compile, train and score seconds of the default job and training images/s; with --before, the
  old checkout's job beside it, the two taking turns (before first for the first model, after first for the
  next, ...). Every job starts with an empty XLA cache folder of its own (a first run: compile seconds are
  compilations)."""
  checkouts = {"after": os.path.abspath(args.after)}
  if args.before:
    checkouts = {"before": os.path.abspath(args.before), **checkouts}
  names = list(checkouts)
  doc = {"config": args.config, "extra_args": args.job_args, "cpu_model": cpu_model(), "models": {}}
  doc.update({f"{n}_checkout": c for n, c in checkouts.items()})
  for i, model in enumerate(args.models.split(",")):
    order = names[i % len(names) :] + names[: i % len(names)]
    for name in order:
      cache = tempfile.mkdtemp(prefix="main_job_xla_", dir="/tmp")
      res, wd = run_once(checkouts[name], args.config, [f"--config.model.name={model}", *args.job_args], cache)
      shutil.rmtree(wd, ignore_errors=True)
      shutil.rmtree(cache, ignore_errors=True)
      fig = _model_figures(res)
      doc["models"].setdefault(model, {})[name] = fig
      print(
        f"[main_job] {model} {name}: train {fig['train_seconds']:.1f} s (compile {fig['train_compile_seconds']:.1f}),"
        f" score {fig['score_seconds']:.1f} s (compile {fig['score_compile_seconds']:.1f}), score/train "
        f"{fig['score_to_train']:.2f}, others' CPU {fig['foreign_cpu_fraction']:.0%}",
        file=sys.stderr,
        flush=True,
      )
      save(doc)
  return doc


def cache_reuse(args, save) -> dict:
  """Two identical jobs, separate workdirs, one XLA cache folder that starts empty: the second's compile seconds
  (compilations and loads from the cache, jax.monitoring's backend_compile_duration) against the first's."""
  cache = tempfile.mkdtemp(prefix="main_job_xla_", dir="/tmp")
  doc = {"config": args.config, "extra_args": args.job_args, "cpu_model": cpu_model(), "runs": []}
  for _ in range(2):
    res, wd = run_once(os.path.abspath(args.after), args.config, list(args.job_args), cache)
    shutil.rmtree(wd, ignore_errors=True)
    doc["runs"].append(res)
    save(doc)
  first, second = doc["runs"]
  doc["compile_seconds"] = [first["compile_seconds"], second["compile_seconds"]]
  doc["second_to_first_compile"] = second["compile_seconds"] / max(first["compile_seconds"], 1e-9)
  doc["trace_seconds"] = [first["trace_seconds"], second["trace_seconds"]]
  doc["wall_seconds"] = [first["wall_seconds"], second["wall_seconds"]]
  doc["cache_hits_second"] = second["cache_hits"]
  doc["cache_misses_second"] = second["cache_misses"]
  doc["cache_folder_bytes"] = sum(
    os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs if not f.endswith(".tmp")
  )
  shutil.rmtree(cache, ignore_errors=True)
  return doc


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "inner":
    out = sys.argv[2].split("=", 1)[1]
    rest = sys.argv[sys.argv.index("--") + 1 :]
    _inner(out, rest)
    return
  if len(sys.argv) > 1 and sys.argv[1] == "same":
    print(same_parameters(sys.argv[2], sys.argv[3]))
    return
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="cmd", required=True)
  c = sub.add_parser("compare", help="the old checkout against this one, cold and warm cache, interleaved")
  c.add_argument("--before", required=True)
  c.add_argument("--after", default=REPO)
  c.add_argument("--reps", type=int, default=3)
  c.add_argument("--config", default="configs/default.py")
  c.add_argument("--json", default=None)
  c.add_argument("job_args", nargs="*", help="after --: more arguments for the job")
  mo = sub.add_parser("models", help="compile / train / score seconds and images/s per model (one job each)")
  mo.add_argument("--models", default="vae,cvae,dcvae")
  mo.add_argument("--before", default=None, help="an old checkout to run beside this one")
  mo.add_argument("--after", default=REPO)
  mo.add_argument("--config", default="configs/default.py")
  mo.add_argument("--json", default=None)
  mo.add_argument("job_args", nargs="*", help="after --: more arguments for the job")
  ca = sub.add_parser("cache", help="two identical jobs sharing one new XLA cache folder: compile seconds of each")
  ca.add_argument("--after", default=REPO)
  ca.add_argument("--config", default="configs/mnist.py:smoke")
  ca.add_argument("--json", default=None)
  ca.add_argument("job_args", nargs="*", help="after --: more arguments for the job")
  ph = sub.add_parser("phases", help="one run of this checkout")
  ph.add_argument("--cache_dir", default=None, help="XLA cache folder (default: off)")
  ph.add_argument("job_args", nargs="*")
  args = p.parse_args()
  if args.cmd == "phases":
    config = next((a.split("=", 1)[1] for a in args.job_args if a.startswith("--config=")), "configs/default.py")
    extra = [a for a in args.job_args if not a.startswith("--config=")]
    res, wd = run_once(REPO, config, extra, args.cache_dir)
    shutil.rmtree(wd, ignore_errors=True)
    print(json.dumps(res, indent=1))
    return

  def save(doc):
    doc = dict(doc, measured_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), cpus=os.cpu_count())
    doc.setdefault("cpu_model", cpu_model())
    if args.json:
      os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
      with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return doc

  if args.cmd in ("models", "cache"):
    doc = save((models if args.cmd == "models" else cache_reuse)(args, save))
    print(json.dumps({k: v for k, v in doc.items() if k != "runs"}, indent=1))
    return
  doc = save(compare(args, save))
  print(json.dumps({k: v for k, v in doc.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
  main()
