"""The evaluator plug-in: what the experiment hands every evaluator, and what each hands back.

An evaluator is a class ``Evaluator(job)`` in its own module, made once per experiment and named in
``eval.evaluators`` (evaluators/registry.py). After each group of runs is trained, the experiment calls
``run(group)`` of every chosen evaluator in registry order; each returns its :class:`Part` of every run's results
(the entries of ``runs/<run>.json`` and the arrays of ``scores/<run>.npz``), and sees the parts of the
evaluators before it in ``group``. Once every group is done, ``summarize`` gives its part of results.json. The
experiment writes the files; the trainer knows no evaluator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from dcvae_jax.log import log as _log


def run_fields(run) -> dict:
  """Who a run is: the first entries of its results, whichever evaluators run."""
  return {
    "run": run.name,
    "label": run.label,
    "seed": run.seed,
    "normal": list(run.normal),
    "anomalous": list(run.anomalous),
  }


@dataclasses.dataclass(frozen=True)
class Job:
  """What the evaluators of one experiment share: the config, the data (validation split carved out), the
  device mesh, the workdir and whether this process writes it (process 0 does; the others compute with it),
  the log, the TensorBoard writer (None without train.tensorboard, or off process 0), and the identity that
  runs/<run>.json files are written with (workdir.write_run), so that a rewritten run stays reusable."""

  config: Any
  data: Any  # data.datasets.Dataset
  mesh: Any
  workdir: str
  write: bool = True
  log: Callable = _log
  tensorboard: Any = None
  identity: str | None = None  # the results identity runs/<run>.json are written with (None: none, evaluate again)


@dataclasses.dataclass
class Group:
  """A group of runs just trained together in one program, and what the evaluators found so far.

  ``state``: their stacked TrainState (``params``, ``step``, ... with a leading run axis); ``setup``: the model
  setup of that program; ``progress``: the group's scoring.ScoreProgress (evaluators name their stages on it
  and count the steps they announced in ``Evaluator.steps``); ``results`` / ``arrays``: per run, the entries of
  its runs/<run>.json and scores/<run>.npz from the evaluators that ran before."""

  runs: Sequence
  state: Any
  setup: Any
  progress: Any
  results: list[dict]
  arrays: list[dict]


@dataclasses.dataclass
class Part:
  """One evaluator's part of every run's results: ``results[m]`` joins run m's runs/<run>.json, ``arrays[m]``
  its scores/<run>.npz (an empty dict: nothing)."""

  results: list[dict]
  arrays: list[dict]

  @classmethod
  def empty(cls, n: int) -> Part:
    return cls([{} for _ in range(n)], [{} for _ in range(n)])


class Evaluator:
  """The interface; a module's ``Evaluator`` overrides ``run`` and what else it needs."""

  def __init__(self, job: Job):
    self.job = job

  def describe(self) -> str:
    """What it computes, for the log line that starts a group's evaluation ("": nothing to say)."""
    return ""

  def steps(self, runs: Sequence) -> int:
    """How many progress steps ``run`` counts for a group of ``runs``."""
    return 0

  def run(self, group: Group) -> Part:
    raise NotImplementedError

  def complete(self, result: dict) -> bool:
    """Whether a run's finished results (runs/<run>.json under the same identity) hold this evaluator's part:
    False evaluates the run's group again."""
    return True

  def summarize(self, per_run: list[dict], results: dict) -> dict:
    """Its part of results.json from every run's results (``results``: the summary so far, from the
    experiment and the evaluators before it)."""
    return {}
