"""Periodic actions of the host loop, in the shape of clu's ``periodic_actions``: objects called as
``action(step, call)`` after every compiled call, each deciding for itself whether it acts.

A compiled call runs ``train.steps_per_call`` steps, so the host sees the step count jump by that much: an
action every N steps fires after the call whose steps reach or cross a multiple of N (``step // N`` grew), and
after the last step. clu itself is not a dependency: these are the few lines of its periodic_actions that the
loop needs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dcvae_jax.errors import Interrupted


@dataclasses.dataclass(frozen=True)
class Call:
  """What one compiled call did: the steps it ran (``steps`` (S,), from 0), which of them each run took
  (``active`` (M, S); a finished run pads), the loss terms of every run and step (name -> (M, S)), and the
  state it left (stacked over runs)."""

  steps: np.ndarray
  active: np.ndarray
  terms: dict
  state: Any = None


class PeriodicAction:
  """``callback(step, call)`` after the call that reaches or crosses a multiple of ``every_steps``, and after
  ``last_step`` (None: no last step). ``start``: the step the loop starts from (a resumed run's)."""

  def __init__(self, every_steps: int, callback: Callable[[int, Call], object], *, start: int = 0, last_step=None):
    self.every = max(int(every_steps), 1)
    self.callback = callback
    self.last_step = last_step
    self._previous = int(start)

  def due(self, step: int) -> bool:
    """Whether the call that ended at ``step`` fires the action (and the next call counts from here)."""
    previous, self._previous = self._previous, int(step)
    return step // self.every > previous // self.every or (self.last_step is not None and step >= self.last_step)

  def __call__(self, step: int, call: Call) -> bool:
    if not self.due(step):
      return False
    self.callback(step, call)
    return True


class LogMetrics:
  """The loss terms of every run at every ``every_steps``-th step and at the last step each run takes in a call
  (so each run's last step, and the end of every call): a JSON line each in ``log_file`` and TensorBoard scalars
  in ``tensorboard`` (either may be None)."""

  def __init__(self, every_steps: int, runs: Sequence, log_file=None, tensorboard=None):
    self.every = max(int(every_steps), 1)
    self.names = [r.name for r in runs]
    self.log_file, self.tensorboard = log_file, tensorboard

  def __call__(self, step: int, call: Call) -> None:
    if self.log_file is None and self.tensorboard is None:
      return
    keys = [k for k in call.terms if k != "finite"]
    n = len(call.steps)
    for s_i, s in enumerate(call.steps):
      for m, name in enumerate(self.names):
        last = s_i + 1 == n or not call.active[m, s_i + 1]
        if call.active[m, s_i] and ((s + 1) % self.every == 0 or last):
          values = {k: float(call.terms[k][m, s_i]) for k in keys}
          if self.log_file is not None:
            self.log_file.write(json.dumps({"step": int(s) + 1, "run": name, **values}) + "\n")
          if self.tensorboard is not None:
            self.tensorboard.scalars(name, int(s) + 1, values)
    if self.log_file is not None:
      self.log_file.flush()
    if self.tensorboard is not None:
      self.tensorboard.flush()


class ReportProgress:
  """A progress bar (None: none) moved to ``step`` after every call, its postfix the first step's mean loss
  over runs."""

  def __init__(self, bar, start: int = 0):
    self.bar = bar
    self._previous = int(start)

  def __call__(self, step: int, call: Call) -> None:
    if self.bar is None:
      return
    self.bar.update(step - self._previous)
    self._previous = step
    self.bar.set_postfix(loss=float(np.mean(call.terms["loss"][:, 0])))


class StopOnSignal:
  """After a SIGTERM / SIGINT (``stop``: a trainer.StopFlag, asked once per call on every process), run
  ``checkpoint(step, call)`` and raise Interrupted."""

  def __init__(self, stop, checkpoint: Callable[[int, Call], object], where: str):
    self.stop, self.checkpoint, self.where = stop, checkpoint, where

  def __call__(self, step: int, call: Call) -> None:
    if self.stop.should_stop():
      self.checkpoint(step, call)
      raise Interrupted(f"stopped by signal {self.stop.signum} at step {step}; checkpoint saved in {self.where}")
