"""The train step: data parallelism, many runs at once, checkpoints and resume, the loss going down."""

import json

import jax
import numpy as np
import pytest

from dcvae_jax import distributed, errors, experiment, validation
from dcvae_jax.data import input_pipeline
from dcvae_jax.train import checkpoints, train_step, trainer
from tests.helpers import assert_trees_close, assert_trees_equal, tiny_config, toy_dataset, toy_runs, train_toy


@pytest.mark.parametrize("model", ["vae", "dcvae", "factor_vae"])
def test_eight_devices_equal_one_device(tmp_path, model):
  assert jax.device_count() == 8, "tests/conftest.py must set 8 fake CPU devices"
  ds = toy_dataset()
  config = tiny_config(model, num_epochs=2)
  runs = toy_runs(config, ds)
  one, _, _ = train_toy(config, ds, runs, tmp_path / "one", mesh=distributed.make_mesh(jax.devices()[:1]))
  eight, _, _ = train_toy(config, ds, runs, tmp_path / "eight", mesh=distributed.make_mesh())
  assert (
    int(one.step[0])
    == int(eight.step[0])
    == 2 * (len(runs[0].normal) and input_pipeline.RunData.build(runs[0], ds.y_train, 32, 1).total_steps)
  )
  assert_trees_close(one.params, eight.params, rtol=2e-4, atol=2e-6)
  if model == "factor_vae":
    assert_trees_close(one.disc_params, eight.disc_params, rtol=2e-4, atol=2e-6)
  else:
    assert one.disc_params is None and eight.disc_params is None


def test_local_tc_scope_splits_the_batch_per_device(tmp_path):
  """tc_scope='local' estimates TC per device shard: differs from 'global', identical on 1 device."""
  ds = toy_dataset()
  config = tiny_config("beta_tcvae")
  runs = toy_runs(config, ds)
  config.model.tc_scope = "global"
  glob, _, _ = train_toy(config, ds, runs, tmp_path / "g")
  config.model.tc_scope = "local"
  loc, _, _ = train_toy(config, ds, runs, tmp_path / "l")
  one_dev = distributed.make_mesh(jax.devices()[:1])
  loc1, _, _ = train_toy(config, ds, runs, tmp_path / "l1", mesh=one_dev)
  config.model.tc_scope = "global"
  glob1, _, _ = train_toy(config, ds, runs, tmp_path / "g1", mesh=one_dev)
  assert_trees_close(loc1.params, glob1.params, rtol=1e-5, atol=1e-7)
  diff = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(jax.tree.leaves(glob.params), jax.tree.leaves(loc.params), strict=True)
  )
  assert diff > 1e-6


@pytest.mark.parametrize("ensemble", ["vmap", "map"])
def test_vmapped_runs_equal_sequential_runs(tmp_path, ensemble):
  ds = toy_dataset()
  config = tiny_config("cvae", num_epochs=2)
  config.train.ensemble = ensemble
  runs = toy_runs(config, ds, classes=(0, 1, 2))
  together, _, _ = train_toy(config, ds, runs, tmp_path / "all")
  for m, run in enumerate(runs):
    alone, _, _ = train_toy(config, ds, [run], tmp_path / run.name)
    assert_trees_close(
      train_step.unstack(together.params, m), train_step.unstack(alone.params, 0), rtol=1e-5, atol=1e-6
    )
    assert int(together.step[m]) == int(alone.step[0])


def test_ensemble_mode_resolution():
  assert train_step.resolve_ensemble("auto", "cpu") == "map"
  assert train_step.resolve_ensemble("auto", "gpu") == "vmap"
  assert train_step.resolve_ensemble("auto", "tpu") == "vmap"
  assert train_step.resolve_ensemble("vmap", "cpu") == "vmap"
  assert train_step.resolve_ensemble("map", "tpu") == "map"
  config = tiny_config("vae")
  config.train.ensemble = "pmap"
  with pytest.raises(errors.ConfigError, match="train.ensemble"):
    validation.validate(config)


