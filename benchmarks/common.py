"""Shared pieces of the benchmarks: a synthetic training set, a compiled train call, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from dcvae_jax import protocols, train
from dcvae_jax.config import base_config


def bench_config(model: str, batch_size: int, *, hidden=(512, 256), latent_dim=10, estimator="mss",
                 arch="mlp", steps_per_call=50):
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
    self.mesh = mesh or train.make_mesh(jax.devices()[:1])
    x, y = synthetic_digits(num_classes=num_conditions + 1)
    config.protocol.name = "leave_one_out"
    runs = protocols.make_runs(config.protocol, num_conditions + 1, 0)[:num_models]
    self.runs = runs
    setup = train.make_setup(config, (28, 28, 1), num_conditions, self.mesh.devices.size)
    self.setup = setup
    self.datas = [train.RunData.build(r, y, config.train.batch_size, 10_000) for r in runs]
    self.state = train.stack_states([train.init_state(setup, train.run_key(r), (28, 28, 1)) for r in runs])
    self.stats = dict(dataset_size=jnp.asarray([d.indices.size for d in self.datas], jnp.float32),
                      condition_counts=jnp.asarray(np.stack([d.condition_counts for d in self.datas])))
    self.cond_all = jnp.asarray(np.stack([d.cond_all for d in self.datas]))
    self.x = jnp.asarray(x)
    self.fn = train.compile_train_fn(setup, self.mesh, ensemble)
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
    fn = train.compile_train_fn(self.setup, self.mesh, self.ensemble)
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


def matmul_peak_gflops(n=1024, seconds=2.0) -> float:
  """Measured float32 matmul throughput of this machine through XLA (the 'peak' we compare against)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  best = 0.0
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    t = time.perf_counter()
    jax.block_until_ready(f(a))
    best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
  return best


def machine() -> dict:
  return {"backend": jax.default_backend(), "devices": jax.device_count(), "cpu_count": os.cpu_count(),
          "platform": platform.platform(), "jax": jax.__version__,
          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_json(path: str | None, obj: dict):
  text = json.dumps(obj, indent=1, sort_keys=True)
  print(text)
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
      f.write(text + "\n")
