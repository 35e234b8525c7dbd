"""The ``tensorboard`` evaluator: with train.tensorboard=True, every scored run's detection metrics as
TensorBoard scalars and its reconstruction grid, at the run's last training step beside its training curves;
at the end the means over runs (the results.json summary) under the run name ``mean``. Without
train.tensorboard it does nothing. It reads the ``detection`` evaluator's results and test scores, so it comes
after it (validation.py requires both)."""

from __future__ import annotations

import os

import numpy as np

from dcvae_jax import distributed
from dcvae_jax.data import input_pipeline, protocols
from dcvae_jax.evaluators import base
from dcvae_jax.evaluators.recon_grid import reconstruction_grid
from dcvae_jax.evaluators.scoring import DEVICE_SCORES, chosen_condition
from dcvae_jax.models import inference
from dcvae_jax.train import train_step
from dcvae_jax.train.tensorboard import TensorBoardWriter


def run_reconstructions(model, params, run, x_test, y_test, recon_per_condition, *, score_condition: str, per_group=8):
  """:func:`reconstruction_grid` of the first ``per_group`` normal and anomalous test images of ``run``, as the
  model sees them (binarised or dequantised) over their reconstructions D(mu(x)), each under the condition the
  detector would picture it with (scoring.chosen_condition of its recon scores). model: an ``inference.Model``;
  params: the run's parameters; recon_per_condition: (N_test, C') recon scores of the run."""
  rows = np.flatnonzero(np.isin(y_test, run.normal + run.anomalous))
  anomalous = np.isin(y_test[rows], run.anomalous)
  pick = np.concatenate([rows[~anomalous][:per_group], rows[anomalous][:per_group]])
  cond = chosen_condition(
    np.asarray(recon_per_condition)[pick],
    score_condition,
    conditional=model.conditional,
    cond_of_example=protocols.condition_ids(run, y_test[pick], missing=-1),
  )
  x = np.asarray(x_test)[pick]
  shape = model.setup.module.image_shape
  inputs = np.asarray(input_pipeline.preprocess(x, model.setup.binarize, model.setup.dequantize, image_shape=shape))
  recons = np.asarray(model.reconstruct(params, x, cond)).reshape(inputs.shape)
  inputs, recons = inputs.mean(-1), recons.mean(-1)  # one grey tile per image (colour: the channels' mean)
  return reconstruction_grid(inputs, recons, np.isin(y_test[pick], run.anomalous), per_group)


def _condition_scores(arrays: dict) -> np.ndarray:
  """The per-condition test scores (N_test, C') that choose each pictured image's condition: recon's, or the
  first device score computed when eval.scores leaves recon out."""
  name = next(n for n in ("recon", *DEVICE_SCORES) if n in arrays)
  return arrays[name]


class Evaluator(base.Evaluator):
  """Evaluation summaries in TensorBoard (see the module docstring)."""

  def __init__(self, job: base.Job):
    super().__init__(job)
    self.on = bool(job.config.train.tensorboard) and job.data.x_test.shape[0] > 0
    self.last_step = 0  # the newest training step written now (0: none)

  def run(self, group: base.Group) -> base.Part:
    n, ds = len(group.runs), self.job.data
    if not self.on:
      return base.Part.empty(n)
    group.progress.stage("reconstructions")
    model = inference.Model(group.setup, mesh=self.job.mesh)
    steps = distributed.to_host(group.state.step)
    tb = self.job.tensorboard
    for m, run in enumerate(group.runs):  # every process computes (the mesh spans them all); process 0 writes
      grid = run_reconstructions(
        model,
        distributed.to_host(train_step.unstack(group.state.params, m)),  # host arrays: fine on any process
        run,
        ds.x_test,
        ds.y_test,
        _condition_scores(group.arrays[m]),
        score_condition=self.job.config.protocol.score_condition,
      )
      if tb is not None:
        step = int(steps[m])
        self.last_step = max(self.last_step, step)
        tb.evaluation(run.name, step, group.results[m])
        tb.image(run.name, step, "reconstructions", grid)
        tb.flush(force=True)
    return base.Part.empty(n)

  def summarize(self, per_run: list[dict], results: dict) -> dict:
    """The means over runs beside each run's scalars, at the newest step scored now."""
    if self.job.write and self.last_step:
      with TensorBoardWriter(os.path.join(self.job.workdir, "tensorboard")) as tb:
        tb.evaluation("mean", self.last_step, results)
    return {}
