"""Nothing stale, ever: a rerun of a workdir with other training settings is refused (more epochs continue),
with other scoring settings rescored without training, with other neutral settings reused; config.json always
describes results.json; every config field is classified."""

import copy
import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil

import ml_collections
import numpy as np
import pytest

from dcvae_jax import errors, experiment, workdir
from dcvae_jax.config import base_config
from dcvae_jax.train import trainer
from tests.cli import REPO, SMOKE, error_line, run_cli
from tests.helpers import assert_trees_equal, tiny_config, toy_dataset, toy_runs, train_toy

CLASSES = {"training": workdir.TRAINING_FIELDS, "scoring": workdir.SCORING_FIELDS, "neutral": workdir.NEUTRAL_FIELDS}
QUIET = dict(log=lambda *_: None)


def _leaves(cfg, prefix=""):
  for key, value in cfg.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}"


def _all_configs():
  yield "base_config()", base_config()
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    spec = importlib.util.spec_from_file_location(f"_config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for arg in ("", "smoke", "best"):
      try:
        config = module.get_config(arg)
      except ValueError:  # a config without this argument (default.py, folder.py have no "best")
        continue
      yield f"{os.path.relpath(path, REPO)}:{arg}", config


def test_every_config_field_is_in_exactly_one_class():
  named = [name for names in CLASSES.values() for name in names]
  assert len(named) == len(set(named)), "a field is listed twice"
  base = set(_leaves(base_config()))
  assert set(named) <= base, f"classified fields that base_config() lacks: {sorted(set(named) - base)}"
  seen = 0
  for where, config in _all_configs():
    for field in _leaves(config):
      classes = [c for c, names in CLASSES.items() if field in names]
      assert len(classes) == 1, f"{where}: {field} is in {classes or 'no class'} (classify it in dcvae_jax/workdir.py)"
      seen += 1
  assert seen > 30 * len(glob.glob(os.path.join(REPO, "configs", "*.py")))


def _changed(value):
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 1
  if isinstance(value, float):
    return value * 2 + 1
  if isinstance(value, str):
    return value + "_x"
  if isinstance(value, tuple):
    return value + (1,)
  raise AssertionError(f"no change for {value!r}")


def _with(config, field, value):
  config = copy.deepcopy(config)
  *parents, leaf = field.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value
  return config


def _get(config, field):
  for part in field.split("."):
    config = config[part]
  return config


def _same(a, b) -> bool:
  """Equal as JSON (tuples as lists, NaN equal to NaN)."""
  return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _snapshot(wd) -> dict:
  """Every file of the workdir (but the transient lock) and its bytes."""
  out = {}
  for root, _, names in os.walk(wd):
    for name in names:
      path = os.path.join(root, name)
      if name != ".lock":
        with open(path, "rb") as f:
          out[os.path.relpath(path, wd)] = f.read()
  return out


def test_a_workdir_of_the_flat_model_layout_is_read_compatibly(tmp_path):
  """A trained.json written with the flat model fields of earlier versions (model.tc_beta, model.factor_gamma,
  ...: config.MOVED_FIELDS) reads as the sections that replace them: the same config resumes it and writes
  nothing; another weight is refused under its new name; an old config.json loads as a full config."""
  from dcvae_jax.config import MOVED_FIELDS, OLD_NAME, from_saved

  wd = str(tmp_path / "wd")
  base = base_config()
  workdir.check_workdir(base, wd)
  path = os.path.join(wd, workdir.TRAINED_FILE)
  record = _json(wd, workdir.TRAINED_FILE)
  for new, old in OLD_NAME.items():
    record["training"][old] = record["training"].pop(new)
  assert set(MOVED_FIELDS) <= set(record["training"])
  with open(path, "w") as f:
    json.dump(record, f)
  before = _snapshot(wd)
  assert workdir.check_workdir(base, wd) is None
  assert _snapshot(wd) == before
  with pytest.raises(errors.WorkdirError, match=re.escape("model.dcvae.tc_beta: 6.0 -> 3.0")):
    workdir.check_workdir(_with(base, "model.dcvae.tc_beta", 3.0), wd)
  # An old config.json (flat weights, a field since removed, lists for tuples) -> every field of base_config.
  saved = json.loads(base.to_json())
  for section in ("beta_vae", "beta_tcvae", "dcvae", "factor_vae", "rf_vae"):
    del saved["model"][section]
  saved["model"].update(tc_beta=3.0, factor_gamma=2.0, beta=5.0)
  saved["train"]["no_longer_a_field"] = 1
  del saved["eval"]["contamination"]  # written before the field existed: its default
  config = from_saved(saved)
  assert config.model.dcvae.tc_beta == config.model.beta_tcvae.tc_beta == 3.0
  assert config.model.factor_vae.gamma == config.model.rf_vae.gamma == 2.0 and config.model.beta_vae.beta == 5.0
  assert config.eval.contamination == 0.0 and "no_longer_a_field" not in config.train
  assert isinstance(config.model.hidden, tuple)
  assert json.loads(from_saved(json.loads(base.to_json())).to_json()) == json.loads(base.to_json())


def test_check_workdir_refuses_every_training_field_and_only_those(tmp_path):
  """No training: check_workdir against a recorded base config, one field changed at a time."""
  wd = str(tmp_path / "wd")
  base = base_config()
  assert workdir.check_workdir(base, wd) is None  # a fresh workdir: recorded
  before = _snapshot(wd)
  assert list(before) == [workdir.TRAINED_FILE]
  for field in workdir.TRAINING_FIELDS:
    value = _changed(_get(base, field))
    if field == "train.num_epochs":
      value = _get(base, field) - 1  # fewer epochs: refused (more continue, below)
    with pytest.raises(errors.WorkdirError, match=re.escape(f"{field}: {_get(base, field)!r} -> {value!r}")):
      workdir.check_workdir(_with(base, field, value), wd)
    assert _snapshot(wd) == before, field
  for field in workdir.SCORING_FIELDS + workdir.NEUTRAL_FIELDS:
    workdir.check_workdir(_with(base, field, _changed(_get(base, field))), wd)
    assert _snapshot(wd) == before, field
  # Two differences: one line naming both.
  with pytest.raises(errors.WorkdirError) as e:
    workdir.check_workdir(_with(_with(base, "model.beta_vae.beta", 2.0), "train.learning_rate", 0.01), wd)
  assert "model.beta_vae.beta: 4.0 -> 2.0; train.learning_rate: 0.001 -> 0.01" in str(e.value)
  assert "\n" not in str(e.value)
  # Other training images (same config): refused.
  ds = toy_dataset()
  wd2 = str(tmp_path / "wd2")
  workdir.check_workdir(base, wd2, workdir.data_fingerprints(ds))
  with pytest.raises(errors.WorkdirError, match="training images"):
    workdir.check_workdir(base, wd2, workdir.data_fingerprints(toy_dataset(seed=1)))
  # More epochs continue at a constant rate, recorded; a schedule that depends on the step count refuses them.
  more = _with(base, "train.num_epochs", base.train.num_epochs + 5)
  assert "training continues" in workdir.check_workdir(more, wd)
  assert json.load(open(os.path.join(wd, workdir.TRAINED_FILE)))["training"]["train.num_epochs"] == 25
  cosine = _with(base, "train.lr_schedule", "warmup_cosine")
  workdir.check_workdir(cosine, str(tmp_path / "cos"))
  with pytest.raises(errors.WorkdirError, match="warmup_cosine schedule depends on the total step count"):
    workdir.check_workdir(_with(cosine, "train.num_epochs", 25), str(tmp_path / "cos"))
  # Checkpoints nobody recorded: refused.
  os.makedirs(tmp_path / "bare" / "checkpoints" / "class0_seed0")
  with pytest.raises(errors.WorkdirError, match="without a record"):
    workdir.check_workdir(base, str(tmp_path / "bare"))


LATER = ("eval.evaluators", "eval.knn_neighbours", "eval.complexity_compressor")


@pytest.mark.parametrize(
  "field, other",
  [("eval.evaluators", ("detection",)), ("eval.knn_neighbours", 5), ("eval.complexity_compressor", "jpeg2000")],
)
def test_a_later_scoring_field_at_its_default_keeps_the_identity_it_had_before_the_field(field, other):
  """A later scoring field (eval.evaluators, eval.knn_neighbours, eval.complexity_compressor) at its default
  computes what ran before the field existed: the identity is the one results written then carry (the same hash
  without the fields that came later than them), so they stay reusable; another value rescores."""
  config = base_config()
  before = {
    "training": workdir.field_values(config, workdir.TRAINING_FIELDS),
    "scoring": workdir.field_values(config, [f for f in workdir.SCORING_FIELDS if f not in LATER]),
    "data": {},
  }
  want = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
  assert workdir.LATER_SCORING_FIELDS == LATER
  assert workdir.results_identity(config) == want
  section, name = field.split(".")
  config[section][name] = other
  assert workdir.results_identity(config) != want


def test_neutral_training_fields_train_bitwise_the_same(tmp_path):
  """What makes train.steps_per_call and train.checkpoint_every_steps neutral."""
  ds = toy_dataset()

  def train(name, **train):
    config = tiny_config("beta_tcvae", num_epochs=2, **train)
    return train_toy(config, ds, toy_runs(config, ds, (0,)), tmp_path / name)[0]

  reference = train("a", steps_per_call=4, checkpoint_every_steps=1000)
  assert_trees_equal(reference, train("b", steps_per_call=7, checkpoint_every_steps=1000))
  assert_trees_equal(reference, train("c", steps_per_call=4, checkpoint_every_steps=1))


# End to end on the command line: the smoke config on the shipped mnist5k digits, one epoch (50 steps).


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("finished") / "wd")
  proc = run_cli(*SMOKE, f"--workdir={wd}")
  assert proc.returncode == 0, proc.stderr
  return wd


