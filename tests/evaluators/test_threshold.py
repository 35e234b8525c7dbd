"""The decision threshold (evaluators/threshold.py): its order-statistic convention against numpy, what it
guarantees on the images it was set on, precision / recall / F1 / FPR against sklearn and by hand, and the
thresholds a trained run writes (thresholds.json, results.json) recomputed from its saved validation scores."""

import json
import os

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from dcvae_jax import experiment
from dcvae_jax.evaluators import threshold
from tests.helpers import tiny_config, toy_dataset


@pytest.mark.parametrize("n", [1, 2, 7, 20, 99, 100, 361, 1000])
@pytest.mark.parametrize("rate", [0.01, 0.05, 0.1, 0.137, 0.5, 0.9])
def test_order_statistic_is_numpys_inverted_cdf_quantile(n, rate):
  s = np.random.default_rng(n).normal(size=n)
  t = threshold.upper_order_statistic(s, rate)
  assert t == np.quantile(s, 1 - rate, method="inverted_cdf")
  k = int(np.ceil(round((1 - rate) * n, 9)))  # the k-th smallest, k = ceil((1 - rate) n)
  assert t == np.sort(s)[k - 1]


@pytest.mark.parametrize("n", [1, 5, 19, 20, 21, 360, 1001])
@pytest.mark.parametrize("rate", [0.01, 0.05, 0.25])
def test_at_most_the_rate_is_flagged_and_the_threshold_is_the_smallest_that_does_it(n, rate):
  s = np.random.default_rng(0).permutation(np.arange(n, dtype=np.float64))  # distinct scores
  t = threshold.upper_order_statistic(s, rate)
  flagged = threshold.flagged(s, t)
  assert flagged.sum() == int(np.floor(rate * n + 1e-9)) and flagged.mean() <= rate
  below = s[s < t]
  if below.size:  # the next smaller sample value would flag more than the rate
    assert threshold.flagged(s, below.max()).mean() > rate


def test_known_answers():
  s = np.arange(1.0, 101.0)  # 1..100
  assert threshold.upper_order_statistic(s, 0.05) == 95.0  # 96..100 flagged: 5 of 100
  assert threshold.upper_order_statistic(s, 0.051) == 95.0  # floor(5.1) = 5
  assert threshold.upper_order_statistic(s, 0.049) == 96.0  # floor(4.9) = 4
  assert threshold.upper_order_statistic([3.0], 0.05) == 3.0  # nothing may be flagged: the maximum
  ties = np.array([1.0, 2.0, 2.0, 2.0, 5.0])
  assert threshold.upper_order_statistic(ties, 0.4) == 2.0  # 2 may be flagged; ties keep it to 1 (the 5)
  assert threshold.flagged(ties, 2.0).sum() == 1
  # Non-finite scores rank as +inf (most anomalous) and are always flagged.
  with_bad = np.array([1.0, np.nan, 2.0, -np.inf, 3.0])
  assert threshold.upper_order_statistic(with_bad, 0.4) == 3.0  # sorted: 1, 2, 3, inf, inf
  np.testing.assert_array_equal(threshold.flagged(with_bad, 3.0), [False, True, False, True, False])
  assert np.isnan(threshold.upper_order_statistic([], 0.05))
  with pytest.raises(ValueError):
    threshold.upper_order_statistic(s, 0.0)


def test_decision_rates_against_sklearn_and_by_hand():
  rng = np.random.default_rng(3)
  y = rng.random(500) < 0.3
  s = rng.normal(size=500) + 1.5 * y
  t = 0.8
  got = threshold.decision_rates(s, y, t)
  pred = s > t
  assert got["precision"] == pytest.approx(precision_score(y, pred))
  assert got["recall"] == pytest.approx(recall_score(y, pred))
  assert got["f1"] == pytest.approx(f1_score(y, pred))
  assert got["fpr"] == pytest.approx(np.sum(pred & ~y) / np.sum(~y))
  # By hand: 4 normal (one flagged), 2 anomalies (one flagged).
  hand = threshold.decision_rates([0.1, 0.2, 0.3, 0.9, 0.8, 0.4], [0, 0, 0, 0, 1, 1], 0.5)
  assert (hand["tp"], hand["fp"], hand["fn"], hand["tn"]) == (1, 1, 1, 3)
  assert hand["precision"] == 0.5 and hand["recall"] == 0.5 and hand["f1"] == 0.5 and hand["fpr"] == 0.25
  none = threshold.decision_rates([0.1, 0.2], [0, 1], 1.0)  # nothing flagged
  assert none["precision"] == 0.0 and none["recall"] == 0.0 and none["f1"] == 0.0 and none["fpr"] == 0.0
  assert threshold.decision_rates([0.1, 0.2], [0, 0], 0.15)["recall"] is None  # no anomaly: recall undefined


