"""The host loop's periodic actions (dcvae_jax/train/periodic.py): known answers for which steps fire, for any
train.steps_per_call and a resumed start, and one save per step when a signal meets a periodic checkpoint."""

import io
import json

import numpy as np
import pytest

from dcvae_jax.errors import Interrupted
from dcvae_jax.train import periodic, trainer


def _loop(total: int, per_call: int, start: int = 0):
  """The host loop's step count after each call: min(start + k C, S) for k = 1, 2, ..."""
  step = start
  while step < total:
    step = min(step + per_call, total)
    yield step


def _fired(every: int, total: int, per_call: int, start: int = 0) -> list:
  got: list = []
  action = periodic.PeriodicAction(every, lambda step, call: got.append(step), start=start, last_step=total)
  for step in _loop(total, per_call, start):
    action(step, None)
  return got


@pytest.mark.parametrize(
  "every, total, per_call, start, want",
  [
    (5, 12, 1, 0, [5, 10, 12]),  # every multiple, then the last step
    (5, 12, 3, 0, [6, 12]),  # calls end at 3, 6, 9, 12: 6 crosses 5, 12 crosses 10 and is the last
    (5, 12, 4, 0, [8, 12]),
    (5, 12, 5, 0, [5, 10, 12]),
    (5, 10, 5, 0, [5, 10]),  # the last step is a multiple: it fires once
    (5, 12, 20, 0, [12]),  # one call runs everything
    (5, 12, 2, 7, [11, 12]),  # resumed at 7: calls end at 9, 11, 12
    (1, 4, 1, 0, [1, 2, 3, 4]),
    (100, 12, 1, 0, [12]),  # never a multiple: only the last step
  ],
)
def test_periodic_action_fires_after_the_call_that_reaches_or_crosses_a_multiple_and_at_the_last_step(
  every, total, per_call, start, want
):
  assert _fired(every, total, per_call, start) == want


def test_periodic_action_without_a_last_step_fires_only_on_multiples():
  got: list = []
  action = periodic.PeriodicAction(4, lambda step, call: got.append(step))
  for step in _loop(10, 3):
    action(step, None)
  assert got == [6, 9]  # 6 crosses 4, 9 crosses 8; 10 crosses nothing


def _call(steps, lengths, loss=None):
  steps = np.asarray(steps)
  active = np.stack([steps < n for n in lengths])
  loss = np.tile((steps + 1.0)[None], (len(lengths), 1)) if loss is None else loss
  return periodic.Call(steps, active, {"loss": loss, "finite": np.ones_like(active)})


class _Run:
  def __init__(self, name):
    self.name = name


@pytest.mark.parametrize(
  "per_call, want_a, want_b",
  [
    (3, [3, 6, 7], [3, 5]),  # calls of steps 1-3, 4-6, 7-9: multiples of 3, and each run's last step
    (7, [3, 6, 7], [3, 5]),
    (2, [2, 3, 4, 6, 7], [2, 3, 4, 5]),  # and the end of every call (2, 4, 6)
  ],
)
def test_log_metrics_logs_every_nth_step_each_runs_last_and_each_calls_last(per_call, want_a, want_b):
  """Runs of 7 and 5 steps, every 3rd step (steps counted from 1, as the JSON lines count them)."""
  out = io.StringIO()
  log = periodic.LogMetrics(3, [_Run("a"), _Run("b")], log_file=out)
  previous = 0
  for step in _loop(7, per_call):
    log(step, _call(np.arange(previous, previous + per_call), (7, 5)))  # a call runs per_call steps, padded
    previous = step
  lines = [json.loads(line) for line in out.getvalue().splitlines()]
  assert [r["step"] for r in lines if r["run"] == "a"] == want_a
  assert [r["step"] for r in lines if r["run"] == "b"] == want_b
  assert all(r["loss"] == r["step"] for r in lines) and all("finite" not in r for r in lines)


def test_report_progress_moves_the_bar_by_the_steps_each_call_ran():
  class Bar:
    def __init__(self):
      self.n, self.postfix = 0, None

    def update(self, n):
      self.n += n

    def set_postfix(self, **kw):
      self.postfix = kw

  bar = Bar()
  report = periodic.ReportProgress(bar, start=2)
  for step in _loop(9, 3, start=2):
    report(step, _call(np.arange(step - 3, step), (9,)))
  assert bar.n == 7 and bar.postfix == {"loss": 7.0}  # the first step of the last call (steps 6, 7, 8)


class _Stop:
  def __init__(self, at_call: int):
    self.at_call, self.calls, self.signum = at_call, 0, None

  def should_stop(self):
    self.calls += 1
    if self.calls == self.at_call:
      self.signum = 15
    return self.signum is not None


def test_a_signal_at_a_periodic_checkpoint_saves_that_step_once(monkeypatch):
  saved: list = []
  monkeypatch.setattr(trainer.checkpoints, "save", lambda manager, step, state, meta: saved.append(step))
  saver = trainer._Saver(manager=None, prior_seconds=0.0, start=0)
  actions = [
    periodic.PeriodicAction(4, saver, last_step=20),
    periodic.StopOnSignal(_Stop(at_call=4), saver, "ckpt"),  # the 4th call ends at step 8, a multiple of 4
  ]
  with pytest.raises(Interrupted, match="at step 8; checkpoint saved in ckpt"):
    for step in _loop(20, 2):
      for action in actions:
        action(step, periodic.Call(np.arange(step - 2, step), np.ones((1, 2), bool), {}))
  assert saved == [4, 8] and saver.last_step == 8


def test_a_signal_between_checkpoints_saves_where_it_stopped(monkeypatch):
  saved: list = []
  monkeypatch.setattr(trainer.checkpoints, "save", lambda manager, step, state, meta: saved.append(step))
  saver = trainer._Saver(manager=None, prior_seconds=0.0, start=0)
  actions = [periodic.PeriodicAction(4, saver, last_step=20), periodic.StopOnSignal(_Stop(3), saver, "ckpt")]
  with pytest.raises(Interrupted, match="at step 6;"):
    for step in _loop(20, 2):
      for action in actions:
        action(step, periodic.Call(np.arange(step - 2, step), np.ones((1, 2), bool), {}))
  assert saved == [4, 6]