@pytest.fixture
def wd(finished, tmp_path):
  path = str(tmp_path / "wd")
  shutil.copytree(finished, path)
  return path


def _json(wd, name):
  with open(os.path.join(wd, name)) as f:
    return json.load(f)


def _ckpt_steps(wd):
  return sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints", "class0_seed0")) if s.isdigit())


@pytest.mark.parametrize(
  "args, named",
  [
    (["--config.model.beta_vae.beta=2.0"], ["model.beta_vae.beta: 4.0 -> 2.0"]),
    (["--config.train.learning_rate=0.01"], ["train.learning_rate: 0.001 -> 0.01"]),
    (
      ["--config.model.dcvae.tc_beta=3.0", "--config.data.dequantize=True", "--config.data.binarize=False"],
      ["model.dcvae.tc_beta: 6.0 -> 3.0", "data.binarize: True -> False", "data.dequantize: False -> True"],
    ),
  ],
  ids=["beta", "learning_rate", "three"],
)
def test_other_training_settings_are_refused_and_nothing_changes(wd, args, named):
  before = _snapshot(wd)
  line = error_line(run_cli(*SMOKE, f"--workdir={wd}", *args, timeout=120))
  assert "holds a different run" in line and all(n in line for n in named), line
  assert _snapshot(wd) == before


