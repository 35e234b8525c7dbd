"""latent_knn and the standardised sums that use it (evaluators/latent_knn.py, anomaly_scores.standardised_sum):
known answers in numpy, then one tiny conditional model trained end to end whose saved scores are recomputed
independently: which images make the bank, under which condition each is encoded, the reference's own entry
left out, the reduction over conditions, and scoring new images from the workdir alone."""

import jax
import numpy as np
import pytest

from dcvae_jax import experiment, predict
from dcvae_jax.data import protocols
from dcvae_jax.data.datasets import Dataset
from dcvae_jax.data.input_pipeline import preprocess
from dcvae_jax.errors import ConfigError
from dcvae_jax.evaluators import anomaly_scores, detection, latent_knn, scoring
from dcvae_jax.models import objectives
from dcvae_jax.options import SCORE_CONDITIONS
from dcvae_jax.validation import validate
from tests.helpers import tiny_config

SIZE = 8


def _brute_force(codes, bank, exclude=None, k=1):
  d = np.sqrt(((np.asarray(codes, np.float64)[:, None] - np.asarray(bank, np.float64)[None]) ** 2).sum(-1))
  if exclude is not None:
    for i, e in enumerate(exclude):
      if e >= 0:
        d[i, e] = np.inf
  return np.sort(d, axis=1)[:, :k].mean(axis=1)


