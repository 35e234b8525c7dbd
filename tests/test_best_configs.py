"""configs/<dataset>.py:best is the ablation's best detector; no argument stays the paper's model."""

import importlib.util
import pathlib

import pytest

from dcvae_jax.config import BEST_DETECTOR
from dcvae_jax.evaluators import scoring
from dcvae_jax.models import registry as models
from dcvae_jax.validation import validate

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# Each dataset's changes to BEST_DETECTOR (docs/results/validation.md, chosen on validation AUROC): MNIST's `:best`
# is row `gpp+cos` (50 epochs, the warm-up + cosine schedule); the others carry Fashion-MNIST's `gpp` at 100 epochs.
DATASET_CHANGES = {
  "mnist": dict(
    num_epochs=50,
    lr_schedule="warmup_cosine",
    score="sap_complexity",
    knn_neighbours=1,
    complexity_compressor="png",
    iwae_samples=16,
    reference_examples=200,
  ),
  "fashion_mnist": {},
  "kmnist": {},
  "emnist": {},
}

# Where each BEST_DETECTOR key lands in the config.
FIELDS = {
  "model": "model.name",
  "arch": "model.arch",
  "hidden": "model.hidden",
  "latent_dim": "model.latent_dim",
  "binarize": "data.binarize",
  "dequantize": "data.dequantize",
  "likelihood": "model.likelihood",
  "gaussian_variance": "model.gaussian_variance",
  "score": "protocol.score",
  "knn_neighbours": "eval.knn_neighbours",
  "complexity_compressor": "eval.complexity_compressor",
  "scores": "eval.scores",
  "num_epochs": "train.num_epochs",
  "lr_schedule": "train.lr_schedule",
  "iwae_samples": "eval.iwae_samples",
  "reference_examples": "eval.reference_examples",
}


def _field(config, path):
  for part in path.split("."):
    config = config[part]
  return tuple(config) if isinstance(config, (list, tuple)) else config


@pytest.mark.parametrize("name", sorted(DATASET_CHANGES))
def test_best_config_is_best_detector_with_the_datasets_changes(name):
  assert set(FIELDS) == set(BEST_DETECTOR)  # a new key of BEST_DETECTOR needs its place here
  module = _load(name)
  best = module.get_config("best")
  want = {**BEST_DETECTOR, **DATASET_CHANGES[name]}
  got = {key: _field(best, path) for key, path in FIELDS.items()}
  assert got == {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in want.items()}
  assert best.model.name in models.MODELS and best.protocol.score in scoring.SCORES
  assert best.model.likelihood in models.LIKELIHOODS
  validate(best)
  # Everything else is the dataset's default config: the protocol stays the config's.
  default = module.get_config("")
  assert best.protocol.name == default.protocol.name and best.data.name == default.data.name
  assert "BEST_ROW" in module.__doc__


@pytest.mark.parametrize("name", sorted(DATASET_CHANGES))
def test_default_config_stays_the_papers_model(name):
  default = _load(name).get_config("")
  assert default.model.name == "dcvae" and default.data.binarize and default.model.likelihood == "bernoulli"
  assert default.protocol.score == "recon"


@pytest.mark.parametrize("name", ["mnist_paper", "fashion_mnist_paper", "kmnist_paper", "emnist_paper"])
def test_paper_configs_keep_the_binarised_bernoulli(name):
  config = _load(name).get_config("")
  assert config.data.binarize and config.model.likelihood == "bernoulli" and config.protocol.score == "recon"


def test_best_detector_fields():
  """The validation study's choice for Fashion-MNIST (docs/results/validation.md): the VAE, MLP 512-256, d = 10,
  Gaussian with learned per-pixel variance on dequantised grey levels, scored by sap_complexity_knn among all ten
  scores with latent_knn over 5 neighbours (stage 12), complexity's L(x) from lossless JPEG 2000 (stage 14), IWAE
  K = 64 and 1000 reference images (stage 15), 50 epochs at a constant rate (stage 16)."""
  assert BEST_DETECTOR == dict(
    model="vae",
    arch="mlp",
    hidden=(512, 256),
    latent_dim=10,
    binarize=False,
    dequantize=True,
    likelihood="gaussian",
    gaussian_variance="per_pixel",
    score="sap_complexity_knn",
    knn_neighbours=5,
    complexity_compressor="jpeg2000",
    scores=(),
    num_epochs=50,
    lr_schedule="constant",
    iwae_samples=64,
    reference_examples=1000,
  )