def test_more_epochs_continue_training_and_results_follow(wd):
  first = _json(wd, "results.json")
  proc = run_cli(*SMOKE, f"--workdir={wd}", "--config.train.num_epochs=2")
  assert proc.returncode == 0, proc.stderr
  assert "train.num_epochs: 1 -> 2: training continues" in proc.stderr
  assert "resuming 1 run(s) from step 50 of 100" in proc.stderr
  assert _ckpt_steps(wd)[-1] == 100
  steps = [json.loads(line)["step"] for line in open(os.path.join(wd, "metrics.jsonl"))]
  assert steps[-1] == 100 and min(s for s in steps if s > 50) <= 60
  again = _json(wd, "results.json")
  assert again["train_seconds"] > first["train_seconds"]  # one epoch more, counted on top of the first
  assert again["A_normal_mean"] != first["A_normal_mean"] and again["auroc_by_score"] != first["auroc_by_score"]
  assert _json(wd, "config.json")["train"]["num_epochs"] == 2  # config.json describes the new results
  assert _json(wd, workdir.TRAINED_FILE)["training"]["train.num_epochs"] == 2
  assert _json(wd, "runs/class0_seed0.json")["A_normal"] == again["A_normal_mean"]
  # Fewer epochs than the checkpoints hold: refused, nothing touched.
  before = _snapshot(wd)
  line = error_line(run_cli(*SMOKE, f"--workdir={wd}", timeout=120))
  assert "train.num_epochs: 2 -> 1" in line
  assert _snapshot(wd) == before