def test_nearest_distance_is_the_euclidean_distance_to_the_closest_bank_row():
  rng = np.random.default_rng(0)
  codes, bank = rng.normal(size=(latent_knn.CHUNK + 37, 5)), rng.normal(size=(300, 5))
  np.testing.assert_allclose(latent_knn.nearest_distance(codes, bank), _brute_force(codes, bank), rtol=1e-12)
  # a hand-made case: the nearest of (0,0), (3,4), (1,1) to (3,3) is (3,4), at distance 1
  assert latent_knn.nearest_distance([[3.0, 3.0]], [[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])[0] == 1.0


def test_nearest_distance_leaves_out_each_querys_own_bank_row():
  rng = np.random.default_rng(1)
  bank = rng.normal(size=(200, 3))
  exclude = np.arange(200)
  got = latent_knn.nearest_distance(bank, bank, exclude=exclude)
  np.testing.assert_allclose(got, _brute_force(bank, bank, exclude), rtol=1e-12)
  assert (got > 0).all()  # without the exclusion every bank row would be at distance 0 from itself
  np.testing.assert_array_equal(latent_knn.nearest_distance(bank, bank), 0.0)
  mixed = np.where(np.arange(200) % 2 == 0, exclude, -1)
  np.testing.assert_allclose(latent_knn.nearest_distance(bank, bank, exclude=mixed), _brute_force(bank, bank, mixed))


@pytest.mark.parametrize("k", [2, 5, 40])
def test_nearest_distance_with_k_neighbours_is_the_mean_of_the_k_smallest_distances(k):
  rng = np.random.default_rng(2)
  codes, bank = rng.normal(size=(latent_knn.CHUNK + 11, 4)), rng.normal(size=(90, 4))
  got = latent_knn.nearest_distance(codes, bank, k=k)
  np.testing.assert_allclose(got, _brute_force(codes, bank, k=k), rtol=1e-12)
  assert (got > latent_knn.nearest_distance(codes, bank)).all()  # the mean of k > 1 exceeds the nearest
  exclude = np.arange(90)  # the bank against itself, each row's own entry left out
  np.testing.assert_allclose(
    latent_knn.nearest_distance(bank, bank, exclude=exclude, k=k), _brute_force(bank, bank, exclude, k), rtol=1e-12
  )
  # by hand: from (0, 0), the two nearest of (3, 4), (1, 0), (0, 2) are at 1 and 2
  assert latent_knn.nearest_distance([[0.0, 0.0]], [[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], k=2)[0] == 1.5


@pytest.mark.parametrize("k", [1, 3])
def test_nearest_distance_of_float32_codes_is_computed_in_float64(k):
  """The encoder's codes are float32: the distances are float64 differences of them (exact to 1e-12), not float32
  arithmetic (about 1e-7). (Casting either the codes or the bank alone already makes the arithmetic float64.)"""
  rng = np.random.default_rng(4)
  codes, bank = rng.normal(size=(50, 6)).astype(np.float32), rng.normal(size=(80, 6)).astype(np.float32)
  got = latent_knn.nearest_distance(codes, bank, k=k)
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, _brute_force(codes, bank, k=k), rtol=1e-12)
  np.testing.assert_allclose(latent_knn.nearest_distance(codes, bank.astype(np.float64), k=k), got, rtol=1e-12)
  np.testing.assert_allclose(latent_knn.nearest_distance(codes.astype(np.float64), bank, k=k), got, rtol=1e-12)


def test_nearest_distance_with_fewer_usable_rows_than_k_averages_those_there_are():
  bank = np.array([[1.0, 0.0], [np.nan, 0.0], [0.0, 3.0]])
  assert latent_knn.nearest_distance([[0.0, 0.0]], bank, k=5)[0] == 2.0  # (1 + 3) / 2: the NaN row is no neighbour
  assert latent_knn.nearest_distance([[0.0, 0.0]], bank, exclude=[2], k=5)[0] == 1.0
  assert np.isinf(latent_knn.nearest_distance([[0.0, 0.0]], bank[:1], exclude=[0], k=3))[0]
  with pytest.raises(ValueError, match="k must be at least 1"):
    latent_knn.nearest_distance([[0.0, 0.0]], bank, k=0)


def test_nearest_distance_of_non_finite_codes_and_banks():
  bank = np.array([[0.0, 0.0], [np.nan, 0.0], [5.0, 0.0]])
  got = latent_knn.nearest_distance([[4.0, 0.0], [np.inf, 1.0]], bank)
  assert got[0] == 1.0 and np.isnan(got[1])  # the NaN bank row is nobody's neighbour; a NaN code has no distance
  assert np.isinf(latent_knn.nearest_distance([[1.0, 1.0]], np.zeros((0, 2))))[0]
  assert np.isinf(latent_knn.nearest_distance([[1.0, 1.0]], [[1.0, 1.0]], exclude=[0]))[0]


def test_standardised_sum_is_the_sum_of_robust_z_scores():
  rng = np.random.default_rng(2)
  a, b, c = rng.normal(size=(3, 50))
  ra, rb, rc = rng.normal(3.0, 2.0, size=(3, 40))

  def z(v, r):
    return (v - np.median(r)) / (1.4826 * np.median(np.abs(r - np.median(r))))

  np.testing.assert_allclose(
    anomaly_scores.standardised_sum((a, ra), (b, rb), (c, rc)), z(a, ra) + z(b, rb) + z(c, rc), rtol=1e-12
  )
  np.testing.assert_array_equal(anomaly_scores.sap_complexity(a, b, ra, rb), z(a, ra) + z(b, rb))
  with pytest.raises(ValueError):
    anomaly_scores.standardised_sum()


def test_reduce_scores_derives_each_sum_only_from_parts_it_has():
  run = protocols.Run(name="r", label="r", seed=0, normal=(0,), anomalous=(1,), uid=0)
  rng = np.random.default_rng(3)
  n = 20
  per_cond = {k: rng.normal(size=(n, 1)) for k in ("recon", "iwae", "rapp_sap", "latent_knn")}
  bits = rng.normal(500.0, 20.0, size=n)
  ref = {k: rng.normal(size=30) for k in ("rapp_sap", "complexity", "latent_knn")}
  common = dict(conditional=False, condition_counts=None, protocol=_protocol(), length_bits=bits, offset_bits=0.0)
  out = scoring.reduce_scores(run, per_cond, None, reference=ref, **common)
  cx = anomaly_scores.complexity(per_cond["iwae"][:, 0], bits, 0.0)
  z = anomaly_scores.robust_standardise
  sap, knn = per_cond["rapp_sap"][:, 0], per_cond["latent_knn"][:, 0]
  np.testing.assert_array_equal(out["latent_knn"], knn)
  np.testing.assert_allclose(out["sap_knn"], z(sap, ref["rapp_sap"]) + z(knn, ref["latent_knn"]))
  np.testing.assert_allclose(
    out["sap_complexity_knn"], z(sap, ref["rapp_sap"]) + z(cx, ref["complexity"]) + z(knn, ref["latent_knn"])
  )
  without = scoring.reduce_scores(
    run, per_cond, None, reference={k: ref[k] for k in ("rapp_sap", "complexity")}, **common
  )
  assert "sap_complexity" in without and "sap_knn" not in without and "sap_complexity_knn" not in without


def _protocol(score_condition="min"):
  import ml_collections

  return ml_collections.ConfigDict({"score_condition": score_condition})


def test_knn_scores_with_score_condition_given_are_refused():
  config = tiny_config("cvae")
  config.eval.scores = ("recon", "latent_knn")
  config.protocol.score_condition = "given"
  with pytest.raises(ConfigError, match="latent_knn"):
    validate(config)
  config.protocol.score_condition = "min"
  validate(config)
  assert "given" in SCORE_CONDITIONS


@pytest.mark.parametrize("k", [0, -2, True])
def test_knn_neighbours_must_be_a_whole_number_of_at_least_one(k):
  """(The config's int field itself refuses 2.5 or "3".)"""
  config = tiny_config("vae")
  config.eval.knn_neighbours = 4
  validate(config)
  config.eval.knn_neighbours = k
  with pytest.raises(ConfigError, match="eval.knn_neighbours must be a whole number of at least 1"):
    validate(config)


# ----------------------------------------------------------------------------------------------------------
# End to end: a conditional model, two normal classes and one anomalous class.


def _three_class_dataset():
  """Classes 0 and 1 (normal): a bright square in one of two places; class 2 (anomalous): noise. The TEST
  anomalies are exact copies of class 2's TRAINING images, so a bank that held them would give them distance 0."""
  rng = np.random.default_rng(0)

  def squares(n, where):
    x = rng.integers(0, 30, (n, SIZE, SIZE)).astype(np.uint8)
    r = slice(1, 4) if where == 0 else slice(4, 7)
    x[:, r, r] = rng.integers(180, 256, (n, 3, 3))
    return x

  noise = rng.integers(0, 256, (40, SIZE, SIZE)).astype(np.uint8)
  x_tr = np.concatenate([squares(120, 0), squares(120, 1), noise])
  y_tr = np.repeat(np.array([0, 1, 2], np.int32), [120, 120, 40])
  x_te = np.concatenate([squares(30, 0), squares(30, 1), noise[:30]])
  y_te = np.repeat(np.array([0, 1, 2], np.int32), 30)
  return Dataset("three", x_tr, y_tr, x_te, y_te, 3, source="toy")


@pytest.fixture(scope="module")
def knn_workdir(tmp_path_factory):
  ds = _three_class_dataset()
  config = tiny_config("cvae", num_epochs=2, batch_size=32, steps_per_call=4)
  config.protocol.name = "split"
  config.protocol.normal = (0, 1)
  config.protocol.anomalous = (2,)
  config.eval.scores = ()  # all ten
  config.data.binarize = False  # grey levels: binarised, the toy squares would be copies of each other
  config.model.likelihood = "continuous_bernoulli"
  config.eval.iwae_samples = 4
  config.eval.iwae_chunk = 4
  config.eval.rapp_fit_examples = 64
  config.eval.reference_examples = 50
  config.data.validation_fraction = 0.0  # every training image is in the bank (the split: test_validation_split)
  config.eval.knn_neighbours = KNN_K  # k > 1: the test, reference and new-image paths must all carry it
  workdir = tmp_path_factory.mktemp("knn") / "wd"
  experiment.train_and_evaluate(config, str(workdir), dataset=ds, log=lambda *_: None)
  run = protocols.make_runs(config.protocol, ds.num_classes, config.seed)[0]
  loaded = experiment.load_trained(str(workdir), dataset=ds)
  saved = dict(np.load(workdir / "scores" / f"{run.name}.npz"))
  return dict(ds=ds, config=config, run=run, loaded=loaded, saved=saved, workdir=str(workdir),
              params=loaded.params[run.name])  # fmt: skip


KNN_K = 3  # the end-to-end model's eval.knn_neighbours


def _codes(t, x, cond):
  """Encoder means of uint8 images x under condition ids cond, straight from objectives.encode."""
  setup = t["loaded"].setup
  xf = preprocess(x, setup.binarize, setup.dequantize, image_shape=setup.module.image_shape)
  c = objectives.one_hot_condition(setup.spec, np.asarray(cond, np.int32), setup.num_conditions)
  mu, _ = objectives.encode(setup.module, t["params"], xf, c)
  return np.asarray(mu, np.float64)


def _expected_knn(t, x, exclude_order_rows=None):
  """min over the two normal conditions c of the mean distance from mu(x, c) to the KNN_K nearest mu(x_j, c) of
  normal training images x_j of class c (its own row left out for the reference images)."""
  ds, run = t["ds"], t["run"]
  order = detection.normal_train_order(ds, run)
  per_cond = []
  for c, cls in enumerate(run.normal):
    rows = np.flatnonzero(ds.y_train[order] == cls)
    bank = _codes(t, ds.x_train[order[rows]], np.full(rows.size, c))
    q = _codes(t, x, np.full(len(x), c))
    ex = None
    if exclude_order_rows is not None:  # query i is order row i: its position among this class's rows
      pos = {int(r): k for k, r in enumerate(rows)}
      ex = np.array([pos.get(int(i), -1) for i in exclude_order_rows])
    per_cond.append(_brute_force(q, bank, ex, k=KNN_K))
  return np.min(per_cond, axis=0)


@pytest.mark.slow
def test_latent_knn_of_test_images_uses_a_bank_of_normal_training_images_under_their_own_class(knn_workdir):
  t = knn_workdir
  ds, saved = t["ds"], t["saved"]
  got = np.min(saved["latent_knn"][:, :-1], axis=1)  # the run's normal conditions; the all-zero column is NaN
  assert np.isnan(saved["latent_knn"][:, -1]).all()
  np.testing.assert_allclose(got, _expected_knn(t, ds.x_test), rtol=1e-4, atol=1e-5)
  anomalous = ds.y_test == 2
  assert (got[anomalous] > 1e-3).all()  # the anomalies' own training copies are not in the bank


@pytest.mark.slow
def test_reference_latent_knn_leaves_each_reference_images_own_entry_out(knn_workdir):
  t = knn_workdir
  ds, config, run, saved = t["ds"], t["config"], t["run"], t["saved"]
  n = config.eval.reference_examples
  order = detection.normal_train_order(ds, run)
  want = _expected_knn(t, ds.x_train[order[:n]], exclude_order_rows=np.arange(n))
  np.testing.assert_allclose(saved["reference_latent_knn"], want, rtol=1e-4, atol=1e-5)
  assert (saved["reference_latent_knn"] > 0).all()


@pytest.mark.slow
def test_sap_knn_and_sap_complexity_knn_in_results_are_the_standardised_sums(knn_workdir):
  t = knn_workdir
  ds, saved, run = t["ds"], t["saved"], t["run"]
  with open(f"{t['workdir']}/runs/{run.name}.json") as f:
    import json

    result = json.load(f)
  z = anomaly_scores.robust_standardise
  sap = np.min(saved["rapp_sap"][:, :-1], axis=1)
  knn = np.min(saved["latent_knn"][:, :-1], axis=1)
  want = z(sap, saved["reference_rapp_sap"]) + z(knn, saved["reference_latent_knn"])
  normal = ds.y_test != 2
  np.testing.assert_allclose(result["sap_knn_mean_normal"], want[normal].mean(), rtol=1e-6)
  np.testing.assert_allclose(result["sap_knn_mean_anomalous"], want[~normal].mean(), rtol=1e-6)
  for name in ("latent_knn", "sap_knn", "sap_complexity_knn"):
    assert f"{name}_auroc" in result


@pytest.mark.slow
def test_new_images_get_the_saved_latent_knn_from_the_workdir_alone(knn_workdir):
  t = knn_workdir
  p = predict.load_predictor(t["workdir"], t["run"].name)
  assert {"latent_knn", "sap_knn", "sap_complexity_knn"} <= set(p.score_names)
  got = p.scores(t["ds"].x_test)
  np.testing.assert_allclose(got["latent_knn"], np.min(t["saved"]["latent_knn"][:, :-1], axis=1), rtol=1e-6)
  assert jax.tree.leaves(p.params)[0].shape[0] == 1


def test_saved_reference_keys_are_every_part_of_a_standardised_sum():
  """scoring_state (numpy only) names the reference scores itself; they must be the parts the sums read."""
  from dcvae_jax.evaluators import scoring_state

  assert scoring_state.REFERENCE_KEYS == scoring.REFERENCE_SCORES == ("rapp_sap", "complexity", "latent_knn")
  assert {p for parts in scoring.STANDARDISED_SUMS.values() for p in parts} == set(scoring_state.REFERENCE_KEYS)