def test_set_threshold_fpr_and_contamination():
  normal = np.arange(1.0, 21.0)  # 1..20
  anomalous = np.arange(101.0, 121.0)  # 101..120
  s = np.concatenate([normal, anomalous])
  is_anomaly = np.r_[np.zeros(20, bool), np.ones(20, bool)]
  fpr = threshold.set_threshold(s, is_anomaly, method="fpr", target=0.1)  # on the normal images only
  assert fpr == {"threshold": 18.0, "val_fpr": 0.1, "n_val_normal": 20}
  # contamination 0.5 of all 40 validation images: 20 flagged, the threshold is the 20th smallest = 20
  cont = threshold.set_threshold(s, is_anomaly, method="contamination", target=0.5)
  assert cont == {"threshold": 20.0, "val_fpr": 0.0, "n_val_normal": 20}
  assert threshold.choose(fpr=0.05, contamination=0.0) == ("fpr", 0.05)
  assert threshold.choose(fpr=0.05, contamination=0.2) == ("contamination", 0.2)
  assert threshold.set_threshold(anomalous, np.ones(20, bool), method="fpr", target=0.1) is None


@pytest.mark.parametrize("contamination", [0.0, 0.3])
def test_a_runs_thresholds_recomputed_from_its_saved_scores(tmp_path, contamination):
  config = tiny_config("vae")
  config.protocol.name = "one_vs_rest"
  config.protocol.classes = (1,)
  config.eval.iwae_samples = 8
  config.eval.iwae_chunk = 8
  config.eval.rapp_fit_examples = 40
  config.eval.threshold_fpr = 0.1
  config.eval.contamination = contamination
  config.data.binarize = False  # binarised, every toy image of a class is the same image: all scores tie
  wd = str(tmp_path / "wd")
  results = experiment.train_and_evaluate(config, wd, dataset=toy_dataset(n_train=300), log=lambda *_: None)
  method, target = ("contamination", 0.3) if contamination else ("fpr", 0.1)
  on_disk = json.load(open(os.path.join(wd, "thresholds.json")))
  assert set(on_disk) == {"score", "method", "target", "runs"}
  assert (on_disk["score"], on_disk["method"], on_disk["target"]) == ("recon", method, target)
  (run,) = results["runs"]
  saved = np.load(os.path.join(wd, "scores", f"{run['run']}.npz"))
  val, y_val = saved["val_recon"][:, 0], saved["y_val"]
  is_anomaly = y_val != 1
  pool = val[~is_anomaly] if method == "fpr" else val
  t = np.quantile(pool, 1 - target, method="inverted_cdf")
  mine = on_disk["runs"][run["run"]]
  assert mine == {"threshold": t, "val_fpr": np.mean(val[~is_anomaly] > t), "n_val_normal": int((~is_anomaly).sum())}
  if method == "fpr":
    assert mine["val_fpr"] == 0.1  # floor(0.1 x 10 normal validation images) = 1 of them lies above
  test, y = saved["recon"][:, 0], saved["y_test"] != 1
  section = results["threshold"]
  assert section["method"] == method and section["score"] == "recon"
  per_run = section["runs"][run["run"]]
  assert per_run["test_precision"] == pytest.approx(precision_score(y, test > t))
  assert per_run["test_recall"] == pytest.approx(recall_score(y, test > t))
  assert per_run["test_f1"] == pytest.approx(f1_score(y, test > t))
  assert per_run["test_fpr"] == pytest.approx(np.mean(test[~y] > t))
  assert section["test_f1_mean"] == per_run["test_f1"] and run["threshold"]["threshold"] == t
  assert 0 < per_run["test_precision"] < 1 or 0 < per_run["test_recall"] < 1  # a decision that is not trivial