def test_other_scoring_settings_rescore_without_training(wd):
  first = _json(wd, "results.json")
  first_scores = dict(np.load(os.path.join(wd, "scores", "class0_seed0.npz")))
  before = _snapshot(wd)
  args = ["--config.protocol.score=nelbo", "--config.eval.iwae_samples=32"]
  proc = run_cli(*SMOKE, f"--workdir={wd}", *args)
  assert proc.returncode == 0, proc.stderr
  assert "protocol.score: 'recon' -> 'nelbo'; eval.iwae_samples: 16 -> 32): scoring again" in proc.stderr
  assert "resuming" not in proc.stderr
  after = _snapshot(wd)
  for name in before:  # no training: no new metrics, no new or changed checkpoint
    if name.startswith(("checkpoints", "metrics.jsonl", "tensorboard", workdir.TRAINED_FILE)):
      assert after[name] == before[name], name
  assert {n for n in after if n.startswith("checkpoints")} == {n for n in before if n.startswith("checkpoints")}
  again = _json(wd, "results.json")
  assert again["train_seconds"] == first["train_seconds"]
  assert again["score"] == "nelbo" and again["auroc_mean"] == first["auroc_by_score"]["nelbo"]
  assert again["auroc_by_score"]["recon"] == first["auroc_by_score"]["recon"]  # same model, same scores
  run = _json(wd, "runs/class0_seed0.json")
  assert run["iwae_auroc"] == again["auroc_by_score"]["iwae"] != first["auroc_by_score"]["iwae"]  # K = 32
  scores = np.load(os.path.join(wd, "scores", "class0_seed0.npz"))
  np.testing.assert_array_equal(scores["recon"], first_scores["recon"])
  assert not np.array_equal(scores["iwae"], first_scores["iwae"])
  config = _json(wd, "config.json")
  assert config["protocol"]["score"] == "nelbo" and config["eval"]["iwae_samples"] == 32


