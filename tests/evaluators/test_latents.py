"""Encoder means of the test set (jit + vmap over models + sharded batch == direct apply) and the per-run
disentanglement results."""

import json

import jax
import numpy as np
import pytest

from dcvae_jax import distributed
from dcvae_jax.data import datasets as data
from dcvae_jax.data import input_pipeline, protocols, shapes
from dcvae_jax.evaluators import base, latents, scoring
from dcvae_jax.models import networks
from dcvae_jax.train import train_step, trainer
from tests.helpers import tiny_config, toy_dataset

# ----------------------------------------------------------------------------------------------------------
# encode_test_set


@pytest.fixture(scope="module", params=["vae", "cvae"])
def trained(request, tmp_path_factory):
  """A chunk of 3 leave-one-out runs trained together on the toy data (1 epoch); 61 test images."""
  ds = toy_dataset(n_test=61)
  config = tiny_config(request.param)
  config.protocol.classes = (0, 1, 2)
  runs = protocols.make_runs(config.protocol, ds.num_classes, config.seed)
  mesh = distributed.make_mesh()
  state, _, _ = trainer.train_runs(
    config,
    ds.x_train,
    ds.y_train,
    runs,
    str(tmp_path_factory.mktemp("ckpt")),
    image_shape=(8, 8, 1),
    num_conditions=2,
    mesh=mesh,
    log=lambda *_: None,
  )
  setup = train_step.make_setup(config, (8, 8, 1), 2, mesh.devices.size)
  return config, ds, runs, setup, state


def _direct(setup, params, x_uint8, ids, binarize):
  """Unjitted reference: each model alone, the whole test set in one call."""
  x = input_pipeline.preprocess(x_uint8, binarize)
  out = []
  for m in range(ids.shape[0]):
    c = jax.nn.one_hot(ids[m], setup.num_conditions) if setup.spec.conditional else None
    mu, _ = setup.module.apply(train_step.unstack(params, m), x, c, method=networks.VAE.encode)
    out.append(np.asarray(mu))
  return np.stack(out)


@pytest.mark.parametrize("num_devices,batch_size", [(1, 24), (8, 24), (8, 20), (8, 1000)])
def test_encode_equals_direct_apply(trained, num_devices, batch_size):
  """61 images: batches of 24 (or 20 -> 16 on 8 devices) leave a padded last batch; 1000 is one padded batch."""
  config, ds, runs, setup, state = trained
  mesh = distributed.make_mesh(jax.devices()[:num_devices])
  ids = latents.condition_ids(runs, ds.y_test)
  codes = latents.encode_test_set(setup, state.params, ds.x_test, mesh, batch_size=batch_size, conditions=ids)
  assert codes.shape == (3, 61, 4) and codes.dtype == np.float32
  ref = _direct(setup, state.params, ds.x_test, ids, config.data.binarize)
  np.testing.assert_allclose(codes, ref, rtol=1e-5, atol=1e-6)
  assert np.abs(codes[0] - codes[1]).max() > 1e-3  # the three models differ


def test_condition_ids_and_zero_condition(trained):
  config, ds, runs, setup, state = trained
  ids = latents.condition_ids(runs, ds.y_test)
  for m, run in enumerate(runs):  # run m holds out class m: normal classes -> 0, 1; the held-out one -> 2
    np.testing.assert_array_equal(ids[m][ds.y_test == run.anomalous[0]], 2)
    for pos, k in enumerate(run.normal):
      np.testing.assert_array_equal(ids[m][ds.y_test == k], pos)
  mesh = distributed.make_mesh()
  if not setup.spec.conditional:
    codes = latents.encode_test_set(setup, state.params, ds.x_test, mesh, batch_size=16)  # conditions optional
    np.testing.assert_array_equal(
      codes, latents.encode_test_set(setup, state.params, ds.x_test, mesh, batch_size=16, conditions=ids)
    )
    return
  with pytest.raises(ValueError, match="conditional model needs"):
    latents.encode_test_set(setup, state.params, ds.x_test, mesh, batch_size=16)
  with pytest.raises(ValueError, match="expected 0..2"):
    latents.encode_test_set(setup, state.params, ds.x_test, mesh, batch_size=16, conditions=ids + 1)
  # (N,) ids are shared by every model; id num_conditions is the all-zero condition vector.
  zero = latents.encode_test_set(setup, state.params, ds.x_test, mesh, batch_size=16, conditions=np.full(61, 2))
  x = input_pipeline.preprocess(ds.x_test, True)
  for m in range(3):
    mu, _ = setup.module.apply(
      train_step.unstack(state.params, m), x, np.zeros((61, 2), np.float32), method=networks.VAE.encode
    )
    np.testing.assert_allclose(zero[m], mu, rtol=1e-5, atol=1e-6)
  own = latents.encode_test_set(setup, state.params, ds.x_test, mesh, batch_size=16, conditions=ids)
  assert np.abs(own - zero).max() > 1e-4  # the condition reaches the encoder


