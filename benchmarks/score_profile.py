"""Where scoring's time goes: per phase and per score, for the default leave-one-out job of each model.

  python benchmarks/score_profile.py --models=vae,cvae,dcvae --json=benchmarks/results/score_profile.json
  python benchmarks/score_profile.py --checkouts=/tmp/old,. --models=dcvae --json=...   # before / after

For each model (configs/default.py with ``--config.model.name``): train the 10 runs once (train.num_epochs as
configured, the job's own ``trainer.train_runs``; its seconds are the training the scoring is compared with), then
run the scoring phases as the detection evaluator (evaluators/detection.py) calls them: the NAP fit, the sap_complexity
reference, the validation images, the test set, the codes (not the host-side metrics, which the job's log line
"scored N run(s)" times). Each phase's seconds include its compilations, also counted apart (jax.monitoring's
backend_compile_duration; the XLA cache is off). With ``--per_score``, the test set again once per device score
(each alone in its own program, compilation counted apart), which says what each score costs, and for a
conditional model all of them without the all-zero condition's column (``zero_condition=False``) where the
checkout has it.

With ``--checkouts`` every measurement is made in a fresh process per checkout (each imports its own dcvae_jax),
the checkouts taking turns model by model, so that both ran within minutes of each other on this shared machine.
The JSON holds the CPU model (/proc/cpuinfo), the load average and the CPU share other processes took."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from main_job import cpu_model  # benchmarks/ is this script's folder: first on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCORES = ("recon", "nelbo", "iwae", "rapp", "rapp_sap")  # the device scores; complexity & co. are host-side


def _cpu_ticks():
  with open("/proc/stat") as f:
    vals = [int(v) for v in f.readline().split()[1:]]
  idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
  return sum(vals) - idle, sum(vals)


def _own_ticks():
  with open("/proc/self/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  return sum(int(v) for v in fields[11:15])


# ----------------------------------------------------------------------------------------------------------
# One model in this process (the checkout in the current directory).


def profile_model(model: str, job_args: list[str], per_score: bool) -> dict:
  sys.path.insert(0, os.getcwd())
  import jax
  import numpy as np

  from dcvae_jax import distributed

  try:  # the scoring phases' functions: evaluators/detection.py (experiment.py before the evaluators were plug-ins)
    from dcvae_jax.evaluators import detection as phases_of
  except ImportError:
    from dcvae_jax import experiment as phases_of
  from dcvae_jax.data.prepare import make_runs, prepare_data
  from dcvae_jax.evaluators import latents, scoring
  from dcvae_jax.train import train_step, trainer

  compiles = []

  def on_duration(event, duration, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(float(duration))

  jax.monitoring.register_event_duration_secs_listener(on_duration)

  import importlib.util

  spec_ = importlib.util.spec_from_file_location("default_cfg", os.path.join(os.getcwd(), "configs", "default.py"))
  mod = importlib.util.module_from_spec(spec_)
  spec_.loader.exec_module(mod)
  config = mod.get_config("")
  config.model.name = model
  config.train.progress = False
  config.train.tensorboard = False
  for a in job_args:  # --config.a.b=value overrides (numbers and strings)
    key, value = a.removeprefix("--config.").split("=", 1)
    *path, last = key.split(".")
    node = config
    for p in path:
      node = node[p]
    old = node[last]
    node[last] = type(old)(value) if isinstance(old, (int, float)) and not isinstance(old, bool) else value

  ds = prepare_data(config)
  runs = make_runs(config, ds)
  mesh = distributed.make_mesh()
  num_conditions = len(runs[0].normal)
  out: dict = {"model": model, "runs": len(runs), "n_test": int(ds.x_test.shape[0])}
  busy0, total0 = _cpu_ticks()
  own0 = _own_ticks()
  workdir = tempfile.mkdtemp(prefix="score_profile_", dir="/tmp")
  n0 = len(compiles)
  t = time.perf_counter()
  state, seconds, _ = trainer.train_runs(
    config,
    ds.x_train,
    ds.y_train,
    runs,
    os.path.join(workdir, "ckpt"),
    image_shape=ds.image_shape,
    num_conditions=num_conditions,
    mesh=mesh,
    log=lambda *_: None,
  )
  out["train_seconds"] = time.perf_counter() - t
  out["train_compile_seconds"] = sum(compiles[n0:])
  steps = int(np.sum(distributed.to_host(state.step)))
  out["train_images_per_second"] = steps * int(config.train.batch_size) / out["train_seconds"]
  setup = train_step.make_setup(config, ds.image_shape, num_conditions, mesh.devices.size)
  params = state.params
  offset_bits = phases_of.complexity_offset_bits(config, ds.image_shape)

  phases: dict = {}

  def timed(name, fn, store=phases):
    n = len(compiles)
    t = time.perf_counter()
    res = fn()
    jax.block_until_ready(res)
    store[name] = {"seconds": time.perf_counter() - t, "compile_seconds": sum(compiles[n:])}
    return res

  x_fit, cond_fit = phases_of.rapp_fit_data(config, ds, runs)
  nap = timed(
    "NAP fit",
    lambda: scoring.fit_rapp(setup, params, x_fit, cond_fit, mesh, batch_size=config.eval.batch_size),
  )
  timed("reference", lambda: phases_of.reference_scores(config, ds, runs, setup, params, mesh, nap, offset_bits))
  rows = np.flatnonzero(np.isin(ds.y_val, [k for r in runs for k in r.normal + r.anomalous]))
  timed(
    "validation",
    lambda: phases_of.score_images(config, setup, params, ds.x_val[rows], mesh, nap, seed=config.seed + 2),
  )
  timed("test set", lambda: phases_of.score_images(config, setup, params, ds.x_test, mesh, nap, seed=config.seed))
  timed(
    "codes",
    lambda: latents.encode_test_set(
      setup,
      params,
      ds.x_test,
      mesh,
      batch_size=config.eval.batch_size,
      conditions=latents.condition_ids(runs, ds.y_test),
    ),
  )
  out["phases"] = phases
  out["score_seconds"] = sum(p["seconds"] for p in phases.values())
  out["score_compile_seconds"] = sum(p["compile_seconds"] for p in phases.values())
  if per_score:  # the test set again, each device score alone (its own program: first call compiles)
    each: dict = {}
    for s in SCORES:
      timed(s, lambda s=s: phases_of.score_images(config, setup, params, ds.x_test, mesh, nap, seed=0, scores=(s,)),
            each)  # fmt: skip
    import inspect

    if "zero_condition" in inspect.signature(scoring.score_test_set).parameters and setup.spec.conditional:
      timed(
        "all, without the zero condition",
        lambda: phases_of.score_images(config, setup, params, ds.x_test, mesh, nap, seed=0, zero_condition=False),
        each,
      )
    out["test_set_per_score"] = each
  busy1, total1 = _cpu_ticks()
  out["foreign_cpu_fraction"] = max(0.0, (busy1 - busy0) - (_own_ticks() - own0)) / max(total1 - total0, 1)
  out["score_to_train"] = out["score_seconds"] / out["train_seconds"]
  if hasattr(scoring, "_noise_rows"):  # the accounting below is of this scoring algorithm
    counts = {
      "train_images": steps * int(config.train.batch_size),
      "fit_images": int(x_fit.shape[0] * x_fit.shape[1]),
      "reference_images": len(runs) * min(int(config.eval.reference_examples), int(x_fit.shape[1])),
      "validation_images": len(runs) * int(rows.size),
      "test_images": len(runs) * int(ds.x_test.shape[0]),
    }
    out["work"] = work_accounting(config, setup, params, nap, counts, phases, out["train_seconds"])
  import shutil

  shutil.rmtree(workdir, ignore_errors=True)
  return out


def work_accounting(config, setup, params, nap, counts, phases, train_seconds) -> dict:
  """Matrix-product work (GFLOP = 2 x multiply-adds / 1e9) of training and of each scoring phase, counted from the
  Dense kernels' shapes, and the rate each phase ran at: what the work alone says about scoring / training.

  Per trained image: forward, the weights' gradients and the inputs' gradients of every encoder and decoder layer
  (3 products per layer, the input layer's input gradient excepted). Per scored image and visited condition: an
  encoder pass of x, a decoder pass of mu, an encoder pass of x_hat (recon, RaPP), NAP's projection (D x k) and
  one decoder pass per code (iwae's K and nelbo's S). The NAP fit:
  the three passes per fit image. Conditions visited: C for a conditional model (the all-zero condition only under
  score_condition "given"), 1 otherwise. Elementwise work (likelihoods, softplus, the TC estimator) is left out."""
  import numpy as np

  from dcvae_jax.evaluators import scoring

  first = {k: v for k, v in params["params"].items()}

  def macs(part):
    kernels = [leaf for path, leaf in _leaves(first.get(part, {})) if path.endswith("kernel")]
    return sum(int(np.prod(k.shape[1:])) for k in kernels), (int(np.prod(kernels[0].shape[1:])) if kernels else 0)

  enc, enc_in = macs("encoder")
  dec, _ = macs("decoder")
  train_per_image = 3 * (enc + dec) - enc_in
  k, s = int(config.eval.iwae_samples), int(config.eval.elbo_samples)
  wanted = scoring.device_scores(scoring.score_names(config))
  codes = (k if "iwae" in wanted else 0) + (s if "nelbo" in wanted else 0)
  nap_macs = int(np.prod(np.shape(nap["basis"])[1:])) if "rapp" in wanted else 0
  visited = setup.num_conditions if setup.spec.conditional else 1
  if setup.spec.conditional and config.protocol.score_condition == "given":
    visited += 1
  per_scored = visited * (2 * enc + dec + nap_macs + codes * dec)
  gflop = {
    "train": 2 * train_per_image * counts["train_images"] / 1e9,
    "NAP fit": 2 * (2 * enc + dec) * counts["fit_images"] / 1e9,
    "reference": 2 * per_scored * counts["reference_images"] / 1e9,
    "validation": 2 * per_scored * counts["validation_images"] / 1e9,
    "test set": 2 * per_scored * counts["test_images"] / 1e9,
  }
  seconds = {"train": train_seconds, **{p: phases[p]["seconds"] for p in gflop if p in phases}}
  score_gflop = sum(v for p, v in gflop.items() if p != "train")
  return {
    "counts": counts,
    "macs": {
      "encoder": enc,
      "decoder": dec,
      "nap_projection": nap_macs,
      "codes_per_condition": codes,
      "conditions_visited": visited,
    },  # fmt: skip
    "gflop": gflop,
    "gflop_per_second": {p: gflop[p] / seconds[p] for p in gflop if p in seconds and seconds[p] > 0},
    "score_to_train_gflop": score_gflop / gflop["train"],
  }


def _leaves(tree, prefix=""):
  if isinstance(tree, dict) or hasattr(tree, "items"):
    for key, value in tree.items():
      yield from _leaves(value, f"{prefix}/{key}")
  else:
    yield prefix, tree


# ----------------------------------------------------------------------------------------------------------
# Driver: one process per (checkout, model).


def run_in(checkout: str, model: str, job_args: list[str], cache_dir: str, per_score: bool) -> dict:
  out = tempfile.NamedTemporaryFile(prefix="score_profile_", suffix=".json", dir="/tmp", delete=False).name
  env = dict(os.environ, DCVAE_XLA_CACHE=cache_dir)
  cmd = [sys.executable, os.path.abspath(__file__), "inner", model, out, "1" if per_score else "0", *job_args]
  load0 = os.getloadavg()
  proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"{checkout} {model} failed:\n{proc.stderr[-3000:]}")
  with open(out) as f:
    res = json.load(f)
  os.remove(out)
  res["checkout"] = checkout
  res["load_average_before"] = load0
  res["load_average_after"] = os.getloadavg()
  return res


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "inner":
    model, out_path, per_score, *job_args = sys.argv[2:]
    sys.path.insert(0, os.getcwd())
    try:
      from dcvae_jax import xla_cache

      xla_cache.enable()
    except ImportError:  # an old checkout
      pass
    res = profile_model(model, job_args, per_score == "1")
    with open(out_path, "w") as f:
      json.dump(res, f)
    return
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="vae,cvae,dcvae")
  p.add_argument("--checkouts", default=REPO, help="comma-separated checkouts; they take turns")
  p.add_argument("--json", default=None)
  p.add_argument("--per_score", action="store_true", help="also the test set once per device score")
  p.add_argument("job_args", nargs="*", help="--config.x=y overrides")
  args = p.parse_args()
  checkouts = [os.path.abspath(c) for c in args.checkouts.split(",")]
  doc = {
    "cpu_model": cpu_model(),
    "cpus": os.cpu_count(),
    "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    "job_args": args.job_args,
    "note": "seconds include compiling (the XLA cache is off: DCVAE_XLA_CACHE=0), counted apart in compile_seconds",
    "results": [],
  }
  for i, model in enumerate(args.models.split(",")):
    order = checkouts[i % len(checkouts) :] + checkouts[: i % len(checkouts)]
    for checkout in order:
      res = run_in(checkout, model, args.job_args, "0", args.per_score)
      doc["results"].append(res)
      print(
        f"[score_profile] {checkout} {model}: train {res['train_seconds']:.1f} s, score {res['score_seconds']:.1f} s"
        f" = {res['score_to_train']:.2f} x training; "
        + ", ".join(f"{k} {v['seconds']:.1f}" for k, v in res["phases"].items()),
        file=sys.stderr,
        flush=True,
      )
      if args.json:
        with open(args.json, "w") as f:
          json.dump(doc, f, indent=1)
          f.write("\n")
  print(json.dumps(doc, indent=1))


if __name__ == "__main__":
  main()
