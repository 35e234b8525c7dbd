"""The evaluators by name (``eval.evaluators``), in the order they run: each may read what the ones before it
found (evaluators/base.py). options.EVALUATORS lists the same names for validation."""

from __future__ import annotations

from collections.abc import Sequence

from dcvae_jax.evaluators import base, detection, latents, tensorboard
from dcvae_jax.validation import check_evaluators

EVALUATORS: dict[str, type[base.Evaluator]] = {
  "detection": detection.Evaluator,  # anomaly scores, detection metrics, thresholds; scores/, scoring/
  "latents": latents.Evaluator,  # codes of the test set and their disentanglement
  "tensorboard": tensorboard.Evaluator,  # detection metrics and reconstruction grids in TensorBoard
}


def get(names: Sequence[str]) -> list[type[base.Evaluator]]:
  """The evaluator classes named in ``names``, in registry order; ConfigError for an unknown name, or for one
  without the evaluators it reads (validation.check_evaluators)."""
  check_evaluators(names)
  return [cls for name, cls in EVALUATORS.items() if name in names]


def make(job: base.Job) -> list[base.Evaluator]:
  """The evaluators job.config.eval.evaluators names, made for ``job``, in registry order."""
  return [cls(job) for cls in get(tuple(job.config.eval.evaluators))]
