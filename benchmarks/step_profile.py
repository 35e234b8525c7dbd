"""Where the compiled train step's time goes: a jax.profiler trace of the pipeline's call, each XLA operation's
time per step, grouped into matrix products, the (B, B, d) estimator, reductions, the optimizer and the rest.

  python benchmarks/step_profile.py --model=dcvae --batch_size=256 --json=benchmarks/results/step_profile_dcvae_b256.json

XLA:CPU records one trace event per executed operation (thunk). Each operation's time per step is the MEDIAN of
its durations over the traced steps (times the number of times it runs per step): on a shared machine a thread
descheduled in the middle of an operation inflates that one event, and the median leaves such events out. The
shares are of the sum over operations ("leaf time"), which is close to the step's wall time when nothing else
runs (the operations of one step run one after another, each on both cores).
(benchmarks/throughput.py times the step against the step-shapes matmul probe, interleaved.)

Groups (from the optimised HLO): matmul: a dot (or a fusion whose root is a dot) with a matrix result and no
axis of length 1, i.e. the products the step-shapes probe runs; reduction / matvec: the other dots and the
fusions whose root is a reduce (bias gradients, ``fast_ops.sum_per_example``, the estimator's sums over j);
estimator: element-wise work on (B, B, ...) arrays; optimizer: element-wise work with a parameter's shape
outside the loss's forward and backward (Adam, copies of parameters); other: the rest (the network's element-wise
work, the loss, the batch gather).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402  (first: puts the repository root on sys.path)
import jax  # noqa: E402
import numpy as np  # noqa: E402

from dcvae_jax.train import train_step  # noqa: E402

GROUPS = ("matmul", "reduction / matvec", "estimator (B x B elementwise)", "optimizer", "other elementwise")


def _dims(shape: str) -> list[int]:
  m = re.match(r"\w+\[([\d,]*)\]", shape)
  return [int(v) for v in m.group(1).split(",") if v] if m else []


def parse_hlo(text: str):
  """{instruction name: (result shape, opcode, op_name metadata, root opcode of a called fusion or None)}."""
  roots = {}
  for m in re.finditer(r"^%([\w.\-]+) \(.*?\n(.*?)\n\}", text, re.M | re.S):
    r = re.search(r"ROOT %[\w.\-]+ = \S+ ([\w-]+)\(", m.group(2))
    roots[m.group(1)] = r.group(1) if r else None
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w-]+)\((.*)$", text, re.M):
    rest = m.group(4)
    meta = re.search(r'op_name="([^"]*)"', rest)
    calls = re.search(r"calls=%([\w.\-]+)", rest)
    out[m.group(1)] = (
      re.sub(r"\{.*", "", m.group(2)),
      m.group(3),
      meta.group(1) if meta else "",
      roots.get(calls.group(1)) if calls else None,
    )
  return out


def group(shape: str, opcode: str, op_name: str, root: str | None, batch: int, param_shapes: set) -> str | None:
  if opcode in ("while", "conditional", "call", "parameter", "get-tuple-element", "tuple", "constant", "bitcast"):
    return None
  dims = _dims(shape)
  is_dot = opcode == "dot" or root == "dot"
  if is_dot and len(dims) == 2 and min(dims) > 1:
    return "matmul"
  if is_dot or root in ("reduce", "reduce-window"):
    return "reduction / matvec"
  if len(dims) >= 2 and dims[0] == batch and dims[1] == batch:
    return "estimator (B x B elementwise)"
  if tuple(dims) in param_shapes and "jvp(" not in op_name:
    return "optimizer"
  return "other elementwise"


def trace(call, calls: int):
  """({event name: [durations in us]}, events) of a profiler trace of ``calls`` calls of ``call``."""
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(calls):
        jax.block_until_ready(call())
    (path,) = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  durations = collections.defaultdict(list)
  for e in events:
    durations[e["name"]].append(e["dur"])
  return durations, events


def profile(model: str, batch_size: int, steps_per_call: int, calls: int) -> dict:
  config = common.bench_config(model, batch_size, steps_per_call=steps_per_call)
  trainer = common.CompiledTrainer(config)
  for _ in range(3):
    jax.block_until_ready(trainer.call(steps_per_call))
  fn = train_step.compile_train_fn(trainer.setup, trainer.mesh, trainer.ensemble)
  idx, active = trainer.inputs(steps_per_call)
  hlo = parse_hlo(fn.lower(trainer.state, trainer.x, trainer.cond_all, idx, trainer.stats, active).compile().as_text())
  param_shapes = {tuple(a.shape[1:]) for a in jax.tree.leaves(trainer.state.params)}
  with common.ForeignLoad() as load:
    durations, events = trace(lambda: trainer.call(steps_per_call), calls)
  steps = calls * steps_per_call
  ops = []
  for name, ds in durations.items():
    if name not in hlo or len(ds) < steps:  # operations outside the loop run once per call
      continue
    shape, opcode, op_name, root = hlo[name]
    g = group(shape, opcode, op_name, root, batch_size, param_shapes)
    if g is not None:
      ms = float(np.median(ds)) * len(ds) / steps / 1000
      ops.append({"name": name, "group": g, "shape": shape, "ms_per_step": ms, "op_name": op_name[-100:]})
  leaf = sum(o["ms_per_step"] for o in ops)
  wall = [e["dur"] / steps_per_call / 1000 for e in events if e["name"].startswith("ThunkExecutor::Execute (wait")]
  groups = {}
  for g in GROUPS:
    mine = sorted((o for o in ops if o["group"] == g), key=lambda o: -o["ms_per_step"])
    total = sum(o["ms_per_step"] for o in mine)
    groups[g] = {"ms_per_step": total, "share": total / leaf, "largest": mine[:8]}
  return {
    "benchmark": "step_profile",
    "model": model,
    "batch_size": batch_size,
    "steps_per_call": steps_per_call,
    "traced_steps": steps,
    "leaf_ms_per_step": leaf,
    "wall_ms_per_step_per_call": wall,
    "groups": groups,
    "load": {"foreign_cpu_fraction_during": load.fraction, "load_average_after": os.getloadavg()},
    "machine": common.machine(),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="dcvae")
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--steps_per_call", type=int, default=50)
  p.add_argument("--calls", type=int, default=4, help="traced calls")
  p.add_argument("--json", default=None)
  a = p.parse_args()
  res = profile(a.model, a.batch_size, a.steps_per_call, a.calls)
  for g, v in res["groups"].items():
    print(f"{g:32s} {v['ms_per_step']:7.2f} ms/step {v['share']:6.1%}", flush=True)
  print(f"leaf {res['leaf_ms_per_step']:.2f} ms/step; wall per call {res['wall_ms_per_step_per_call']}", flush=True)
  common.write_json(a.json, res, echo=False)


if __name__ == "__main__":
  main()
