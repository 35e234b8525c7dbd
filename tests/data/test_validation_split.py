"""The validation split (data/splits.py) and what the runs do with it: no run trains on it, RaPP's NAP fit and the
sap_complexity reference stay on training images, every score is computed on it as on test (val_auroc_by_score),
protocol.score="auto" chooses on it, and test is computed as before, on a training split 90% as large."""

import json
import os

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from dcvae_jax import experiment
from dcvae_jax.data import input_pipeline, protocols, splits
from dcvae_jax.data.datasets import Dataset
from dcvae_jax.errors import ConfigError, DataError
from dcvae_jax.evaluators import detection, metrics, scoring
from dcvae_jax.train import trainer
from dcvae_jax.validation import validate
from tests.helpers import tiny_config, toy_dataset

# ----------------------------------------------------------------------------------------------------------
# The split itself.


def test_split_is_stratified_disjoint_and_fixed_by_the_seed():
  y = np.repeat(np.arange(4), [100, 35, 7, 0])  # class 3 has no training image
  y = np.random.default_rng(1).permutation(y)
  tr, va = splits.validation_indices(y, 0.1, seed=3, num_classes=4)
  assert np.intersect1d(tr, va).size == 0
  np.testing.assert_array_equal(np.union1d(tr, va), np.arange(y.size))
  assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)  # the training split's order is kept
  # floor(0.1 n_c + 1/2): 100 -> 10, 35 -> 4 (3.5 rounds up), 7 -> 1 (0.7), 0 -> 0
  np.testing.assert_array_equal(np.bincount(y[va], minlength=4), [10, 4, 1, 0])
  again, other = splits.validation_indices(y, 0.1, 3, 4)[1], splits.validation_indices(y, 0.1, 4, 4)[1]
  np.testing.assert_array_equal(again, va)
  assert not np.array_equal(other, va)
  np.testing.assert_array_equal(np.bincount(y[other], minlength=4), [10, 4, 1, 0])


def test_too_few_examples_of_a_class_is_one_line():
  y = np.repeat(np.arange(3), [50, 50, 4])  # 0.1 x 4 + 1/2 -> 0 validation images of class 2
  with pytest.raises(DataError) as e:
    splits.validation_indices(y, 0.1, 0, 3, what="toy")
  msg = str(e.value)
  assert "\n" not in msg and "class 2 of toy" in msg and "0 of its 4" in msg
  with pytest.raises(DataError, match="1 of its 1"):  # a class of one image cannot be on both sides
    splits.validation_indices(np.array([0, 0, 0, 0, 1]), 0.6, 0, 2)


def test_split_validation_moves_images_and_factors():
  ds = toy_dataset(n_train=200)
  ds = Dataset(
    ds.name,
    ds.x_train,
    ds.y_train,
    ds.x_test,
    ds.y_test,
    ds.num_classes,
    ds.source,
    factors_train=np.arange(200)[:, None],
    factors_test=np.arange(64)[:, None],
  )
  assert splits.split_validation(ds, 0.0, 0) is ds
  s = splits.split_validation(ds, 0.2, 5)
  np.testing.assert_array_equal(s.x_train, ds.x_train[s.train_indices])
  np.testing.assert_array_equal(s.x_val, ds.x_train[s.val_indices])
  np.testing.assert_array_equal(s.y_val, ds.y_train[s.val_indices])
  np.testing.assert_array_equal(s.factors_train[:, 0], s.train_indices)
  np.testing.assert_array_equal(s.factors_val[:, 0], s.val_indices)
  assert s.x_test is ds.x_test and set(np.unique(s.y_val)) == set(np.unique(ds.y_train))
  with pytest.raises(ValueError, match="already"):
    splits.split_validation(s, 0.2, 5)


def test_config_checks():
  c = tiny_config()
  c.data.validation_fraction = 1.0
  with pytest.raises(ConfigError, match="validation_fraction"):
    validate(c)
  c.data.validation_fraction = 0.0
  c.protocol.score = "auto"
  with pytest.raises(ConfigError, match="auto") as e:
    validate(c)
  assert "\n" not in str(e.value)
  c.data.validation_fraction = 0.1
  validate(c)
  for field, bad in (("threshold_fpr", 0.0), ("threshold_fpr", 1.0), ("contamination", -0.1)):
    c2 = tiny_config()
    setattr(c2.eval, field, bad)
    with pytest.raises(ConfigError, match=field):
      validate(c2)