def test_the_latents_evaluator_gives_each_runs_codes_and_json_ready_disentanglement(trained):
  """The ``latents`` evaluator on a group of runs, as the experiment runs it: every run's codes (for its
  scores/<run>.npz), its disentanglement metrics, and their summary."""
  config, ds, runs, setup, state = trained
  mesh = distributed.make_mesh()
  evaluator = latents.Evaluator(base.Job(config, ds, mesh, workdir="", write=False))
  progress = scoring.ScoreProgress(len(runs), evaluator.steps(runs), show=False)
  part = evaluator.run(base.Group(runs, state, setup, progress, [{} for _ in runs], [{} for _ in runs]))
  codes = latents.encode_test_set(
    setup,
    state.params,
    ds.x_test,
    mesh,
    batch_size=config.eval.batch_size,
    conditions=latents.condition_ids(runs, ds.y_test),
  )
  for m in range(len(runs)):
    assert set(part.arrays[m]) == {"codes"}
    np.testing.assert_array_equal(part.arrays[m]["codes"], codes[m])
  per_run = part.results
  for run, r in zip(runs, per_run, strict=True):
    assert set(r) == {"dis_num_images", "class_mig"}
    assert r["dis_num_images"] == int(np.isin(ds.y_test, run.normal).sum())
    assert 0.0 <= r["class_mig"] <= 1.0
  summary = evaluator.summarize(per_run, {})
  assert summary == latents.summarize_disentanglement(per_run)
  assert summary["disentanglement_num_runs"] == {"class_mig": 3}
  np.testing.assert_allclose(summary["class_mig_mean"], np.mean([r["class_mig"] for r in per_run]))
  json.dumps({"runs": per_run, **summary}, allow_nan=False)


# ----------------------------------------------------------------------------------------------------------
# disentanglement_results


@pytest.fixture(scope="module")
def scenes():
  factors = shapes.sample_factors(1200, np.random.default_rng(0))
  return factors, factors[:, 0].copy()


LEAVE_OUT_0 = protocols.Run("class0_seed0", "0", 0, normal=(1, 2), anomalous=(0,), uid=0)
ONE_CLASS = protocols.Run("class0_seed0", "0", 0, normal=(0,), anomalous=(1, 2), uid=0)


def test_codes_equal_to_factors_score_high(scenes):
  factors, y = scenes
  rng = np.random.default_rng(1)
  codes = np.concatenate([factors + rng.normal(0, 0.05, factors.shape), rng.normal(0, 1, (len(y), 3))], axis=1)
  codes[y == 0] = np.nan  # anomalous images are never used
  r = latents.disentanglement_results(LEAVE_OUT_0, codes, y, factors, shapes.FACTOR_NAMES, seed=0)
  names = [f"dis_mig_{n}" for n in shapes.FACTOR_NAMES]
  assert set(r) == {"dis_num_images", "class_mig", *names, *(f"dis_{k}" for k in latents.COMPUTE_ALL_KEYS)}
  assert r["dis_num_images"] == int((y > 0).sum())
  assert r["dis_mig"] > 0.85 and r["dis_factor_vae"] > 0.95 and r["dis_dci_disentanglement"] > 0.9
  assert r["dis_sap"] > 0.5 and r["dis_dci_informativeness"] > 0.9
  assert all(r[k] > 0.8 for k in names)
  np.testing.assert_allclose(r["dis_mig"], np.mean([r[k] for k in names]))
  assert r["class_mig"] > 0.9  # the class (shape) is one code dim, alone
  np.testing.assert_allclose(r["class_mig"], r["dis_mig_shape"])  # on shapes the class *is* the shape factor
  json.dumps(r, allow_nan=False)


def test_noise_codes_score_low(scenes):
  factors, y = scenes
  codes = np.random.default_rng(2).normal(size=(len(y), 8))
  r = latents.disentanglement_results(LEAVE_OUT_0, codes, y, factors, shapes.FACTOR_NAMES, seed=0)
  assert r["dis_mig"] < 0.05 and r["class_mig"] < 0.05
  assert r["dis_dci_disentanglement"] < 0.2 and r["dis_sap"] < 0.05
  assert r["dis_factor_vae"] < 0.5  # chance is ~1/5