# What each candidate row of docs/results/make_validation.sh sets, as BEST_DETECTOR keys (ablation.sh's tokens;
# a row without `wide` keeps the MLP 512-256).
GPP = dict(
  binarize=False,
  dequantize=True,
  likelihood="gaussian",
  gaussian_variance="per_pixel",
  hidden=(512, 256),
  knn_neighbours=1,
  complexity_compressor="png",
  iwae_samples=16,  # every row of the study is scored at K = 16 with 200 reference images unless it names others
  reference_examples=200,
)
ROW_SETTINGS = {
  "paper": dict(
    binarize=True,
    dequantize=False,
    likelihood="bernoulli",
    hidden=(512, 256),
    knn_neighbours=1,
    complexity_compressor="png",
    iwae_samples=16,
    reference_examples=200,
  ),
  "gpp": GPP,
  "gpp+cos": {**GPP, "lr_schedule": "warmup_cosine"},
}
J2K = {**GPP, "knn_neighbours": 5, "complexity_compressor": "jpeg2000"}
LATER_ROWS = {  # stage 10's, 12's, 13's, 14's and 15's one-vs-rest candidates
  "gpp+wide": {**GPP, "hidden": (1024, 512)},
  **{f"gpp+k{k}": {**GPP, "knn_neighbours": k} for k in (5, 20)},
  "gpp+k5+j2k": J2K,
  "gpp+k5+j2k+iw64": {**J2K, "iwae_samples": 64},
  "gpp+k5+j2k+ref1000": {**J2K, "reference_examples": 1000},
  "gpp+k5+j2k+iw64+ref1000": {**J2K, "iwae_samples": 64, "reference_examples": 1000},
}


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_best_config_is_the_validation_studys_choice(name):
  """`:best` is what the study's committed tables choose on validation AUROC, as `ablation --choose` does: the
  candidate row of stages 1-2 (docs/results/validation_<dataset>_one_vs_rest.json); then, where that row was
  scored with all ten scores (stage 8 / 9: ..._one_vs_rest_knn.json), its best score there; where stage 9 compared
  larger latents with it (..._one_vs_rest_stage9.json), the row must have stayed the choice; where stage 10
  compared the wider MLP (..._one_vs_rest_stage10.json), its choice (setting and score); where stage 11 compared
  100 epochs with stage 10's settings (..._one_vs_rest_stage11.json), its choice, epochs included; where stage 12
  compared latent_knn's k on that choice (..._one_vs_rest_stage12.json, pooled over seeds), its choice; where
  stage 13 compared 150 epochs of it (..._one_vs_rest_stage13.json), or stage 14 JPEG 2000 as complexity's
  compressor (..._one_vs_rest_stage14.json), or stage 15 K = 64 and 1000 reference images
  (..._one_vs_rest_stage15.json), or stage 16 50 epochs of that (..._one_vs_rest_stage16.json), its choice is
  `:best`."""
  import json

  from dcvae_jax.report.ablation import choose_on_validation
  from tests.cli import REPO

  results = pathlib.Path(REPO) / "docs" / "results"
  rows = {
    k: v
    for k, v in json.loads((results / f"validation_{name}_one_vs_rest.json").read_text()).items()
    if k in ROW_SETTINGS
  }
  assert set(rows) == set(ROW_SETTINGS)  # every candidate was trained and scored
  row, score, _ = choose_on_validation(rows)
  epochs = "50"  # stages 1-10's one-vs-rest rows are 50-epoch ones
  knn = results / f"validation_{name}_one_vs_rest_knn.json"
  if knn.exists():
    _, score, _ = choose_on_validation({row: json.loads(knn.read_text())[row]})
  stage9 = results / f"validation_{name}_one_vs_rest_stage9.json"
  if stage9.exists():
    assert json.loads(stage9.read_text())["choice"]["setting"] == f"50:{row}"
  stage10 = results / f"validation_{name}_one_vs_rest_stage10.json"
  if stage10.exists():
    report = json.loads(stage10.read_text())
    choice = report["choice"]
    assert f"50:{row}" in report["settings"]  # chosen among stage 9's and the new one
    epochs, row = choice["setting"].split(":", 1)
    score = choice["score"]
    assert epochs == "50"
  stage11 = results / f"validation_{name}_one_vs_rest_stage11.json"
  if stage11.exists():
    report = json.loads(stage11.read_text())
    assert f"{epochs}:{row}" in report["settings"] and "earlier" in report  # stage 10's among them
    epochs, row = report["choice"]["setting"].split(":", 1)
    score = report["choice"]["score"]
  for stage in (12, 13, 14, 15, 16):  # 12: k; 13: 150 epochs; 14: JPEG 2000; 15: K = 64, 1000 references; 16: 50
    path = results / f"validation_{name}_one_vs_rest_stage{stage}.json"
    if path.exists():
      report = json.loads(path.read_text())
      assert f"{epochs}:{row}" in report["settings"] and "pooled" in report  # the choice before among them
      epochs, row = report["choice"]["setting"].split(":", 1)
      score = report["choice"]["score"]
  if name == "fashion_mnist":  # the other datasets carry Fashion-MNIST's choice: it must be the latest one
    later = [results / f"validation_{name}_one_vs_rest_stage{n}.json" for n in (9, 10, 11, 12, 13, 14, 15, 16)]
    assert knn.exists() and all(p.exists() for p in later)
  best = _load(name).get_config("best")
  want = {**BEST_DETECTOR, "lr_schedule": "constant", **{**ROW_SETTINGS, **LATER_ROWS}[row], "score": score}
  want["num_epochs"] = int(epochs)
  got = {key: _field(best, FIELDS[key]) for key in want}
  assert got == {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in want.items()}
