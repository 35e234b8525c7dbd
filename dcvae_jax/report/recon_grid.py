"""The reconstruction grid written to TensorBoard for every scored run: normal and anomalous test images over
their reconstructions, each under the condition the detector pictures it with."""

from __future__ import annotations

import numpy as np

from dcvae_jax.data import input_pipeline, protocols
from dcvae_jax.evaluators.scoring import chosen_condition
from dcvae_jax.report.style import _montage


def reconstruction_grid(inputs: np.ndarray, recons: np.ndarray, is_anomaly: np.ndarray, per_group: int = 8):
  """One grey image: up to ``per_group`` normal inputs (row 1) over their reconstructions (row 2), then as many
  anomalous ones (rows 3 and 4), 1-pixel white lines between the tiles; a group with fewer images leaves its
  cells white. inputs, recons: (N, H, W) in [0, 1]; is_anomaly: (N,)."""
  inputs, recons = np.asarray(inputs, np.float32), np.asarray(recons, np.float32)
  is_anomaly = np.asarray(is_anomaly, bool)
  groups = [np.flatnonzero(~is_anomaly)[:per_group], np.flatnonzero(is_anomaly)[:per_group]]
  cols = max(1, *(len(g) for g in groups))
  tiles = np.ones((4, cols, *inputs.shape[1:]), np.float32)
  for r, idx in enumerate(groups):
    tiles[2 * r, : len(idx)] = inputs[idx]
    tiles[2 * r + 1, : len(idx)] = recons[idx]
  return _montage(tiles)


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
