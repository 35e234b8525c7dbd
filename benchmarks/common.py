"""Shared pieces of the benchmarks.

Machine load (this machine is small and shared): wait for a quiet CPU, measure the CPU time other processes use
while timing, interleave the things compared (A, B, C, A, B, C, ...) and report medians of per-repetition ratios.
The pipeline's step: a synthetic training set, the pipeline's compiled train call ready to time, FLOPs, the
machine's matmul peak (the step's own matrix products in one jitted function, and a square matmul), JSON output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from main_job import cpu_model  # noqa: E402  (benchmarks/ is on sys.path: this file's folder)

from dcvae_jax import distributed  # noqa: E402
from dcvae_jax.config import base_config  # noqa: E402
from dcvae_jax.data import input_pipeline, protocols
from dcvae_jax.models import objectives
from dcvae_jax.train import train_step

# ----------------------------------------------------------------------------------------------------------
# Machine load.


def _cpu_ticks():
  """(busy, total) jiffies of the whole machine since boot."""
  with open("/proc/stat") as f:
    vals = [int(v) for v in f.readline().split()[1:]]
  idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
  return sum(vals) - idle, sum(vals)


def _own_ticks(pids=()):
  """Jiffies used by this process (all its threads), by its children that have been waited for, and by ``pids``."""
  total = 0
  for pid in ("self", *pids):
    try:
      with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
      continue
    total += sum(int(v) for v in fields[11:15])
  return total


class ForeignLoad:
  """Context manager: the CPU time other processes used while it was open, as a fraction of all cores
  (this process, its finished children and the processes ``pids`` do not count)."""

  def __init__(self, pids=()):
    self.pids = tuple(pids)

  def __enter__(self):
    self.busy0, self.total0 = _cpu_ticks()
    self.own0 = _own_ticks(self.pids)
    return self

  def __exit__(self, *exc):
    busy, total = _cpu_ticks()
    own = _own_ticks(self.pids)
    span = max(total - self.total0, 1)
    self.fraction = max(busy - self.busy0 - (own - self.own0), 0) / span
    return False


def foreign_cpu_fraction(seconds=2.0) -> float:
  with ForeignLoad() as load:
    time.sleep(seconds)
  return load.fraction


def _print(msg):
  print(msg, flush=True)


def wait_for_quiet(threshold=0.1, window=3.0, max_wait=None, log=_print) -> dict:
  """Wait until other processes use < ``threshold`` of the CPUs over ``window`` seconds (at most max_wait
  seconds, default $BENCH_MAX_WAIT or 900), then go on either way (the result says whether it was quiet)."""
  if max_wait is None:
    max_wait = float(os.environ.get("BENCH_MAX_WAIT", 900))
  start = time.time()
  frac = foreign_cpu_fraction(window)
  while frac >= threshold and time.time() - start < max_wait:
    log(f"[bench] machine busy: other processes use {frac:.0%} of the CPUs; waiting")
    time.sleep(10)
    frac = foreign_cpu_fraction(window)
  return {
    "foreign_cpu_fraction_before": frac,
    "waited_seconds": time.time() - start,
    "quiet": frac < threshold,
    "load_average_before": os.getloadavg(),
  }


def interleave(fns: dict, reps: int, log=None, pids=(), max_foreign=0.15, max_discards=None) -> dict:
  """Call every fn (a thunk returning a rate) once per repetition, in rotating order; returns
  {name: [rate per rep]}, the foreign CPU fraction of each kept repetition under '_foreign', and the number of
  repetitions thrown away under '_discarded': a repetition during which other processes used more than
  ``max_foreign`` of the CPUs is discarded and repeated after waiting for a quiet machine (at most
  ``max_discards`` times, default 2 * reps; then it is kept and its foreign fraction says so)."""
  names = list(fns)
  out = {n: [] for n in names}
  out["_foreign"], out["_discarded"] = [], 0
  max_discards = 2 * reps if max_discards is None else max_discards
  r = 0
  while r < reps:
    order = names[r % len(names) :] + names[: r % len(names)]
    got = {}
    with ForeignLoad(pids) as load:
      for n in order:
        got[n] = float(fns[n]())
    if log:
      log(f"[rep {r}] " + ", ".join(f"{n}={got[n]:.0f}" for n in names) + f", foreign={load.fraction:.0%}")
    if load.fraction > max_foreign and out["_discarded"] < max_discards:
      out["_discarded"] += 1
      if log:
        log(f"[rep {r}] discarded: other processes used {load.fraction:.0%} of the CPUs")
      wait_for_quiet(log=log or (lambda msg: None))
      continue
    for n in names:
      out[n].append(got[n])
    out["_foreign"].append(load.fraction)
    r += 1
  return out


def median_ratio(a, b) -> float:
  """Median over repetitions of a[r] / b[r] (paired within a repetition)."""
  return float(np.median(np.asarray(a) / np.asarray(b)))


def summary(rates: dict) -> dict:
  return {
    n: {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v)), "reps": v}
    for n, v in rates.items()
    if not n.startswith("_")
  }


def load_info(rates: dict | None = None, quiet: dict | None = None) -> dict:
  info = {"load_average_after": os.getloadavg()}
  if quiet:
    info.update(quiet)
  if rates and "_discarded" in rates:
    info["discarded_busy_reps"] = rates["_discarded"]
  if rates and rates.get("_foreign"):
    info["foreign_cpu_fraction_per_rep"] = rates["_foreign"]
    info["foreign_cpu_fraction_median"] = float(np.median(rates["_foreign"]))
  return info


# ----------------------------------------------------------------------------------------------------------
# The pipeline's step.


def bench_config(
  model: str, batch_size: int, *, hidden=(512, 256), latent_dim=10, estimator="mss", arch="mlp", steps_per_call=50
):
  c = base_config()
  c.model.name = model
  c.model.arch = arch
  c.model.hidden = tuple(hidden)
  c.model.latent_dim = latent_dim
  c.model.estimator = estimator
  c.train.batch_size = batch_size
  c.train.steps_per_call = steps_per_call
  c.train.progress = False
  return c


def synthetic_digits(n=6000, num_classes=11, seed=0):
  """Random uint8 28x28 images with labels 0..num_classes-1 (throughput does not depend on pixel values)."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % num_classes).astype(np.int32)


