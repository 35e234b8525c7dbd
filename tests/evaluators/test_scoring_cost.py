"""The cheaper scoring of issue 23: NAP's fit without an SVD (known answer: numpy's SVD), the choice of scores
(eval.scores) and what results hold when some are not computed, scoring's progress, and the persistent XLA
compilation cache. No timings here (benchmarks/main_job.py measures them)."""

import json
import os
import re
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dcvae_jax import experiment, table, xla_cache
from dcvae_jax.config import BEST_DETECTOR
from dcvae_jax.errors import ConfigError
from dcvae_jax.evaluators import anomaly_scores, metrics, scoring
from dcvae_jax.options import DEFAULT_SCORES
from dcvae_jax.validation import validate
from tests import cli
from tests.cli import REPO
from tests.helpers import tiny_config, toy_dataset

# ----------------------------------------------------------------------------------------------------------
# NAP: principal_directions (Gram eigendecomposition) against numpy's SVD, an independent reference.


def _svd_nap(d_fit, d_test, rtol=1e-5):
  """NAP by the definition, with numpy's SVD, in float64: ||(d - m) V diag(1/s)||^2 over s > rtol s_1."""
  mean = d_fit.mean(0)
  _, s, vt = np.linalg.svd(d_fit - mean, full_matrices=False)
  keep = s > rtol * s[0]
  return np.sum((((d_test - mean) @ vt[keep].T) / s[keep]) ** 2, axis=1), int(keep.sum())


def _gram_nap(d_fit, d_test, rtol=1e-5):
  """The same from principal_directions (float64)."""
  mean = d_fit.mean(0)
  s, v = anomaly_scores.principal_directions(d_fit - mean)
  keep = s > rtol * s[0]
  return np.sum((((d_test - mean) @ v[:, keep]) / s[keep]) ** 2, axis=1), int(keep.sum())


