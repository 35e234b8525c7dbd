"""A finished workdir, reloaded for scoring, figures and reports: its config, data, runs and every run's trained
parameters from the newest good checkpoints. It needs the train step's state structure and the checkpoints, not
the training loop."""

from __future__ import annotations

import os

from dcvae_jax import distributed
from dcvae_jax import workdir as workdir_lib
from dcvae_jax.config import load_saved
from dcvae_jax.data import datasets as data_lib
from dcvae_jax.data.prepare import load_data, make_runs, prepare_data  # noqa: F401 (load_data re-exported)
from dcvae_jax.errors import WorkdirError
from dcvae_jax.train import checkpoints, train_step


def run_groups(runs, size: int):
  """The runs in groups of ``size`` (train.runs_per_program; 0: one group of all), each trained together in one
  compiled program."""
  size = len(runs) if size <= 0 else size
  return [runs[i : i + size] for i in range(0, len(runs), size)]


def group_name(group) -> str:
  """A group's checkpoint folder: its run's name, or "first--last"."""
  return group[0].name if len(group) == 1 else f"{group[0].name}--{group[-1].name}"


class Trained:
  """A finished workdir, reloaded: config, data, runs, the model setup and each run's parameters.

  ``params[run.name]`` is one run's VAE params (a pytree without the model axis); ``encode``/``decode``
  helpers for figures: ``inference.Model``.
  """

  def __init__(self, config, dataset, runs, setup, params, mesh):
    self.config, self.dataset, self.runs, self.setup, self.params, self.mesh = (
      config,
      dataset,
      runs,
      setup,
      params,
      mesh,
    )


def load_config(workdir: str):
  """The workdir's config.json as a full config (``config.from_saved``: also a workdir of an earlier layout)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{workdir} has no config.json: not a trained workdir")
  return load_saved(path)


def load_trained(workdir: str, *, dataset: data_lib.Dataset | None = None) -> Trained:
  """Reload every run's trained parameters from the workdir's newest good checkpoints."""
  config = load_config(workdir)
  workdir_lib.check_checkpoints_match(config, workdir)
  ds = prepare_data(config, dataset)
  runs = make_runs(config, ds)
  mesh = distributed.make_mesh()
  setup, params = load_params(workdir, config, runs, ds.image_shape, mesh)
  return Trained(config, ds, runs, setup, params, mesh)


def load_params(workdir: str, config, runs, image_shape, mesh, *, only=None) -> tuple:
  """(setup, {run name: params}) of a workdir's ``runs`` (all of the protocol's, which fix the checkpoint
  groups) from their newest good checkpoints; ``only``: the names of the runs wanted (their groups are read)."""
  num_conditions = len(runs[0].normal)
  setup = train_step.make_setup(config, image_shape, num_conditions, mesh.devices.size)
  params = {}
  for group in run_groups(runs, int(config.train.runs_per_program)):
    if only is not None and not any(r.name in only for r in group):
      continue
    target = train_step.stack_states([train_step.init_state(setup, train_step.run_key(r), image_shape) for r in group])
    ckpt = os.path.join(workdir, "checkpoints", group_name(group))
    if not os.path.isdir(ckpt):
      raise WorkdirError(f"{workdir}: runs {group_name(group)} were not trained (no {ckpt})")
    with checkpoints.checkpoint_manager(ckpt, config.train.keep_checkpoints) as manager:
      state, _ = checkpoints.restore_latest(manager, target)
    if state is None:
      raise WorkdirError(f"{ckpt} holds no checkpoint")
    for m, run in enumerate(group):
      params[run.name] = train_step.unstack(state.params, m)
  return setup, params