def call_rate(obj, steps_per_call: int, batch_size: int, seconds: float) -> float:
  """images/s of ``obj.call(steps_per_call)`` repeated for >= ``seconds`` (and >= 2 calls), each call waited for."""
  calls = 0
  t0 = time.perf_counter()
  while calls < 2 or time.perf_counter() - t0 < seconds:
    jax.block_until_ready(obj.call(steps_per_call))
    calls += 1
  return calls * steps_per_call * batch_size / (time.perf_counter() - t0)


class CompiledTrainer:
  """The exact compiled training call the pipeline uses, on ``num_models`` runs, ready to time."""

  def __init__(self, config, num_models: int = 1, num_conditions: int = 10, mesh=None, ensemble="vmap"):
    self.config = config
    self.ensemble = ensemble
    self.mesh = mesh or distributed.make_mesh(jax.devices()[:1])
    x, y = synthetic_digits(num_classes=num_conditions + 1)
    config.protocol.name = "leave_one_out"
    runs = protocols.make_runs(config.protocol, num_conditions + 1, 0)[:num_models]
    self.runs = runs
    setup = train_step.make_setup(config, (28, 28, 1), num_conditions, self.mesh.devices.size)
    self.setup = setup
    self.datas = [input_pipeline.RunData.build(r, y, config.train.batch_size, 10_000) for r in runs]
    # Everything the call keeps between calls is placed as the compiled function returns it (replicated over
    # the mesh), so the second call finds the same input shardings and does not compile again.
    replicated = NamedSharding(self.mesh, P())
    self.state, self.stats, self.cond_all, self.x = jax.device_put(
      (
        train_step.stack_states([train_step.init_state(setup, train_step.run_key(r), (28, 28, 1)) for r in runs]),
        dict(
          dataset_size=np.asarray([d.indices.size for d in self.datas], np.float32),
          condition_counts=np.stack([d.condition_counts for d in self.datas]),
        ),
        np.stack([d.cond_all for d in self.datas]),
        x,
      ),
      replicated,
    )
    self.fn = train_step.compile_train_fn(setup, self.mesh, ensemble)
    self.step = 0

  def inputs(self, steps_per_call):
    b = self.config.train.batch_size
    idx = np.stack([[d.batch_indices(self.step + s, b) for s in range(steps_per_call)] for d in self.datas])
    active = np.ones(idx.shape[:2], bool)
    self.step += steps_per_call
    return idx, active

  def call(self, steps_per_call):
    idx, active = self.inputs(steps_per_call)
    self.state, terms = self.fn(self.state, self.x, self.cond_all, idx, self.stats, active)
    return terms

  def flops_per_image(self) -> float:
    """XLA's cost analysis of ONE compiled step (a scanned loop body is counted once), per image."""
    fn = train_step.compile_train_fn(self.setup, self.mesh, self.ensemble)
    idx, active = self.inputs(1)
    compiled = fn.lower(self.state, self.x, self.cond_all, idx, self.stats, active).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) / (idx.shape[0] * idx.shape[2])

  def time_calls(self, steps_per_call, min_seconds=3.0, min_calls=3):
    """Seconds per call after compilation (first call excluded), median of the timed calls."""
    t0 = time.perf_counter()
    jax.block_until_ready(self.call(steps_per_call))
    compile_s = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
      t = time.perf_counter()
      jax.block_until_ready(self.call(steps_per_call))
      times.append(time.perf_counter() - t)
    return float(np.median(times)), compile_s