def _differences(n, dim, seed, *, dead=0, dependent=0, decades=3.0):
  """Random 'training differences' (n, dim) with singular values spread over ``decades``, ``dead`` all-zero
  columns (a dead unit) and ``dependent`` columns that are combinations of others (an exact rank deficit)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, dim)) * np.logspace(0.0, -decades, dim)[rng.permutation(dim)] + rng.normal(size=dim)
  cols = rng.permutation(dim)
  x[:, cols[:dead]] = 0.0
  for j in cols[dead : dead + dependent]:
    a, b = rng.choice(cols[dead + dependent :], 2, replace=False)
    x[:, j] = 0.5 * x[:, a] - 2.0 * x[:, b]
  return x


@pytest.mark.parametrize(
  "n,dim,dead,dependent",
  [
    (300, 120, 0, 0),  # n > D: the D x D Gram matrix
    (80, 200, 0, 0),  # n < D: the n x n Gram matrix
    (300, 120, 15, 10),  # dead units and exactly dependent columns: a rank deficit
    (60, 200, 30, 20),
  ],
)
def test_principal_directions_give_the_svds_nap(n, dim, dead, dependent):
  d_fit = _differences(n, dim, seed=n + dim, dead=dead, dependent=dependent)
  d_test = _differences(50, dim, seed=1) * 1.5 + 0.1  # test points off the training subspace, too
  want, k_want = _svd_nap(d_fit, d_test)
  got, k_got = _gram_nap(d_fit, d_test)
  assert k_got == k_want == min(n - 1, dim - dead - dependent)  # centring removes one direction
  np.testing.assert_allclose(got, want, rtol=1e-9)

  # the singular values and the kept subspace (the vectors only up to sign)
  centred = d_fit - d_fit.mean(0)
  s_want = np.linalg.svd(centred, compute_uv=False)
  s_got, v = anomaly_scores.principal_directions(centred)
  np.testing.assert_allclose(s_got[:k_want], s_want[:k_want], rtol=1e-9)
  np.testing.assert_allclose(v[:, :k_want].T @ v[:, :k_want], np.eye(k_want), atol=1e-9)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  proj_want = vt[:k_want].T @ vt[:k_want]
  np.testing.assert_allclose(v[:, :k_want] @ v[:, :k_want].T, proj_want, atol=1e-9)


def test_fit_nap_scores_equal_the_svd_reference_in_float32():
  """The whole path the scorer uses (fit_nap's float32 statistics, then nap on the device) against the SVD."""
  d_fit = _differences(400, 150, seed=3, dead=12, dependent=5)
  d_test = _differences(64, 150, seed=4) * 2.0
  want, _ = _svd_nap(d_fit, d_test)
  stats = anomaly_scores.fit_nap(d_fit)
  assert stats["basis"].shape == (150, 150) and stats["inv_scale"].shape == (150,)
  assert np.count_nonzero(stats["inv_scale"]) == 150 - 12 - 5
  got = np.asarray(anomaly_scores.nap(jnp.asarray(d_test, jnp.float32), stats), np.float64)
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_principal_directions_of_degenerate_inputs():
  s, v = anomaly_scores.principal_directions(np.zeros((5, 4)))  # nothing varies
  assert s.shape == (0,) and v.shape == (4, 0)
  x = np.zeros((6, 3))
  x[:, 1] = np.arange(6) - 2.5  # one direction: e_1, singular value ||x[:, 1]||
  s, v = anomaly_scores.principal_directions(x)
  np.testing.assert_allclose(s, [np.linalg.norm(x[:, 1])])
  np.testing.assert_allclose(np.abs(v[:, 0]), [0.0, 1.0, 0.0])


def test_fit_nap_all_equals_each_models_fit():
  rng = np.random.default_rng(5)
  d = np.stack([_differences(120, 40, seed=m, dead=m) for m in range(3)]) + rng.normal(size=(3, 1, 40))
  got = scoring.fit_nap_all(d.astype(np.float32))
  for m in range(3):
    want = anomaly_scores.fit_nap(d[m].astype(np.float32))
    assert (
      np.count_nonzero(got[m]["inv_scale"]) == np.count_nonzero(want["inv_scale"]) == 40 - m
    )  # dead columns: no direction
    np.testing.assert_allclose(got[m]["inv_scale"], want["inv_scale"], rtol=1e-5)
    np.testing.assert_allclose(got[m]["mean"], want["mean"], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# eval.scores: validation, and a job that computes only some scores.


@pytest.mark.parametrize(
  "scores, headline, message",
  [
    (("recon", "bogus"), "recon", "eval.scores: unknown score 'bogus'"),
    (("(recon,iwae)",), "recon", "as a tuple of quoted names"),  # what an unquoted command line gives
    (("recon", "iwae"), "nelbo", "protocol.score='nelbo' is not among eval.scores (recon, iwae)"),
    ("recon", "recon", "eval.scores must be a tuple of score names"),
  ],
)
def test_eval_scores_validation(scores, headline, message):
  config = tiny_config()
  config.eval = ml_collections.ConfigDict(config.eval.to_dict(), type_safe=False)  # from Python, anything goes
  config.eval.scores = scores
  config.protocol.score = headline
  with pytest.raises(ConfigError, match=re.escape(message)) as e:
    validate(config)
  assert "\n" not in str(e.value)


def test_eval_scores_defaults_to_all_and_keeps_the_order():
  config = tiny_config()
  assert scoring.score_names(config) == DEFAULT_SCORES == scoring.SCORES[:7]  # base config: the first seven
  validate(config)
  config.eval.scores = ()
  assert scoring.score_names(config) == scoring.SCORES  # all ten
  config.eval.scores = ("sap_knn", "recon")
  assert scoring.score_names(config) == ("recon", "sap_knn")
  assert scoring.device_scores(scoring.score_names(config)) == ("recon", "rapp_sap")
  assert scoring.needs_knn(("sap_knn",)) and not scoring.needs_knn(DEFAULT_SCORES)
  assert scoring.needs_reference(("sap_knn",)) and not scoring.needs_reference(("recon", "latent_knn"))
  config.eval.scores = ("sap_complexity", "recon")
  assert scoring.score_names(config) == ("recon", "sap_complexity")
  assert scoring.device_scores(scoring.score_names(config)) == ("recon", "iwae", "rapp_sap")
  assert scoring.device_scores(("complexity",)) == ("iwae",)
  assert scoring.device_scores(("rapp",)) == ("rapp",)


class _CountingProgress(scoring.ScoreProgress):
  made = []

  def __init__(self, n_runs, total, show):
    super().__init__(n_runs, total, show=False)
    self.total, self.steps, self.stages = total, 0, []
    _CountingProgress.made.append(self)

  def __call__(self, n=1):
    self.steps += n

  def stage(self, name):
    super().stage(name)
    if name is not None:
      self.stages.append(name)


def test_reduced_scores_are_absent_and_the_rest_unchanged(tmp_path, monkeypatch):
  """Train once with every score, then rescore the same checkpoints with two scores: those two are bitwise the
  same, the others are absent from results.json, the run files, the score files and the tables (not zero);
  scoring's progress counts exactly its steps and says what it did."""
  ds = toy_dataset()
  config = tiny_config("vae", num_epochs=1)
  config.protocol.classes = (0, 1)
  config.eval.iwae_samples = 4
  config.eval.iwae_chunk = 4
  config.eval.rapp_fit_examples = 64
  config.eval.reference_examples = 20
  wd = str(tmp_path / "wd")
  monkeypatch.setattr(scoring, "ScoreProgress", _CountingProgress)
  _CountingProgress.made = []
  messages = []
  full = experiment.train_and_evaluate(config, wd, dataset=ds, log=messages.append)
  assert set(full["auroc_by_score"]) == set(DEFAULT_SCORES)
  (progress,) = _CountingProgress.made
  assert progress.steps == progress.total and progress.stages == [
    "NAP fit",
    "reference",
    "validation",
    "test set",
    "metrics",
    "codes",
    "disentanglement",
    "reconstructions",
  ]
  assert any(m.startswith("scoring 2 run(s) on 64 test images: recon, nelbo, iwae,") for m in messages)
  assert any(m.startswith("scored 2 run(s) in ") and "NAP fit" in m for m in messages)
  saved = {r: dict(np.load(os.path.join(wd, "scores", f"{r}.npz"))) for r in ("class0_seed0", "class1_seed0")}

  config.eval.scores = ("recon", "rapp_sap")
  _CountingProgress.made = []
  part = experiment.train_and_evaluate(config, wd, dataset=ds, log=lambda *_: None, rescore=True)
  (progress,) = _CountingProgress.made
  assert progress.steps == progress.total and progress.stages == [
    "validation",
    "test set",
    "metrics",
    "codes",
    "disentanglement",
    "reconstructions",
  ]  # no NAP
  assert set(part["auroc_by_score"]) == {"recon", "rapp_sap"}
  for name in ("recon", "rapp_sap"):
    assert part["auroc_by_score"][name] == full["auroc_by_score"][name]
  for key in ("nelbo_auroc_mean", "E_normal_mean", "E_anomalous_mean", "complexity_likelihood"):
    assert key not in part
  assert part["A_normal_mean"] == full["A_normal_mean"]
  for run in part["runs"]:
    assert "iwae_auroc" not in run and "E_normal" not in run and "rapp_auroc" not in run
    with open(os.path.join(wd, "runs", f"{run['run']}.json")) as f:
      assert "nelbo_auroc" not in json.load(f)
    with np.load(os.path.join(wd, "scores", f"{run['run']}.npz")) as f:
      assert set(f.files) == {"y_test", "codes", "recon", "rapp_sap", "y_val", "val_recon", "val_rapp_sap"}
      np.testing.assert_array_equal(f["recon"], saved[run["run"]]["recon"])
      np.testing.assert_array_equal(f["rapp_sap"], saved[run["run"]]["rapp_sap"])
  text = metrics.format_table(part)
  assert "E normal" not in text and "A normal/anomalous" in text and "mean AUROC by score: recon" in text
  row = {k: part[k] for k in table.COLUMNS if k in part} | {"dataset": "toy", "protocol": "lo", "score": "recon"}
  assert "| n/a | n/a |" in table.format_markdown([row])


# ----------------------------------------------------------------------------------------------------------
# The persistent XLA compilation cache (each check in a fresh process: JAX sets its cache up once).

_PROBE = """
import json
import jax, jax.numpy as jnp
from jax import monitoring
from dcvae_jax import xla_cache
hits = []
monitoring.register_event_listener(lambda e, **k: hits.append(e) if e.endswith("/cache_hits") else None)
path = xla_cache.enable()
y = jax.jit(lambda x: jnp.sin(x) * 2.0 + 1.0)(jnp.arange(3.0))
print(json.dumps({"path": path, "dir": jax.config.jax_compilation_cache_dir,
                  "enabled": jax.config.jax_enable_compilation_cache,
                  "min_seconds": jax.config.jax_persistent_cache_min_compile_time_secs,
                  "hits": len(hits), "y": [float(v) for v in y]}))
"""


def _probe(tmp_path, setting):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(tmp_path / "xdg"))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  if setting is None:
    env.pop(xla_cache.ENV, None)
  else:
    env[xla_cache.ENV] = setting
  proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_cache_is_applied_reused_and_written_atomically(tmp_path):
  folder = tmp_path / "cache"
  first, _ = _probe(tmp_path, str(folder))
  assert first["path"] == first["dir"] == str(folder) and first["enabled"] and first["min_seconds"] == 0.0
  assert first["hits"] == 0
  entries = sorted(folder.glob("*-cache"))
  assert entries and not list(folder.glob("*.tmp")) and all(e.stat().st_size > 0 for e in entries)

  second, _ = _probe(tmp_path, str(folder))  # another process: loads instead of compiling, same answer
  assert second["hits"] >= 1 and second["y"] == first["y"]

  for e in entries:  # what a writer killed mid-write (in place) would leave
    e.write_bytes(b"")
  third, stderr = _probe(tmp_path, str(folder))
  assert third["hits"] == 0 and "persistent compilation cache" not in stderr  # a miss, not a warning
  assert all(e.stat().st_size > 0 for e in entries) and third["y"] == first["y"]  # and written again


@pytest.mark.parametrize("setting", ["0", "off"])
def test_cache_can_be_turned_off(tmp_path, setting):
  got, _ = _probe(tmp_path, setting)
  assert got["path"] is None and got["enabled"] is False
  assert not (tmp_path / "xdg").exists()


def test_cache_folder_default_and_override(monkeypatch, tmp_path):
  monkeypatch.delenv(xla_cache.ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert xla_cache.requested_dir() == str(tmp_path / "dcvae_jax" / "xla")
  monkeypatch.setenv(xla_cache.ENV, str(tmp_path / "mine"))
  assert xla_cache.requested_dir() == str(tmp_path / "mine")
  for off in ("0", "OFF", "false", "no", ""):
    monkeypatch.setenv(xla_cache.ENV, off)
    assert xla_cache.requested_dir() is None


def test_put_atomic_keeps_a_complete_entry_and_replaces_an_empty_one(tmp_path):
  xla_cache._put_atomic(str(tmp_path), "k-cache", b"abc")
  xla_cache._put_atomic(str(tmp_path), "k-cache", b"other")  # the key's program is the same: keep the first
  assert (tmp_path / "k-cache").read_bytes() == b"abc"
  (tmp_path / "k-cache").write_bytes(b"")
  xla_cache._put_atomic(str(tmp_path), "k-cache", b"abc")
  assert (tmp_path / "k-cache").read_bytes() == b"abc" and sorted(p.name for p in tmp_path.iterdir()) == ["k-cache"]


def test_the_command_line_enables_the_cache(tmp_path):
  """main() sets the cache up before anything else (here it stops at once, on an unknown model)."""
  env = dict(cli.env(), **{xla_cache.ENV: str(tmp_path / "c")})
  proc = subprocess.run(
    [sys.executable, "-m", "dcvae_jax.main", *cli.SMOKE, f"--workdir={tmp_path / 'wd'}", "--config.model.name=nope"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert "unknown model" in cli.error_line(proc)
  assert (tmp_path / "c").is_dir()


# ----------------------------------------------------------------------------------------------------------
# The main job's and :best's scoring settings: the default seven scores with K = 16 (:best: all ten, BEST_DETECTOR's K).


def test_main_job_scores_the_default_seven_with_k_16_and_best_all_ten_with_its_k():
  import importlib.util

  spec = importlib.util.spec_from_file_location("default_config", os.path.join(REPO, "configs", "default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = tiny_config()
  for arg in ("", "smoke"):
    config = module.get_config(arg)
    validate(config)
    assert scoring.score_names(config) == DEFAULT_SCORES
    assert config.eval.iwae_samples == 16 and config.eval.iwae_samples % config.eval.iwae_chunk == 0
  best = module.get_config("best")
  assert scoring.score_names(best) == scoring.SCORES and best.eval.iwae_samples == BEST_DETECTOR["iwae_samples"] == 64
  assert best.eval.iwae_samples % best.eval.iwae_chunk == 0
  assert base.eval.iwae_samples == 64  # the base config's K: the paper-scale estimate
