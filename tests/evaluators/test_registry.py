"""Evaluators are plug-ins (dcvae_jax/evaluators/registry.py): eval.evaluators chooses them by name, a bad
name is one ConfigError line, and each chosen evaluator writes only its own part of the results."""

import json
import os

import ml_collections
import numpy as np
import pytest

from dcvae_jax import experiment
from dcvae_jax.errors import ConfigError
from dcvae_jax.evaluators import detection, latents, registry, tensorboard
from dcvae_jax.validation import validate
from tests.helpers import tiny_config, toy_dataset

KNOWN = "known: detection, latents, tensorboard"


@pytest.mark.parametrize(
  "names, message",
  [
    (("detection", "umap"), f"eval.evaluators: unknown evaluator 'umap'; {KNOWN}"),
    ("detection", f"eval.evaluators must be a tuple of evaluator names, got 'detection'; {KNOWN}"),
    (("(detection,latents)",), "as a tuple of quoted names"),  # what an unquoted command line gives
    (("latents", "tensorboard"), "eval.evaluators: 'tensorboard' reads the results of 'detection': add it"),
  ],
)
def test_a_bad_evaluator_choice_is_one_config_error_line(names, message):
  config = tiny_config()
  config.eval = ml_collections.ConfigDict(config.eval.to_dict(), type_safe=False)  # from Python, anything goes
  config.eval.evaluators = names
  with pytest.raises(ConfigError) as e:
    validate(config)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_the_registry_refuses_an_unknown_name_and_keeps_its_own_order():
  with pytest.raises(ConfigError) as e:
    registry.get(("latents", "umap"))
  assert str(e.value) == f"eval.evaluators: unknown evaluator 'umap'; {KNOWN}"
  assert registry.get(("tensorboard", "latents", "detection")) == [
    detection.Evaluator,
    latents.Evaluator,
    tensorboard.Evaluator,
  ]
  assert registry.get(()) == []


DETECTION_RUN_KEYS = ("auroc", "recon_auroc", "num_test_normal", "threshold_by_score", "val_auroc_by_score")
LATENTS_RUN_KEYS = ("class_mig", "dis_num_images")


def _config(evaluators):
  config = tiny_config("vae")
  config.protocol.name = "one_vs_rest"
  config.protocol.classes = (1,)
  config.data.binarize = False
  config.eval.iwae_samples = config.eval.iwae_chunk = 4
  config.eval.rapp_fit_examples = config.eval.reference_examples = 40
  config.eval.evaluators = evaluators
  return config


def _evaluate(wd, evaluators):
  """train_and_evaluate in ``wd`` (trained once; each other choice rescores the checkpoints), and what it wrote."""
  results = experiment.train_and_evaluate(
    _config(evaluators), wd, dataset=toy_dataset(n_train=300), log=lambda *_: None
  )
  (run,) = results["runs"]
  saved = os.path.join(wd, "scores", f"{run['run']}.npz")
  return dict(
    results=results,
    run=json.load(open(os.path.join(wd, "runs", f"{run['run']}.json"))),
    arrays=dict(np.load(saved)) if os.path.exists(saved) else {},
    lines=sum(1 for _ in open(os.path.join(wd, "metrics.jsonl"))),
  )


@pytest.fixture(scope="module")
def by_choice(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("evaluators") / "wd")
  out = {}
  for names in [("detection", "latents", "tensorboard"), ("latents",), ("detection",), ()]:
    out[names] = _evaluate(wd, names)
    out[names]["thresholds"] = os.path.exists(os.path.join(wd, "thresholds.json"))
  return out


@pytest.mark.slow
def test_a_subset_of_evaluators_gives_only_their_parts_of_the_results(by_choice):
  full, only_latents, only_detection, none = (
    by_choice[k] for k in [("detection", "latents", "tensorboard"), ("latents",), ("detection",), ()]
  )
  assert len({c["lines"] for c in by_choice.values()}) == 1  # trained once: the others rescored the checkpoints
  for key in DETECTION_RUN_KEYS + LATENTS_RUN_KEYS:
    assert key in full["run"], key
  # latents alone: codes and disentanglement, no score, metric or threshold
  assert not any(k in only_latents["run"] for k in DETECTION_RUN_KEYS)
  assert {k: only_latents["run"][k] for k in LATENTS_RUN_KEYS} == {k: full["run"][k] for k in LATENTS_RUN_KEYS}
  assert set(only_latents["arrays"]) == {"codes"}
  assert "class_mig_mean" in only_latents["results"] and "score" not in only_latents["results"]
  assert not any(k.endswith("auroc_mean") or k.startswith("auroc") for k in only_latents["results"])
  assert not only_latents["thresholds"]
  # detection alone: the same scores and metrics as with every evaluator, no codes
  assert not any(k.startswith("dis_") or k.startswith("class_mig") for k in only_detection["run"])
  assert "codes" not in only_detection["arrays"] and "codes" in full["arrays"]
  assert set(only_detection["arrays"]) == set(full["arrays"]) - {"codes"}
  for name, values in only_detection["arrays"].items():
    np.testing.assert_array_equal(values, full["arrays"][name], err_msg=name)
  for key in ("auroc", "recon_auroc", "threshold_by_score", "val_auroc_by_score"):
    assert only_detection["run"][key] == full["run"][key], key
  assert only_detection["results"]["auroc_mean"] == full["results"]["auroc_mean"]
  assert "class_mig_mean" not in only_detection["results"] and only_detection["thresholds"] and full["thresholds"]
  # none: the runs are trained, and who they are is all their results hold
  who = {"run", "label", "seed", "normal", "anomalous", "group_train_seconds", "skipped_updates", "identity"}
  assert set(none["run"]) == who
  assert none["arrays"] == {} and not none["thresholds"]
  assert {"model", "dataset", "protocol", "num_runs", "train_seconds", "runs", "settings"} <= set(none["results"])
