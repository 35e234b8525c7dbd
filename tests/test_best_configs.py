"""configs/<dataset>.py:best is the ablation's best detector; no argument stays the paper's model."""

import importlib.util
import pathlib

import pytest

from dcvae_jax.config import BEST_DETECTOR
from dcvae_jax.evaluators import scoring
from dcvae_jax.models import registry as models

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist", "emnist"])
def test_best_config_is_the_chosen_detector_and_default_stays_the_papers_model(name):
  module = _load(name)
  best = module.get_config("best")
  assert best.model.name in models.MODELS and best.protocol.score in scoring.SCORES
  assert best.model.likelihood in models.LIKELIHOODS
  assert best.train.num_epochs >= 50
  assert "BEST_ROW" in module.__doc__ or "best" in module.__doc__
  default = module.get_config("")
  assert default.model.name == "dcvae" and default.data.binarize and default.model.likelihood == "bernoulli"
  assert default.protocol.score == "recon"


@pytest.mark.parametrize("name", ["mnist_paper", "fashion_mnist_paper", "kmnist_paper", "emnist_paper"])
def test_paper_configs_keep_the_binarised_bernoulli(name):
  config = _load(name).get_config("")
  assert config.data.binarize and config.model.likelihood == "bernoulli" and config.protocol.score == "recon"


def test_best_detector_fields():
  assert BEST_DETECTOR["likelihood"] == "gaussian" and BEST_DETECTOR["dequantize"] and not BEST_DETECTOR["binarize"]