def test_other_neutral_settings_reuse_the_results(wd):
  before = _snapshot(wd)
  first = _json(wd, "results.json")
  args = ["--config.train.steps_per_call=7", "--config.train.log_every_steps=3", "--config.train.tensorboard=False"]
  proc = run_cli(*SMOKE, f"--workdir={wd}", *args, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "scoring again" not in proc.stderr and "resuming" not in proc.stderr
  after = _snapshot(wd)
  for name in before:  # nothing retrained, nothing rescored
    if not name.endswith(("results.json", "config.json")):
      assert after[name] == before[name], name
  again = _json(wd, "results.json")
  assert _same(again["runs"], first["runs"]) and again["auroc_mean"] == first["auroc_mean"]
  assert _json(wd, "config.json")["train"]["steps_per_call"] == 7


# In process, on a toy dataset: what a crash in the middle leaves, and what a continued run equals.


def _toy_config(**train):
  config = tiny_config("vae", **train)
  config.protocol.classes = (0, 1)
  config.train.runs_per_program = 1  # two groups: one can finish while the other has not
  config.eval.iwae_samples = 8
  config.eval.iwae_chunk = 8
  config.eval.rapp_fit_examples = 32
  config.eval.reference_examples = 16
  return config


class _Crash(Exception):
  pass


def _crash_on_call(monkeypatch, n):
  """trainer.train_runs raises on its n-th call (1-based) from now on; returns the list of its calls."""
  calls, real = [], trainer.train_runs

  def train_runs(config, *args, **kw):
    calls.append(config.train.num_epochs)
    if len(calls) == n:
      raise _Crash()
    return real(config, *args, **kw)

  monkeypatch.setattr(trainer, "train_runs", train_runs)
  return calls


def test_a_continued_run_equals_a_longer_one(tmp_path):
  ds = toy_dataset()
  straight = experiment.train_and_evaluate(_toy_config(num_epochs=2), str(tmp_path / "a"), dataset=ds, **QUIET)
  once = experiment.train_and_evaluate(_toy_config(num_epochs=1), str(tmp_path / "b"), dataset=ds, **QUIET)
  continued = experiment.train_and_evaluate(_toy_config(num_epochs=2), str(tmp_path / "b"), dataset=ds, **QUIET)
  assert continued["auroc_by_score"] == straight["auroc_by_score"] != once["auroc_by_score"]
  for run in ("class0_seed0", "class1_seed0"):
    a = np.load(tmp_path / "a" / "scores" / f"{run}.npz")
    b = np.load(tmp_path / "b" / "scores" / f"{run}.npz")
    np.testing.assert_array_equal(a["nelbo"], b["nelbo"])


def test_interrupted_rescoring_leaves_nothing_stale(tmp_path, monkeypatch):
  ds = toy_dataset()
  wd = str(tmp_path / "wd")
  config = _toy_config()
  first = experiment.train_and_evaluate(config, wd, dataset=ds, **QUIET)
  before = _snapshot(wd)
  other = _with(config, "eval.elbo_samples", 5)
  calls = _crash_on_call(monkeypatch, 2)  # the second group of runs crashes: the first is rescored
  with pytest.raises(_Crash):
    experiment.train_and_evaluate(other, wd, dataset=ds, **QUIET)
  after = _snapshot(wd)
  assert after["config.json"] == before["config.json"] and after["results.json"] == before["results.json"]
  assert after["runs/class0_seed0.json"] != before["runs/class0_seed0.json"]  # rescored under the other config
  # The first config again: its first run must be scored again (its file holds the other config's results),
  # the second reused; the results are the first run's exactly.
  calls.clear()
  again = experiment.train_and_evaluate(config, wd, dataset=ds, **QUIET)
  assert len(calls) == 1
  assert _same(again["runs"], first["runs"])
  assert _snapshot(wd)["config.json"] == before["config.json"]


def test_interrupted_continuation_refuses_fewer_epochs_and_stale_reports(tmp_path, monkeypatch):
  ds = toy_dataset()
  wd = str(tmp_path / "wd")
  experiment.train_and_evaluate(_toy_config(num_epochs=1), wd, dataset=ds, **QUIET)
  config_before = _snapshot(wd)["config.json"]
  _crash_on_call(monkeypatch, 2)  # the first group trains its second epoch, the second crashes
  with pytest.raises(_Crash):
    experiment.train_and_evaluate(_toy_config(num_epochs=2), wd, dataset=ds, **QUIET)
  monkeypatch.undo()
  assert _snapshot(wd)["config.json"] == config_before  # still the config of results.json (1 epoch)
  with pytest.raises(errors.WorkdirError, match=re.escape("train.num_epochs: 2 -> 1")):
    experiment.train_and_evaluate(_toy_config(num_epochs=1), wd, dataset=ds, **QUIET)
  with pytest.raises(errors.WorkdirError, match="trained with other settings than its results"):
    experiment.load_trained(wd, dataset=ds)
  results = experiment.train_and_evaluate(_toy_config(num_epochs=2), wd, dataset=ds, **QUIET)
  assert _json(wd, "config.json")["train"]["num_epochs"] == 2
  assert _same(results["runs"], _json(wd, "results.json")["runs"])
  experiment.load_trained(wd, dataset=ds)


def test_a_workdir_from_before_the_record_is_rescored_not_retrained(tmp_path):
  """A workdir written before trained.json and the runs' identity: checked against its config.json."""
  ds = toy_dataset()
  wd = str(tmp_path / "wd")
  config = _toy_config()
  first = experiment.train_and_evaluate(config, wd, dataset=ds, **QUIET)
  os.remove(os.path.join(wd, workdir.TRAINED_FILE))
  for path in glob.glob(os.path.join(wd, "runs", "*.json")):
    result = _json(wd, os.path.relpath(path, wd))
    del result["identity"]
    with open(path, "w") as f:
      json.dump(result, f)
  metrics = _snapshot(wd)["metrics.jsonl"]
  with pytest.raises(errors.WorkdirError, match="model.beta_vae.beta"):
    experiment.train_and_evaluate(_with(config, "model.beta_vae.beta", 2.0), wd, dataset=ds, **QUIET)
  again = experiment.train_and_evaluate(config, wd, dataset=ds, **QUIET)
  assert _same(again["runs"], first["runs"]) and _snapshot(wd)["metrics.jsonl"] == metrics
  assert os.path.exists(os.path.join(wd, workdir.TRAINED_FILE))


def test_a_finished_auto_score_job_is_reused_not_evaluated_again(tmp_path, monkeypatch):
  """protocol.score="auto" rewrites every run's results with the chosen headline; they keep their identity, so
  the same job again reads them back and neither trains nor scores."""
  ds = toy_dataset()
  config = _toy_config(num_epochs=1)
  config.protocol.score = "auto"
  first = experiment.train_and_evaluate(config, str(tmp_path), dataset=ds, **QUIET)
  assert first["score_selection"] == "validation"
  calls = _crash_on_call(monkeypatch, 1)
  again = experiment.train_and_evaluate(config, str(tmp_path), dataset=ds, **QUIET)
  assert calls == [] and again["score"] == first["score"]
  assert again["auroc_by_score"] == first["auroc_by_score"]