# ----------------------------------------------------------------------------------------------------------
# The pipeline with a validation split (one run, shared by the tests below).


def _unique_toy():
  ds = toy_dataset(n_train=300, n_test=90)
  rows = {x.tobytes() for x in ds.x_train}
  assert len(rows) == ds.x_train.shape[0]  # every image identifies its index
  return ds


def _rows(x):
  return {a.tobytes() for a in np.asarray(x)}


def _config(**changes):
  c = tiny_config("vae")
  c.protocol.classes = (0, 2)
  c.eval.iwae_samples = 8
  c.eval.iwae_chunk = 8
  c.eval.rapp_fit_examples = 40
  c.eval.reference_examples = 30
  c.data.binarize = False  # binarised, every toy image of a class is the same image
  for k, v in changes.items():
    section, field = k.split(".")
    setattr(getattr(c, section), field, v)
  return c


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
  """leave_one_out on classes 0 and 2 with protocol.score="auto", recording what training and scoring see."""
  ds = _unique_toy()
  seen = {"train": [], "scored": [], "fit": []}
  train_runs, score_images, fit_rapp = trainer.train_runs, detection.score_images, scoring.fit_rapp

  def spy_train(config, x_train, y_train, runs, *a, **k):
    seen["train"].append((np.array(x_train), np.array(y_train), list(runs)))
    return train_runs(config, x_train, y_train, runs, *a, **k)

  def spy_score(config, setup, params, x, *a, **k):
    seen["scored"].append(np.array(x))
    return score_images(config, setup, params, x, *a, **k)

  def spy_fit(setup, params, x_fit, *a, **k):
    seen["fit"].append(np.array(x_fit))
    return fit_rapp(setup, params, x_fit, *a, **k)

  wd = str(tmp_path_factory.mktemp("auto") / "wd")
  config = _config(**{"protocol.score": "auto", "eval.scores": ()})  # all ten, the latent_knn family included
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(trainer, "train_runs", spy_train)
    mp.setattr(detection, "score_images", spy_score)
    mp.setattr(scoring, "fit_rapp", spy_fit)
    results = experiment.train_and_evaluate(config, wd, dataset=ds, log=lambda *_: None)
  return dict(ds=ds, split=experiment.prepare_data(config, ds), seen=seen, results=results, wd=wd, config=config)


def test_no_run_trains_on_validation_images(auto_run):
  ds, split, seen = auto_run["ds"], auto_run["split"], auto_run["seen"]
  val = _rows(ds.x_train[split.val_indices])
  assert len(seen["train"]) == 1
  x_train, y_train, runs = seen["train"][0]
  # The training split the runs got is the original one less the validation images, in its order.
  np.testing.assert_array_equal(x_train, ds.x_train[split.train_indices])
  assert not _rows(x_train) & val
  assert _rows(x_train) | val == _rows(ds.x_train) and x_train.shape[0] + len(val) == ds.x_train.shape[0]
  for run in runs:  # every example each run's batches are drawn from
    data = input_pipeline.RunData.build(run, y_train, 32, 1)
    assert not _rows(x_train[data.indices]) & val
    assert data.indices.size == np.isin(ds.y_train[split.train_indices], run.normal).sum()


def test_rapp_fit_and_reference_images_are_training_images(auto_run):
  ds, split, seen = auto_run["ds"], auto_run["split"], auto_run["seen"]
  train, val, test = _rows(split.x_train), _rows(split.x_val), _rows(ds.x_test)
  assert len(seen["fit"]) == 1
  fit = seen["fit"][0]  # (M, n, H, W): each run's NAP fit images
  assert fit.shape[:2] == (2, 40) and _rows(fit.reshape(-1, *fit.shape[2:])) <= train
  kinds = []
  for x in seen["scored"]:
    r = _rows(np.asarray(x).reshape(-1, *ds.x_train.shape[1:]))  # the reference: (runs, n, H, W), each run's own
    kinds.append("test" if r == test else "val" if r == val else "train" if r <= train else "other")
  assert sorted(kinds) == ["test", "train", "val"], kinds  # the reference images come from training images