# ----------------------------------------------------------------------------------------------------------
# The step's own matrix products: the peak a step of these shapes could reach.


@dataclasses.dataclass(frozen=True)
class Product:
  """One matrix product lax.dot_general(lhs, rhs) contracting lhs axis ``dims[0]`` with rhs axis ``dims[1]``, as
  reverse-mode autodiff of a Dense layer y = x W (x (rows, in), W (in, out)) writes it:
  forward x W ((1, 0)), input gradient dX = dY W^T ((1, 1)), weight gradient dW = x^T dY ((0, 0)).
  ``operands`` names the arrays it reads, so that products of one layer share them as the step's do (forward and
  dW read the same x, forward and dX the same W, dX and dW the same dY)."""

  name: str
  lhs: tuple[int, int]
  rhs: tuple[int, int]
  dims: tuple[int, int]
  operands: tuple[str, str]

  @property
  def flops(self) -> int:
    """2 x multiply-adds: 2 x (rows of the result) x (its columns) x (the contracted length)."""
    k = self.lhs[self.dims[0]]
    assert k == self.rhs[self.dims[1]], self
    return 2 * self.lhs[1 - self.dims[0]] * self.rhs[1 - self.dims[1]] * k


def dense_products(prefix: str, kernels, rows: int, *, dw=True, first_dx=True):
  """(forward, backward) products of Dense layers with kernels ``kernels`` [(name, (in, out))] applied to ``rows``
  rows, in the order a step runs them: the forwards first to last, then per layer, last to first, dX (left out for
  the first layer when ``first_dx`` is False: its input is data or a constant, nothing asks for its gradient) and
  dW (left out when ``dw`` is False: the weights are constants)."""
  forward, backward = [], []
  for i, (name, (n_in, n_out)) in enumerate(kernels):
    tag = f"{prefix}/{name}"
    x, w, dy = f"{tag}/x", f"{tag}/W", f"{tag}/dY"
    forward.append(Product(f"{tag}/forward", (rows, n_in), (n_in, n_out), (1, 0), (x, w)))
    layer = []
    if first_dx or i > 0:
      layer.append(Product(f"{tag}/dX", (rows, n_out), (n_in, n_out), (1, 1), (dy, w)))
    if dw:
      layer.append(Product(f"{tag}/dW", (rows, n_in), (rows, n_out), (0, 0), (x, dy)))
    backward = layer + backward
  return forward, backward


