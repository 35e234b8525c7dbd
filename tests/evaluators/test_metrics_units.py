"""scoring.reduce_conditions and metrics.detection_metrics on hand-written inputs with known answers."""

import ml_collections
import numpy as np
import pytest

from dcvae_jax.data import protocols
from dcvae_jax.evaluators import metrics, scoring

# Three examples x (2 conditions + the all-zero-condition column, last), as the scorer returns them.
SCORES = np.array([[1.0, 3.0, 50.0], [4.0, 2.0, 60.0], [5.0, 5.0, -70.0]])
COUNTS = np.array([30.0, 10.0])  # training examples per condition: pi = (0.75, 0.25)


def reduce(how, name="recon", **kw):
  kw.setdefault("weights", COUNTS)
  return scoring.reduce_conditions(SCORES, name, how, conditional=True, **kw)


def test_min_is_over_the_conditions_only():
  np.testing.assert_array_equal(reduce("min"), [1.0, 2.0, 5.0])  # the zero-condition column (-70) is not one


@pytest.mark.parametrize("name", ["recon", "rapp", "rapp_sap"])
def test_marginal_of_an_error_score_is_the_frequency_weighted_mean(name):
  np.testing.assert_allclose(reduce("marginal", name), [0.75 * 1 + 0.25 * 3, 0.75 * 4 + 0.25 * 2, 5.0], rtol=1e-12)


@pytest.mark.parametrize("name", ["nelbo", "iwae"])
def test_marginal_of_a_negative_log_density_is_the_mixture(name):
  """-log p(x) = -log sum_c pi_c p(x|c) = -log sum_c pi_c exp(-S_c)."""
  want = -np.log(0.75 * np.exp(-SCORES[:, 0]) + 0.25 * np.exp(-SCORES[:, 1]))
  got = reduce("marginal", name)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert got[2] == pytest.approx(5.0, abs=1e-12)  # equal per-condition scores: the mixture is that score
  # the mixture lies between the best condition and the best condition plus -log of its weight
  assert np.all(got >= SCORES[:, :2].min(1) - 1e-12)
  np.testing.assert_allclose(got[0], 1.0 - np.log(0.75 + 0.25 * np.exp(-2.0)), rtol=1e-12)


def test_marginal_log_density_is_stable_for_large_scores():
  """Negative log-likelihoods of thousands of nats: exp(-S) underflows, the shifted logsumexp does not."""
  scores = np.array([[3000.0, 3002.0, 0.0], [10000.0, 10000.0, 0.0]], np.float32)
  got = scoring.reduce_conditions(scores, "iwae", "marginal", conditional=True, weights=[1, 3])
  want = np.array([3000.0 - np.log(0.25 + 0.75 * np.exp(-2.0)), 10000.0])
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_marginal_weights_are_normalised_and_a_zero_weight_condition_drops_out():
  np.testing.assert_allclose(reduce("marginal", weights=COUNTS * 7.0), reduce("marginal"), rtol=1e-12)
  with np.errstate(divide="ignore"):
    nll = reduce("marginal", "nelbo", weights=[5.0, 0.0])
  np.testing.assert_allclose(nll, SCORES[:, 0], rtol=1e-12)
  np.testing.assert_allclose(reduce("marginal", weights=[0.0, 2.0]), SCORES[:, 1], rtol=1e-12)


def test_given_takes_each_examples_own_condition_and_the_zero_condition_for_anomalies():
  cond_of_example = np.array([1, -1, 0])  # the second example's class is no condition: an anomaly
  np.testing.assert_array_equal(reduce("given", cond_of_example=cond_of_example), [3.0, 60.0, 5.0])
  tall = np.concatenate([SCORES, SCORES[::-1]])  # 6 images x 3 columns (rows and columns are not confused)
  got = scoring.reduce_conditions(tall, "recon", "given", conditional=True, cond_of_example=np.array([1, -1, 0] * 2))
  np.testing.assert_array_equal(got, [3.0, 60.0, 5.0, 5.0, 60.0, 1.0])
  np.testing.assert_array_equal(reduce("given", cond_of_example=np.array([0, 1, 1])), [1.0, 2.0, 5.0])


RUN = protocols.Run("class1_seed0", "1", 0, normal=(0, 2), anomalous=(1,), uid=1)


def test_reduce_scores_gives_an_anomaly_the_zero_condition_under_given():
  """reduce_scores finds each image's condition from its label: a normal class's position in run.normal, and the
  all-zero condition (the last column) for a class that is no condition, never condition 0's column."""
  protocol = ml_collections.ConfigDict({"score_condition": "given"})
  scores = np.concatenate([SCORES, [[7.0, 8.0, 9.0], [10.0, 11.0, 12.0]]])  # 5 images x 3 columns
  y = np.array([2, 1, 0, 1, 2])  # condition 1, an anomaly, condition 0, an anomaly, condition 1
  got = scoring.reduce_scores(RUN, {"recon": scores}, y, conditional=True, condition_counts=COUNTS, protocol=protocol)
  np.testing.assert_array_equal(got["recon"], [3.0, 60.0, 5.0, 9.0, 11.0])


