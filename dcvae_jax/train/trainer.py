"""The host training loop: runs of a protocol trained together in one compiled program. After every compiled
call the loop hands the step to its periodic actions (train/periodic.py): JSON-lines metrics and TensorBoard
scalars, a progress bar, a checkpoint every ``train.checkpoint_every_steps`` and at the end, and a checkpoint
and stop on SIGTERM / SIGINT. The compiled program itself is ``train_step``."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dcvae_jax import distributed
from dcvae_jax.data import input_pipeline
from dcvae_jax.data.protocols import Run
from dcvae_jax.errors import NonFiniteError
from dcvae_jax.log import log as _log
from dcvae_jax.train import checkpoints, periodic, train_step


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
    saver = _Saver(manager, prior_seconds, start)

    def one_call(state, steps) -> periodic.Call:
      """Steps ``steps`` of every run in one compiled call; a non-finite update stops here (train.on_nonfinite)."""
      idx, active = _call_batches(datas, steps, batch_size)
      new_state, terms = fn(
        state,
        x_dev,
        cond_all,
        distributed.batch_sharded(idx, idx_sharding, axis=2),
        stats,
        distributed.replicated(active, replicated),
      )
      terms = distributed.to_host(terms)
      bad = active & ~terms["finite"]
      if bad.any() and not setup.skip_nonfinite:
        m, s_i = np.argwhere(bad)[0]
        raise NonFiniteError(
          f"non-finite {_describe_nonfinite(terms, m, s_i)} at step {int(steps[s_i])} of run {runs[m].name}; "
          f"the last good checkpoint (step {saver.last_step}) is kept in {ckpt_dir}"
        )
      return periodic.Call(steps, active, terms, new_state)

    step = start
    with _ending_line_on_error(progress), StopFlag(manager) as stop:
      actions: list[Callable[[int, periodic.Call], object]] = [
        periodic.LogMetrics(config.train.log_every_steps, runs, log_file, tensorboard),
        periodic.ReportProgress(progress, start),
        periodic.PeriodicAction(config.train.checkpoint_every_steps, saver, start=start, last_step=max_steps),
        periodic.StopOnSignal(stop, saver, ckpt_dir),  # saves (unless saved at this step) and raises Interrupted
      ]
      while step < max_steps:
        call = one_call(state, np.arange(step, step + steps_per_call))
        state, step = call.state, min(step + steps_per_call, max_steps)
        for action in actions:
          action(step, call)
    if progress is not None:
      progress.close()
    return state, saver.seconds, step  # the time the final checkpoint records: a rescore reports the same


def _call_batches(datas, steps: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """The training-image indices (M, S, B) of every run's steps ``steps`` (S,), and which steps each run takes
  (M, S): a run past its last step pads with index 0, inactive."""
  idx = np.zeros((len(datas), len(steps), batch_size), np.int32)
  active = np.zeros((len(datas), len(steps)), bool)
  for m, d in enumerate(datas):
    for s_i, s in enumerate(steps):
      if s < d.total_steps:
        idx[m, s_i] = d.batch_indices(int(s), batch_size)
        active[m, s_i] = True
  return idx, active


class _Saver:
  """Saves the loop's state at a step (once: the periodic save and a signal's at the same step are one), with
  the train seconds so far (those of earlier invocations included) in the checkpoint's metadata. Saves are
  async; the manager's exit waits for the last one."""

  def __init__(self, manager, prior_seconds: float, start: int):
    self.manager = manager
    self.prior_seconds = self.seconds = prior_seconds
    self.last_step = start
    self.t0 = time.perf_counter()

  def __call__(self, step: int, call: periodic.Call) -> None:
    if step == self.last_step:
      return
    self.seconds = self.prior_seconds + time.perf_counter() - self.t0
    checkpoints.save(self.manager, step, call.state, {"train_seconds": self.seconds})
    self.last_step = step


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