def _kernels(params) -> list[tuple[str, tuple[int, int]]]:
  """(layer name, kernel shape) of each Dense layer of a Flax params dict, in creation order."""
  return [(name, tuple(leaf["kernel"].shape)) for name, leaf in params.items() if "kernel" in leaf]


def square_product(n: int = 1024) -> list[Product]:
  """The square probe: one n x n by n x n product (a shape every BLAS runs near its best)."""
  return [Product(f"square{n}", (n, n), (n, n), (1, 0), ("a", "b"))]


def step_products(setup, batch_size: int) -> list[Product]:
  """Every matrix product of one training step of an MLP model (``train_step.ModelSetup``), by hand, in the
  step's order:

  encoder and decoder: each Dense layer's forward, dX and dW on the batch's B rows, less the encoder's first dX
  (its input is the image). A model with a discriminator D (FactorVAE, RF-VAE) adds D's layers twice: in the
  VAE's loss, TC_D(z) is D's forward and dX on B rows (the gradient reaches z; D's weights are constants there);
  in D's own update, on the 2B rows [z, permuted z], forward, dW and dX less the first (z is a constant there)."""
  if setup.model_cfg.arch != "mlp":
    raise ValueError(f"the step-shapes probe is written for model.arch='mlp', not {setup.model_cfg.arch!r}")
  shape = setup.module.image_shape
  x = jnp.zeros((2, *shape), jnp.float32)
  ids = jnp.zeros((2,), jnp.int32)
  c = objectives.one_hot_condition(setup.spec, ids, setup.num_conditions)
  params = jax.eval_shape(lambda: setup.module.init(jax.random.PRNGKey(0), x, c, ids))["params"]
  b = batch_size
  enc_f, enc_b = dense_products("encoder", _kernels(params["encoder"]), b, first_dx=False)
  dec_f, dec_b = dense_products("decoder", _kernels(params["decoder"]), b)
  if setup.disc is None:
    return enc_f + dec_f + dec_b + enc_b
  z = jnp.zeros((2, setup.model_cfg.latent_dim), jnp.float32)
  disc = _kernels(jax.eval_shape(lambda: setup.disc.init(jax.random.PRNGKey(0), z))["params"])
  tc_f, tc_b = dense_products("tc_d", disc, b, dw=False)
  d_f, d_b = dense_products("disc_update", disc, 2 * b, first_dx=False)
  return enc_f + dec_f + tc_f + tc_b + dec_b + enc_b + d_f + d_b


def hlo_matmul_flops(hlo_text: str) -> float:
  """2 x multiply-adds of every matrix product in an optimised HLO module (fusion bodies included): each ``dot``
  whose result is a matrix with no axis of length 1 (matrix-vector sums, e.g. ``fast_ops.sum_per_example``, are
  left out). Each instruction is counted once, so a loop body counts once."""
  shapes = {}
  for m in re.finditer(r"%([\w.\-]+) = f32\[([\d,]*)\]", hlo_text):
    shapes[m.group(1)] = tuple(int(v) for v in m.group(2).split(",") if v)
  total = 0.0
  pattern = r"= f32\[([\d,]*)\]\{[\d,]*\} dot\(%([\w.\-]+), %[\w.\-]+\), lhs_contracting_dims=\{([\d,]*)\}"
  for m in re.finditer(pattern, hlo_text):
    out = tuple(int(v) for v in m.group(1).split(",") if v)
    if len(out) != 2 or min(out) == 1:
      continue
    lhs = shapes[m.group(2)]
    k = int(np.prod([lhs[int(d)] for d in m.group(3).split(",")]))
    total += 2.0 * out[0] * out[1] * k
  return total