def test_validation_metrics_are_every_score_computed_as_on_test(auto_run):
  results, split, wd = auto_run["results"], auto_run["split"], auto_run["wd"]
  assert set(results["val_auroc_by_score"]) == set(results["val_aupr_by_score"]) == set(scoring.SCORES)
  for r in results["runs"]:
    saved = np.load(os.path.join(wd, "scores", f"{r['run']}.npz"))
    np.testing.assert_array_equal(saved["y_val"], split.y_val)  # leave_one_out: every validation image counts
    is_anomaly = np.isin(saved["y_val"], r["anomalous"])
    assert r["num_val_anomalous"] == is_anomaly.sum() == np.sum(split.y_val == int(r["label"]))
    assert r["num_val_normal"] == (~is_anomaly).sum()
    for name in ("recon", "nelbo", "iwae", "rapp", "rapp_sap", "latent_knn"):  # unconditional: the one column
      s = saved[f"val_{name}"][:, 0]
      assert r["val_auroc_by_score"][name] == pytest.approx(roc_auc_score(is_anomaly, s), abs=1e-12)
      assert r["val_aupr_by_score"][name] == pytest.approx(average_precision_score(is_anomaly, s), abs=1e-12)
    # The test metrics come from the test scores, exactly as before.
    y = saved["y_test"]
    keep = np.isin(y, r["normal"] + r["anomalous"])
    t = roc_auc_score(np.isin(y[keep], r["anomalous"]), saved["recon"][keep, 0])
    assert r["recon_auroc"] == pytest.approx(t, abs=1e-12)
  for name in scoring.SCORES:
    mean = np.mean([r["val_auroc_by_score"][name] for r in results["runs"]])
    assert results["val_auroc_by_score"][name] == pytest.approx(mean)


def test_auto_picks_the_best_mean_validation_auroc(auto_run):
  results, wd = auto_run["results"], auto_run["wd"]
  table = results["val_auroc_by_score"]
  best = max(table, key=table.get)
  assert results["score"] == results["score_selected"] == best and results["score_selection"] == "validation"
  assert [row["score"] for row in results["score_selection_table"]][0] == best
  assert results["auroc_mean"] == pytest.approx(results["auroc_by_score"][best])
  c = auto_run["config"]
  assert results["settings"] == {
    "model": "vae",
    "arch": "mlp",
    "hidden": [32, 16],
    "latent_dim": 4,
    "likelihood": "bernoulli",
    "gaussian_variance": None,
    "dataset": c.data.name,
    "binarize": False,
    "dequantize": False,
    "validation_fraction": 0.1,
    "protocol": "leave_one_out",
    "score": "auto",
    "score_condition": "min",
    "num_epochs": 1,
    "learning_rate": c.train.learning_rate,
    "lr_schedule": "constant",
    "batch_size": 32,
    "batch_sampling": "uniform",
    "seed": 0,
    "seeds": [0],
  }
  assert results["validation"]["num_images"] == auto_run["split"].x_val.shape[0] == len(auto_run["split"].val_indices)
  for r in results["runs"]:
    on_disk = json.load(open(os.path.join(wd, "runs", f"{r['run']}.json")))
    assert on_disk["auroc"] == on_disk[f"{best}_auroc"] and on_disk["score"] == best


def test_test_metrics_are_as_before_on_the_smaller_training_split(auto_run, tmp_path):
  """Training with validation_fraction=0 on exactly the training part of the split gives the same models, so
  every test number is equal: only the training data changed."""
  ds, split = auto_run["ds"], auto_run["split"]
  part = Dataset(ds.name, split.x_train, split.y_train, ds.x_test, ds.y_test, ds.num_classes, source="toy")
  config = _config(**{"data.validation_fraction": 0.0, "protocol.score": "recon", "eval.scores": ()})
  plain = experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=part, log=lambda *_: None)
  assert "val_auroc_by_score" not in plain and "threshold" not in plain
  assert "no validation" in plain["validation"]["note"]
  assert not os.path.exists(tmp_path / "wd" / "thresholds.json")
  for a, b in zip(plain["runs"], auto_run["results"]["runs"], strict=True):
    assert "val_auroc_by_score" not in a
    for name in scoring.SCORES:
      assert a[f"{name}_auroc"] == b[f"{name}_auroc"], name
      assert a[f"{name}_aupr"] == b[f"{name}_aupr"], name