def test_groups_of_runs_share_one_compiled_program(tmp_path):
  """runs_per_program=1 trains the runs one after another with ONE compilation, not one per run."""
  ds = toy_dataset()
  config = tiny_config("vae")
  runs = toy_runs(config, ds, classes=(0, 1, 2))
  for run in runs:
    train_toy(config, ds, [run], tmp_path / run.name)
  ensemble = train_step.resolve_ensemble(config.train.ensemble)
  _, fn = trainer._compiled(config, (8, 8, 1), len(runs[0].normal), distributed.make_mesh(), ensemble)
  assert fn._cache_size() == 1


def test_resume_continues_exactly(tmp_path):
  """Train 1 epoch, then ask for 3: the result equals an uninterrupted 3-epoch run, bit for bit."""
  ds = toy_dataset()
  config = tiny_config("factor_vae", num_epochs=3, checkpoint_every_steps=5)
  runs = toy_runs(config, ds)
  straight, _, steps = train_toy(config, ds, runs, tmp_path / "straight")
  config.train.num_epochs = 1
  _, _, first = train_toy(config, ds, runs, tmp_path / "resumed")
  assert first < steps
  config.train.num_epochs = 3
  resumed, _, last = train_toy(config, ds, runs, tmp_path / "resumed")
  assert last == steps
  assert_trees_equal(straight, resumed)


def test_checkpoint_round_trip(tmp_path):
  ds = toy_dataset()
  config = tiny_config("rf_vae")
  runs = toy_runs(config, ds)
  state, _, steps = train_toy(config, ds, runs, tmp_path / "ck")
  with checkpoints.checkpoint_manager(str(tmp_path / "ck"), 2) as manager:
    assert manager.latest_step() == steps
    restored, step = checkpoints.restore_latest(manager, state)
  assert step == steps
  assert_trees_equal(state, restored)
  assert restored.disc_params is not None and restored.disc_opt_state is not None


def test_metrics_log_has_every_term(tmp_path):
  ds = toy_dataset()
  config = tiny_config("factor_vae", log_every_steps=1)
  runs = toy_runs(config, ds)
  with open(tmp_path / "m.jsonl", "w") as f:
    _, _, steps = train_toy(config, ds, runs, tmp_path / "ck", log_file=f)
  lines = [json.loads(l) for l in open(tmp_path / "m.jsonl")]
  assert [l["step"] for l in lines] == list(range(1, steps + 1))
  for key in ("loss", "recon", "kl", "mi", "tc", "dwkl", "elbo", "tc_d", "disc_loss", "grad_norm"):
    assert key in lines[0] and np.isfinite(lines[0][key])


def test_batch_not_divisible_by_devices_is_refused(tmp_path):
  ds = toy_dataset()
  config = tiny_config("vae", batch_size=30)
  with pytest.raises(errors.ConfigError, match="not divisible by the 8 devices"):  # checked once, before training
    experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=ds, log=lambda *_: None)


@pytest.mark.parametrize("model", ["dcvae", "factor_vae"])
def test_bfloat16_mixed_precision_trains_with_finite_losses(tmp_path, model):
  ds = toy_dataset()
  config = tiny_config(model, num_epochs=2, log_every_steps=1)
  config.model.compute_dtype = "bfloat16"
  runs = toy_runs(config, ds)
  with open(tmp_path / "m.jsonl", "w") as f:
    state, _, steps = train_toy(config, ds, runs, tmp_path / "ck", log_file=f)
  lines = [json.loads(l) for l in open(tmp_path / "m.jsonl")]
  assert len(lines) == steps and all(np.isfinite(l["loss"]) and np.isfinite(l["tc"]) for l in lines)
  assert lines[-1]["loss"] < lines[0]["loss"]
  for leaf in jax.tree.leaves(state.params):
    assert leaf.dtype == np.float32  # parameters stay in full precision