def test_one_normal_class_and_no_factors(scenes):
  factors, y = scenes
  codes = factors.astype(np.float64)
  r = latents.disentanglement_results(ONE_CLASS, codes, y, factors, shapes.FACTOR_NAMES)
  assert r["class_mig"] is None and "one normal class" in r["class_mig_note"]
  assert r["dis_mig_shape"] is None  # one value on the run's data
  assert r["dis_mig_scale"] > 0.8 and r["dis_mig"] > 0.8  # the mean is over the informative factors
  # MNIST-family data: only the class is known.
  r = latents.disentanglement_results(LEAVE_OUT_0, codes, y, None, None)
  assert set(r) == {"dis_num_images", "class_mig"} and r["class_mig"] > 0.9
  summary = latents.summarize_disentanglement([latents.disentanglement_results(ONE_CLASS, codes, y, None, None)])
  assert summary["class_mig_mean"] is None and "one normal class" in summary["class_mig_note"]


def test_nonfinite_codes_do_not_raise(scenes):
  factors, y = scenes
  codes = factors.astype(np.float64)
  codes[y == 1] = np.inf
  r = latents.disentanglement_results(LEAVE_OUT_0, codes, y, factors, shapes.FACTOR_NAMES)
  assert "non-finite" in r["dis_error"] and r["class_mig"] is None and r["dis_mig"] is None
  assert r["dis_mig_x"] is None
  json.dumps(r, allow_nan=False)
  with pytest.raises(ValueError, match="do not match"):
    latents.disentanglement_results(LEAVE_OUT_0, codes[:10], y, factors)


def test_summarize_over_runs():
  per_run = [
    {"run": "a", "auroc": 0.5, "dis_num_images": 10, "dis_mig": 0.2, "dis_mig_shape": None, "class_mig": 0.4},
    {"run": "b", "auroc": 0.6, "dis_num_images": 10, "dis_mig": 0.4, "dis_mig_shape": 0.3, "class_mig": 0.6},
    {"run": "c", "auroc": 0.7, "dis_error": "non-finite codes", "dis_mig": None, "class_mig": None},
    {"run": "old", "auroc": 0.8},
  ]  # a run from a workdir written before these metrics
  s = latents.summarize_disentanglement(per_run)
  np.testing.assert_allclose([s["dis_mig_mean"], s["dis_mig_std"]], [0.3, 0.1])
  np.testing.assert_allclose([s["class_mig_mean"], s["dis_mig_shape_mean"], s["dis_mig_shape_std"]], [0.5, 0.3, 0])
  assert s["disentanglement_num_runs"] == {"dis_mig": 2, "dis_mig_shape": 1, "class_mig": 2}
  assert "dis_error_mean" not in s and "dis_num_images_mean" not in s
  assert latents.summarize_disentanglement([{"run": "x", "auroc": 0.5}]) == {}


# ----------------------------------------------------------------------------------------------------------
# The shapes source end to end (tiny)


def test_shapes_end_to_end():
  """The real shapes source through encode + metrics (an untrained 28x28 model: training is tested above)."""
  ds = data.load_dataset("shapes")
  config = tiny_config("vae")
  config.protocol.classes = (0,)
  config.data.binarize = False
  runs = protocols.make_runs(config.protocol, ds.num_classes, config.seed)
  mesh = distributed.make_mesh()
  setup = train_step.make_setup(config, (28, 28, 1), 2, mesh.devices.size)
  params = train_step.stack_states(
    [train_step.init_state(setup, train_step.run_key(r), (28, 28, 1)) for r in runs]
  ).params
  x, y, f = ds.x_test[:900], ds.y_test[:900], ds.factors_test[:900]
  codes = latents.encode_test_set(setup, params, x, mesh, batch_size=256)
  assert codes.shape == (1, 900, 4) and np.all(np.isfinite(codes))
  r = latents.disentanglement_results(runs[0], codes[0], y, f, ds.factor_names, seed=0)
  assert r["dis_num_images"] == int((y != 0).sum())
  for k in ("dis_mig", "dis_factor_vae", "dis_dci_disentanglement", "dis_sap", "class_mig", "dis_mig_x"):
    assert 0.0 <= r[k] <= 1.0, (k, r[k])
  json.dumps(r, allow_nan=False)