def test_auto_without_validation_anomalies_is_one_line(tmp_path):
  """split protocol whose anomalous class has no training image: no validation anomaly, so auto cannot choose."""
  ds = toy_dataset(n_train=120)
  keep = ds.y_train != 2
  ds = Dataset(ds.name, ds.x_train[keep], ds.y_train[keep], ds.x_test, ds.y_test, 3, source="toy")
  config = _config(**{"protocol.score": "auto", "protocol.name": "split"})
  config.protocol.normal, config.protocol.anomalous = (0, 1), (2,)
  with pytest.raises(ConfigError, match="split_seed0 has none") as e:
    experiment.train_and_evaluate(config, str(tmp_path / "wd"), dataset=ds, log=lambda *_: None)
  assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------------------
# evaluate_run's validation part on made-up scores (no training): every protocol's validation anomalies.


def _fake_scores(y, rng):
  return {k: rng.normal(size=(y.size, 1)) + 2.0 * y[:, None] for k in scoring.DEVICE_SCORES}


@pytest.mark.parametrize(
  "name, normal, anomalous",
  [("one_vs_rest", (1,), (0, 2, 3)), ("leave_one_out", (0, 2, 3), (1,)), ("split", (0, 1), (3,))],
)
def test_each_protocol_has_its_validation_anomalies(name, normal, anomalous):
  rng = np.random.default_rng(0)
  y_val = np.repeat(np.arange(4), 10)
  y_test = np.repeat(np.arange(4), 5)
  config = tiny_config()
  config.protocol.name = name
  config.protocol.classes = (1,)
  config.protocol.normal, config.protocol.anomalous = (0, 1), (3,)
  (run,) = protocols.make_runs(config.protocol, 4, 0)
  assert (run.normal, run.anomalous) == (normal, anomalous)
  val = _fake_scores(y_val, rng)
  result = metrics.evaluate_run(
    run,
    _fake_scores(y_test, rng),
    y_test,
    conditional=False,
    condition_counts=np.ones(len(normal)),
    protocol=config.protocol,
    validation={"scores": val, "y": y_val},
  )
  assert result["num_val_normal"] == 10 * len(normal) and result["num_val_anomalous"] == 10 * len(anomalous)
  keep = np.isin(y_val, normal + anomalous)  # the split protocol leaves class 2 out
  for k in scoring.DEVICE_SCORES:
    expected = roc_auc_score(np.isin(y_val[keep], anomalous), val[k][keep, 0])
    assert result["val_auroc_by_score"][k] == pytest.approx(expected, abs=1e-12)
  assert "complexity" not in result["val_auroc_by_score"]  # no PNG lengths given


def test_select_score_takes_the_best_mean_and_breaks_ties_in_score_order():
  runs = [  # exact binary fractions: the three means are exactly 0.75
    {"val_auroc_by_score": {"iwae": 0.75, "recon": 0.5, "nelbo": 1.0}},
    {"val_auroc_by_score": {"iwae": 0.75, "recon": 1.0, "nelbo": 0.5}},
  ]
  best, table = metrics.select_score(runs)
  assert best == "recon" and [row["score"] for row in table] == ["recon", "nelbo", "iwae"]  # a tie: SCORES order
  assert table[0]["val_auroc"] == 0.75
  runs[1]["val_auroc_by_score"]["iwae"] = 0.875
  best, table = metrics.select_score(runs)
  assert best == "iwae" and table[0] == {"score": "iwae", "val_auroc": 0.8125}
  with pytest.raises(ValueError):
    metrics.select_score([{"val_note": "none"}])
