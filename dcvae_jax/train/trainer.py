"""The host training loop: runs of a protocol trained together in one compiled program, with checkpoints
every ``train.checkpoint_every_steps``, on SIGTERM / SIGINT and at the end, JSON-lines metrics, TensorBoard
scalars and a progress bar. The compiled program itself is ``train_step``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dcvae_jax import distributed
from dcvae_jax.data import input_pipeline
from dcvae_jax.data.protocols import Run
from dcvae_jax.errors import Interrupted, NonFiniteError
from dcvae_jax.log import log as _log
from dcvae_jax.train import checkpoints, train_step


class StopFlag:
  """SIGTERM / SIGINT become a stop that the loop checks between compiled calls, at the same call on every
  process.

  One process: a signal handler sets the flag. Several processes (jax.distributed with its preemption service):
  SIGTERM is left to JAX's preemption notifier, and Orbax's ``reached_preemption`` tells every process at the
  same call that one of them was told to stop, so all save the same step (a process that stopped alone would
  leave the others waiting in the save's collectives); SIGINT is turned into a SIGTERM to this process to take
  the same way.
  """

  def __init__(self, manager=None):
    self.signum = None
    self._old = {}
    self._manager = manager
    self._calls = 0
    self._agree = manager is not None and jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)

  def __enter__(self):
    for sig in (signal.SIGINT,) if self._agree else (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self._agree:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier
    else:
      self.signum = signum

  def should_stop(self) -> bool:
    """Every process calls this once per compiled call; True on all of them at the same call."""
    if self._agree:
      self._calls += 1  # the sync protocol wants a counter that grows by one per call
      if self._manager.reached_preemption(self._calls):
        self.signum = signal.SIGTERM
    return self.signum is not None

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _describe_nonfinite(terms_host, m, s):
  bad = [k for k, v in terms_host.items() if k not in ("finite", "skipped") and not np.isfinite(v[m, s])]
  return ", ".join(bad) if bad else "gradients"


_COMPILED: dict = {}


def _compiled(config, image_shape, num_conditions: int, mesh: Mesh, ensemble: str, total_steps: int = 0):
  """(ModelSetup, jitted train fn), shared by every group of runs with the same settings: a protocol trained in
  several programs (train.runs_per_program) compiles once per group size, not once per group."""
  key = (
    config.model.to_json(sort_keys=True),
    config.train.to_json(sort_keys=True),
    bool(config.data.binarize),
    image_shape,
    num_conditions,
    tuple(d.id for d in mesh.devices.flat),
    ensemble,
    total_steps,
  )
  if key not in _COMPILED:
    if len(_COMPILED) >= 8:
      _COMPILED.pop(next(iter(_COMPILED)))
    setup = train_step.make_setup(config, image_shape, num_conditions, mesh.devices.size, total_steps=total_steps)
    _COMPILED[key] = (setup, train_step.compile_train_fn(setup, mesh, ensemble))
  return _COMPILED[key]


def train_runs(
  config,
  x_train: np.ndarray,
  y_train: np.ndarray,
  runs: Sequence[Run],
  ckpt_dir: str,
  *,
  image_shape,
  num_conditions: int,
  log_file=None,
  mesh: Mesh | None = None,
  log=_log,
  tensorboard=None,
):
  """Trains ``runs`` in one program (train.ensemble: vmap or lax.map over runs) and returns (stacked TrainState, train seconds, step count).

  Resumes from the newest good checkpoint in ``ckpt_dir``; saves every ``train.checkpoint_every_steps``,
  on SIGTERM/SIGINT, and at the end. Metrics go to ``log_file`` (JSON lines) and ``tensorboard``
  (a summaries.TensorBoardWriter), either may be None.
  """
  mesh = mesh or distributed.make_mesh()
  batch_size = int(config.train.batch_size)
  steps_per_call = max(int(config.train.steps_per_call), 1)
  ensemble = train_step.resolve_ensemble(config.train.ensemble)
  sampling = input_pipeline.sampling_options(config)
  datas = [input_pipeline.RunData.build(r, y_train, batch_size, config.train.num_epochs, **sampling) for r in runs]
  max_steps = max(d.total_steps for d in datas)
  # Only a schedule needs the step count (so a constant rate shares one program across group sizes).
  schedule_steps = 0 if config.train.lr_schedule == "constant" else max_steps
  setup, fn = _compiled(config, tuple(image_shape), num_conditions, mesh, ensemble, schedule_steps)

  replicated = NamedSharding(mesh, P())
  idx_sharding = NamedSharding(mesh, P(None, None, "data"))
  state = distributed.replicated(
    train_step.stack_states([train_step.init_state(setup, train_step.run_key(r), image_shape) for r in runs]),
    replicated,
  )
  stats = dict(
    dataset_size=np.asarray([d.indices.size for d in datas], np.float32),
    condition_counts=np.stack([d.condition_counts for d in datas]),
  )
  cond_all = np.stack([d.cond_all for d in datas])
  x_dev, cond_all, stats = distributed.replicated((x_train, cond_all, stats), replicated)
  primary = distributed.is_primary()

  with checkpoints.checkpoint_manager(ckpt_dir, config.train.keep_checkpoints) as manager:
    restored, _, meta = checkpoints.restore_latest(manager, state, log=log, with_meta=True)
    if restored is not None:
      state = restored
    start = int(np.max(distributed.to_host(state.step)))
    prior_seconds = float(meta.get("train_seconds", 0.0)) if start else 0.0
    if start >= max_steps:
      return state, prior_seconds, start
    if start:
      log(f"resuming {len(runs)} run(s) from step {start} of {max_steps}")

    progress = _progress(config, start, max_steps, len(runs)) if primary else None
    every = max(int(config.train.checkpoint_every_steps), 1)
    log_every = max(int(config.train.log_every_steps), 1)
    t0 = time.perf_counter()
    step = start
    last_saved = start

    def save_now(at):  # async: the manager's exit waits for the last save
      seconds = prior_seconds + time.perf_counter() - t0
      checkpoints.save(manager, at, state, {"train_seconds": seconds})
      return seconds

    seconds = prior_seconds

    with _ending_line_on_error(progress), StopFlag(manager) as stop:
      while step < max_steps:
        steps = np.arange(step, step + steps_per_call)
        idx = np.zeros((len(runs), steps_per_call, batch_size), np.int32)
        active = np.zeros((len(runs), steps_per_call), bool)
        for m, d in enumerate(datas):
          for s_i, s in enumerate(steps):
            if s < d.total_steps:
              idx[m, s_i] = d.batch_indices(int(s), batch_size)
              active[m, s_i] = True
        new_state, terms = fn(
          state,
          x_dev,
          cond_all,
          distributed.batch_sharded(idx, idx_sharding, axis=2),
          stats,
          distributed.replicated(active, replicated),
        )
        terms_host = distributed.to_host(terms)
        bad = active & ~terms_host["finite"]
        if bad.any() and not setup.skip_nonfinite:
          m, s_i = np.argwhere(bad)[0]
          raise NonFiniteError(
            f"non-finite {_describe_nonfinite(terms_host, m, s_i)} at step {int(steps[s_i])} of run "
            f"{runs[m].name}; the last good checkpoint (step {last_saved}) is kept in {ckpt_dir}"
          )
        state = new_state
        _write_metrics(log_file, runs, steps, active, terms_host, log_every, tensorboard)
        n_done = int(min(step + steps_per_call, max_steps)) - step
        step += n_done
        if progress is not None:
          progress.update(n_done)
          progress.set_postfix(loss=float(np.mean(terms_host["loss"][:, 0])))
        stopping = stop.should_stop()
        if step >= max_steps or step // every > last_saved // every or stopping:
          seconds = save_now(step)
          last_saved = step
        if stopping:
          raise Interrupted(f"stopped by signal {stop.signum} at step {step}; checkpoint saved in {ckpt_dir}")
    if progress is not None:
      progress.close()
    return state, seconds, step  # the time the final checkpoint records: a rescore reports the same


@contextlib.contextmanager
def _ending_line_on_error(progress):
  """On an exception (a signal's Interrupted, a non-finite loss), keep the progress bar where it stopped and end
  its line, so that the error message printed next starts on a line of its own."""
  try:
    yield
  except BaseException:
    if progress is not None:
      progress.leave = True
      progress.close()
    raise


def _progress(config, start, total, n_runs):
  if not config.train.progress:
    return None
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=start, desc=f"train {n_runs} run(s)", unit="step", leave=False)


def _write_metrics(log_file, runs, steps, active, terms_host, log_every, tensorboard=None):
  """Every log_every-th step's terms (and each run's last step): a JSON line each, and TensorBoard scalars."""
  if log_file is None and tensorboard is None:
    return
  keys = [k for k in terms_host if k != "finite"]
  for s_i, s in enumerate(steps):
    for m, run in enumerate(runs):
      last = s_i + 1 == len(steps) or not active[m, s_i + 1]
      if active[m, s_i] and ((s + 1) % log_every == 0 or last):
        rec = {"step": int(s) + 1, "run": run.name}
        values = {k: float(terms_host[k][m, s_i]) for k in keys}
        if log_file is not None:
          log_file.write(json.dumps({**rec, **values}) + "\n")
        if tensorboard is not None:
          tensorboard.scalars(run.name, int(s) + 1, values)
  if log_file is not None:
    log_file.flush()
  if tensorboard is not None:
    tensorboard.flush()