class StepMatmuls:
  """The step-shapes probe: one jitted function that runs exactly ``products`` (float32, random operands, shared
  between products as ``Product.operands`` says), one after another in the step's order (each product's operands
  pass through an optimisation barrier with the previous result, so XLA runs them in sequence, as the step's
  chain of layers does, and cannot merge or drop any). Its FLOP rate is the matmul peak a step of these shapes
  can reach on this machine through XLA."""

  def __init__(self, products: list[Product], seed: int = 0):
    self.products = products
    rng = np.random.default_rng(seed)
    shapes: dict[str, tuple[int, int]] = {}
    for p in products:
      for name, shape in zip(p.operands, (p.lhs, p.rhs), strict=True):
        assert shapes.setdefault(name, shape) == shape, (name, shape, shapes[name])
    self.operands = {n: jnp.asarray(rng.standard_normal(s, np.float32)) for n, s in shapes.items()}

    def run(arrays):
      outs = []
      prev = None
      for p in products:
        a, b = arrays[p.operands[0]], arrays[p.operands[1]]
        if prev is not None:
          prev, a, b = jax.lax.optimization_barrier((prev, a, b))
        prev = jax.lax.dot_general(a, b, (((p.dims[0],), (p.dims[1],)), ((), ())))
        outs.append(prev)
      return outs

    self.fn = jax.jit(run)
    self.compiled = self.fn.lower(self.operands).compile()
    jax.block_until_ready(self.fn(self.operands))

  @property
  def flops(self) -> int:
    """Counted by hand: sum of 2 x multiply-adds of the products."""
    return sum(p.flops for p in self.products)

  def xla_flops(self) -> float:
    """XLA's cost analysis of the compiled probe."""
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))

  def seconds_per_call(self, seconds: float = 2.0, min_calls: int = 5) -> float:
    """Median seconds of one call, calls repeated for >= ``seconds``."""
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
      t = time.perf_counter()
      jax.block_until_ready(self.fn(self.operands))
      times.append(time.perf_counter() - t)
    return float(np.median(times))

  def gflops(self, seconds: float = 2.0, min_calls: int = 5) -> float:
    """GFLOP/s over calls repeated for >= ``seconds`` (all the work over all the time, as ``call_rate``)."""
    calls = 0
    t0 = time.perf_counter()
    while calls < min_calls or time.perf_counter() - t0 < seconds:
      jax.block_until_ready(self.fn(self.operands))
      calls += 1
    return calls * self.flops / (time.perf_counter() - t0) / 1e9

  def seconds_by_kind(self, seconds: float = 1.0) -> dict:
    """Seconds of each kind of product (forward, dX, dW), each kind's products alone in a probe of their own."""
    out = {}
    for kind in ("forward", "dX", "dW"):
      sub = [p for p in self.products if p.name.endswith("/" + kind)]
      if sub:
        out[kind] = StepMatmuls(sub).seconds_per_call(seconds)
    return out


def machine() -> dict:
  return {
    "cpu_model": cpu_model(),
    "backend": jax.default_backend(),
    "devices": jax.device_count(),
    "cpu_count": os.cpu_count(),
    "platform": platform.platform(),
    "jax": jax.__version__,
    "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }


def write_json(path: str | None, obj: dict, echo: bool = True):
  """Writes ``obj`` to ``path`` (if given) and prints it (if ``echo``)."""
  text = json.dumps(obj, indent=1, sort_keys=True)
  if echo:
    print(text)
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
      f.write(text + "\n")
