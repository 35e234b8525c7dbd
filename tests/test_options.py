"""dcvae_jax.options: the one place allowed values live, matching what each module implements, and light."""

import subprocess
import sys

from dcvae_jax import options
from dcvae_jax.models import networks
from dcvae_jax.models import registry as models


def test_model_names_match_the_registry():
  assert set(options.MODEL_NAMES) == set(models.MODELS)


def test_archs_match_the_networks():
  assert set(options.ARCHS) == set(networks.ENCODERS) == set(networks.DECODERS)


def test_validation_imports_nothing_heavy():
  """validate() reads its allowed values without importing JAX, Flax or any module that acts on them."""
  code = (
    "import sys, dcvae_jax.validation\n"
    "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax', 'orbax', 'numpy'))\n"
    "ours = sorted(m for m in sys.modules if m.startswith('dcvae_jax.'))\n"
    "print(heavy, ours)\n"
    "assert not heavy, heavy\n"
    "assert set(ours) <= {'dcvae_jax.validation', 'dcvae_jax.options', 'dcvae_jax.errors'}, ours\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True)


def test_every_model_section_is_its_own_and_the_registry_names_it():
  """config.model.<section> exists for every model with weights of its own, and for no other name."""
  from dcvae_jax.config import base_config

  model = base_config().model
  sections = {k for k, v in model.items() if hasattr(v, "items")}
  assert sections == {s.section for s in models.MODELS.values() if s.section}
  assert all(s.section in (None, s.name) for s in models.MODELS.values())


# Options that no config file sets: each is exercised here with a value other than its default.


def test_num_seeds_repeats_every_class_under_the_next_seeds():
  from dcvae_jax.config import base_config
  from dcvae_jax.data import protocols

  config = base_config()
  config.seed, config.num_seeds, config.protocol.classes = 3, 2, (1, 4)
  runs = protocols.make_runs(config.protocol, 10, config.seed, config.num_seeds)
  assert sorted((r.label, r.seed) for r in runs) == [("1", 3), ("1", 4), ("4", 3), ("4", 4)]
  assert len({r.name for r in runs}) == 4 and {r.anomalous for r in runs if r.label == "1"} == {(1,)}


def test_gaussian_std_is_the_fixed_sigma_of_the_likelihood():
  """model.gaussian_std = sigma: -log N(x; mean, sigma^2) per pixel = (x - mean)^2 / (2 sigma^2) + log sigma
  + log(2 pi) / 2."""
  import jax.numpy as jnp
  import numpy as np

  from dcvae_jax.config import base_config
  from dcvae_jax.models import objectives

  cfg = base_config().model
  cfg.likelihood, cfg.gaussian_variance, cfg.gaussian_std = "gaussian", "fixed", 0.5
  mean = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 2, 2, 1)
  x = np.full_like(mean, 0.25)
  got = objectives.recon_nll(jnp.asarray(mean), jnp.asarray(x), "gaussian", objectives.likelihood_logvar(cfg, None))
  want = ((x - mean) ** 2 / (2 * 0.25) + np.log(0.5) + 0.5 * np.log(2 * np.pi)).sum((1, 2, 3))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_warmup_cosine_reads_its_fractions():
  """train.warmup_fraction and train.final_lr_fraction: Adam's first steps under a constant gradient move by
  the rate itself, so the steps show the schedule: 0 at step 0, the peak after round(f T) steps, then down to
  final_lr_fraction x the peak at T."""
  import jax.numpy as jnp
  import numpy as np

  from dcvae_jax.config import base_config
  from dcvae_jax.train import train_step

  train = base_config().train
  train.lr_schedule, train.learning_rate, train.warmup_fraction, train.final_lr_fraction = (
    "warmup_cosine",
    0.1,
    0.2,
    0.3,
  )
  tx = train_step.make_optimizer(train, total_steps=20)
  params, rates = jnp.zeros(()), []
  state = tx.init(params)
  for _ in range(21):
    updates, state = tx.update(jnp.ones(()), state, params)
    rates.append(-float(updates))
  np.testing.assert_allclose(rates[0], 0.0, atol=1e-7)
  assert int(np.argmax(rates)) == 4  # warm-up: round(0.2 x 20) steps
  np.testing.assert_allclose(rates[4], 0.1, rtol=1e-5)
  np.testing.assert_allclose(rates[20], 0.1 * 0.3, rtol=1e-4)


def test_table_runs_table_models_and_draws_figure_runs(monkeypatch, tmp_path):
  """--mode=table: table.models in order, each trained with its own model.name (one config, so each reads
  its own model.<name> section), and table.figure_runs runs per model drawn; table.figures=False draws none."""
  from dcvae_jax import experiment, table
  from dcvae_jax.config import base_config
  from dcvae_jax.report import html
  from tests.helpers import toy_dataset

  trained, drawn = [], []

  def fake_train(cfg, workdir, **_):
    trained.append((cfg.model.name, cfg.model.dcvae.tc_beta, workdir))
    return {k: 0.5 for k in table.COLUMNS} | {
      "model": cfg.model.name,
      "dataset": "toy",
      "protocol": "p",
      "score": "recon",
    }

  monkeypatch.setattr(experiment, "train_and_evaluate", fake_train)
  monkeypatch.setattr(html, "make_report", lambda workdir, max_runs, **_: drawn.append((workdir, max_runs)))
  config = base_config()
  config.table.models, config.table.figure_runs, config.model.dcvae.tc_beta = ("dcvae", "vae"), 3, 2.0
  rows = table.run_table(config, str(tmp_path), dataset=toy_dataset(), log=lambda *_: None)
  assert [r["model"] for r in rows] == ["dcvae", "vae"]
  assert trained == [("dcvae", 2.0, str(tmp_path / "dcvae")), ("vae", 2.0, str(tmp_path / "vae"))]
  assert drawn == [(str(tmp_path / "dcvae"), 3), (str(tmp_path / "vae"), 3)]
  config.table.figures, drawn[:] = False, []
  table.run_table(config, str(tmp_path / "b"), dataset=toy_dataset(), log=lambda *_: None)
  assert drawn == []


def test_evaluator_names_match_the_registry_in_order():
  from dcvae_jax.evaluators import registry

  assert tuple(registry.EVALUATORS) == options.EVALUATORS
  assert set(options.EVALUATOR_NEEDS) <= set(options.EVALUATORS)
  assert all(set(needs) <= set(options.EVALUATORS) for needs in options.EVALUATOR_NEEDS.values())