def test_reduce_scores_mixes_each_score_by_its_kind_under_marginal():
  """Under marginal, reduce_scores hands each score its name and the training counts: a mixture of densities for
  nelbo / iwae, a weighted mean for recon / rapp."""
  protocol = ml_collections.ConfigDict({"score_condition": "marginal"})
  scores = {name: SCORES for name in scoring.DEVICE_SCORES}
  got = scoring.reduce_scores(
    RUN, scores, np.array([0, 1, 2]), conditional=True, condition_counts=COUNTS, protocol=protocol
  )
  mixture = -np.log(0.75 * np.exp(-SCORES[:, 0]) + 0.25 * np.exp(-SCORES[:, 1]))
  for name in ("nelbo", "iwae"):
    np.testing.assert_allclose(got[name], mixture, rtol=1e-12, err_msg=name)
  for name in ("recon", "rapp", "rapp_sap"):
    np.testing.assert_allclose(got[name], SCORES[:, :2] @ [0.75, 0.25], rtol=1e-12, err_msg=name)


def test_reduce_scores_derives_complexity_from_the_reduced_iwae():
  run = RUN
  protocol = ml_collections.ConfigDict({"score_condition": "min"})
  iwae = SCORES * np.log(2.0)  # nats; reduced by min over the two normal conditions: (1, 2, 5) bits
  got = scoring.reduce_scores(
    run,
    {"iwae": iwae},
    np.array([0, 1, 2]),
    conditional=True,
    condition_counts=COUNTS,
    protocol=protocol,
    length_bits=np.array([0.5, 1.0, 2.0]),
    offset_bits=10.0,
  )
  np.testing.assert_allclose(got["complexity"], [1.0 + 10.0 - 0.5, 2.0 + 10.0 - 1.0, 5.0 + 10.0 - 2.0], rtol=1e-12)
  bits = np.array([0.5, 1.0, 2.0])  # no offset given: none added (a discrete likelihood)
  got = scoring.reduce_scores(
    run,
    {"iwae": iwae},
    np.array([0, 1, 2]),
    conditional=True,
    condition_counts=COUNTS,
    protocol=protocol,
    length_bits=bits,
  )
  np.testing.assert_allclose(got["complexity"], [1.0 - 0.5, 2.0 - 1.0, 5.0 - 2.0], rtol=1e-12)
  assert "complexity" not in scoring.reduce_scores(
    run, {"iwae": iwae}, np.array([0, 1, 2]), conditional=True, condition_counts=COUNTS, protocol=protocol
  )


def test_unconditional_models_have_one_column_whatever_the_reduction():
  scores = np.array([[2.5], [-1.0], [7.0]])
  for how in scoring.SCORE_CONDITIONS:
    got = scoring.reduce_conditions(
      scores, "nelbo", how, conditional=False, cond_of_example=np.array([0, -1, 0]), weights=[1.0]
    )
    np.testing.assert_array_equal(got, [2.5, -1.0, 7.0])


def test_unknown_reduction_is_an_error():
  with pytest.raises(ValueError, match="unknown score_condition 'mean'.*min, marginal, given"):
    reduce("mean")


# ---------------------------------------------------------------------------------------------------------
# AUROC / AUPR (anomalies are the positive class).


def np_auroc(score, is_anomaly):
  """P(score of an anomaly > score of a normal example), ties counted 1/2, over all pairs."""
  pos, neg = score[is_anomaly], score[~is_anomaly]
  diff = pos[:, None] - neg[None, :]
  return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def np_average_precision(score, is_anomaly):
  """sum over the distinct thresholds t (descending) of (R(t) - R(previous t)) * P(t), flagging score >= t."""
  ap, prev_recall = 0.0, 0.0
  for t in np.unique(score)[::-1]:
    flagged = score >= t
    tp = np.sum(flagged & is_anomaly)
    recall, precision = tp / is_anomaly.sum(), tp / flagged.sum()
    ap += (recall - prev_recall) * precision
    prev_recall = recall
  return ap


def test_known_values():
  # ranked: 0.8 (anomaly), 0.4 (normal), 0.35 (anomaly), 0.1 (normal)
  score = np.array([0.1, 0.4, 0.35, 0.8])
  is_anomaly = np.array([0, 0, 1, 1])
  m = metrics.detection_metrics(score, is_anomaly)
  assert m["auroc"] == pytest.approx(0.75)  # 3 of the 4 pairs ordered right
  assert m["aupr"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)  # recall 1/2 at precision 1, then 1 at 2/3
  assert m["mean_normal"] == pytest.approx(0.25) and m["mean_anomalous"] == pytest.approx(0.575)
  assert m["nonfinite"] == 0


def test_separated_reversed_and_tied():
  is_anomaly = np.array([False, False, False, True, True])
  right = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
  m = metrics.detection_metrics(right, is_anomaly)
  assert m["auroc"] == 1.0 and m["aupr"] == 1.0
  m = metrics.detection_metrics(-right, is_anomaly)
  assert m["auroc"] == 0.0
  # anomalies ranked last: recall 1/2 at precision 1/4, recall 1 at precision 2/5
  assert m["aupr"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.4)
  m = metrics.detection_metrics(np.ones(5), is_anomaly)
  assert m["auroc"] == 0.5 and m["aupr"] == pytest.approx(0.4)  # all tied: one threshold, precision = prevalence


@pytest.mark.parametrize("seed", [0, 1])
def test_against_numpy_with_ties(seed):
  rng = np.random.default_rng(seed)
  is_anomaly = rng.random(60) < 0.3
  score = np.round(rng.normal(size=60) + 0.8 * is_anomaly, 1)  # rounded: many ties, also across the groups
  assert len(np.unique(score)) < 60
  m = metrics.detection_metrics(score, is_anomaly)
  assert m["auroc"] == pytest.approx(np_auroc(score, is_anomaly), abs=1e-12)
  assert m["aupr"] == pytest.approx(np_average_precision(score, is_anomaly), abs=1e-12)
  assert m["mean_normal"] == pytest.approx(score[~is_anomaly].mean())
  assert m["mean_anomalous"] == pytest.approx(score[is_anomaly].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_average_precision_equal_scikit_learns(seed):
  """A second, independent reference: scikit-learn's roc_auc_score and average_precision_score, on large sets
  with and without ties, float32 scores included."""
  from sklearn.metrics import average_precision_score, roc_auc_score

  rng = np.random.default_rng(seed)
  is_anomaly = rng.random(3000) < [0.1, 0.5, 0.9][seed]
  for score in (rng.normal(size=3000) + is_anomaly, np.round(rng.normal(size=3000) + is_anomaly, 1).astype(np.float32)):
    assert metrics.auroc(score, is_anomaly) == pytest.approx(roc_auc_score(is_anomaly, score), abs=1e-12)
    assert metrics.average_precision(score, is_anomaly) == pytest.approx(
      average_precision_score(is_anomaly, score), abs=1e-12
    )


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1]])
def test_auroc_of_one_kind_only_is_an_error(labels):
  is_anomaly = np.array(labels, bool)
  for fn in (metrics.auroc, metrics.average_precision):
    with pytest.raises(ValueError, match="both normal and anomalous"):
      fn(np.arange(is_anomaly.size, dtype=float), is_anomaly)


def test_nonfinite_scores_rank_as_most_anomalous_and_are_counted():
  score = np.array([0.1, np.nan, 0.3, np.inf, 0.9, 0.2])
  is_anomaly = np.array([0, 0, 1, 1, 1, 0], bool)
  m = metrics.detection_metrics(score, is_anomaly)
  assert m["nonfinite"] == 2
  replaced = np.array([0.1, 1.9, 0.3, 1.9, 0.9, 0.2])  # max finite score + 1
  assert m["auroc"] == pytest.approx(np_auroc(replaced, is_anomaly))
  assert m["aupr"] == pytest.approx(np_average_precision(replaced, is_anomaly))
  assert m["mean_normal"] == pytest.approx(np.mean([0.1, 1.9, 0.2]))
  m = metrics.detection_metrics(np.full(4, np.nan), np.array([0, 1, 0, 1], bool))  # every score diverged
  assert m["nonfinite"] == 4 and m["auroc"] == 0.5


def test_summary_counts_the_nonfinite_scores_of_every_run():
  """A run whose NAP fit had no finite difference has NaN rapp for every image: the summary says how many."""
  protocol = ml_collections.ConfigDict({"name": "split", "score": "recon", "score_condition": "min"})
  run = protocols.Run("split_seed0", "split", 0, normal=(0,), anomalous=(1,), uid=0)
  y = np.array([0, 0, 1, 1, 2])  # class 2 is in no run: dropped
  scores = {
    "recon": np.array([[1.0], [2.0], [3.0], [4.0], [0.0]]),
    "nelbo": np.array([[1.0], [2.0], [np.inf], [4.0], [0.0]]),
    "rapp": np.full((5, 1), np.nan),
  }
  one = metrics.evaluate_run(run, scores, y, conditional=False, condition_counts=[4.0], protocol=protocol)
  assert (one["recon_nonfinite"], one["nelbo_nonfinite"], one["rapp_nonfinite"]) == (0, 1, 4)
  summary = metrics.summarize([one, one], score="recon", score_condition="min")
  assert summary["nonfinite_by_score"] == {"recon": 0, "nelbo": 2, "rapp": 8}
  table = metrics.format_table({"model": "vae", "dataset": "toy", "protocol": "split", "train_seconds": 1.0, **summary})
  assert "non-finite scores (ranked most anomalous): nelbo 2  rapp 8" in table
