"""dcvae_jax/report/ablation.py: the paired t-test behind dcvae_fair.md's p-values, seed-row matching, and the
tables it prints from results.json files (known answers written by hand)."""

import json
import math

import pytest

from dcvae_jax.report import ablation as at


def test_paired_t_closed_form_two_degrees_of_freedom():
  # d = (1, 2, 3): mean 2, sample std 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3. Student's t with 2 degrees of freedom
  # has CDF 1/2 + t / (2 sqrt(2 + t^2)), so the two-sided p is 1 - t / sqrt(2 + t^2).
  t, p = at.paired_t([1.0, 2.0, 3.0])
  assert t == pytest.approx(2 * math.sqrt(3))
  assert p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14))


def test_paired_t_one_degree_of_freedom_and_sign():
  # n = 2: Student's t with 1 degree of freedom is Cauchy, two-sided p = 1 - 2 atan(|t|) / pi.
  t, p = at.paired_t([-0.01, -0.03])
  assert t == pytest.approx(-0.02 / (math.sqrt(2e-4) / math.sqrt(2)))
  assert p == pytest.approx(1 - 2 * math.atan(abs(t)) / math.pi)


def test_seed_suffixes_ignore_other_changes_that_start_with_s():
  rows = dict.fromkeys(["m:dcvae", "m:dcvae+s1", "m:dcvae+strat32", "m:dcvae+strat32+s1", "m:dcvae+s2", "paper+s1"])
  assert at._seed_suffixes(rows, "m:dcvae") == ["", "+s1", "+s2"]
  assert at._seed_suffixes(rows, "m:dcvae+strat32") == ["", "+s1"]
  assert at._seed_suffixes(rows, "paper") == ["+s1"]


def _write_row(root, name, recon_per_class):
  wd = root / f"mnist-leave_one_out-10ep-{name}"
  wd.mkdir()
  per = {"recon": {str(c): v for c, v in enumerate(recon_per_class)}}
  mean = sum(recon_per_class) / len(recon_per_class)
  result = {
    "train_seconds": 10.0,
    "num_runs": len(recon_per_class),
    "auroc_by_score": {"recon": mean},
    "auroc_per_class_by_score": per,
  }
  (wd / "results.json").write_text(json.dumps(result))


def test_tables_from_results_files(tmp_path, monkeypatch, capsys):
  _write_row(tmp_path, "paper", [0.5, 0.7])
  _write_row(tmp_path, "paper+s1", [0.6, 0.8])
  _write_row(tmp_path, "m:dcvae", [0.7, 0.7])
  _write_row(tmp_path, "m:dcvae+s1", [0.9, 0.9])
  out_json = tmp_path / "t.json"
  argv = [str(tmp_path), "mnist", "leave_one_out", "10", "--seeds=paper", "--json", str(out_json)]
  argv += ["--paired", "paper", "m:dcvae", "recon"]
  monkeypatch.setattr("sys.argv", ["ablation_table.py"] + argv)
  at.main()
  out = capsys.readouterr().out
  assert out.startswith("### MNIST leave-one-out, 10 epochs")
  assert "| paper | **0.600 (0.000)** |" in out  # no stored std: printed as 0
  # seeds of paper: class means 0.6 and 0.7 -> mean 0.650, population std 0.050
  assert "| recon | 0.600 | 0.700 | 0.650 | 0.050 |" in out
  # paired differences: seed 0 (+0.2, 0.0) mean +0.1; seed 1 (+0.3, +0.1) mean +0.2; t = 0.15 / (0.0707 / sqrt 2) = 3
  assert "| 0 | +0.200 | +0.000 | +0.100 |" in out
  assert "| 1 | +0.300 | +0.100 | +0.200 |" in out
  assert "paired t = 3.00" in out
  assert f"p = {1 - 2 * math.atan(3) / math.pi:.3f}" in out
  assert sorted(json.loads(out_json.read_text())) == ["m:dcvae", "m:dcvae+s1", "paper", "paper+s1"]


def _write_val_row(root, name, test, val):
  wd = root / f"mnist-one_vs_rest-50ep-{name}"
  wd.mkdir()
  result = {
    "train_seconds": 1.0,
    "num_runs": 1,
    "auroc_by_score": test,
    "val_auroc_by_score": val,
    "auroc_per_class_by_score": {k: {"0": v} for k, v in test.items()},
  }
  (wd / "results.json").write_text(json.dumps(result))


def test_choose_on_validation_never_reads_test():
  rows = {
    "a": {"auroc_by_score": {"recon": 0.99, "iwae": 0.10}, "val_auroc_by_score": {"recon": 0.70, "iwae": 0.80}},
    "b": {"auroc_by_score": {"recon": 0.10, "iwae": 0.99}, "val_auroc_by_score": {"recon": 0.85, "iwae": 0.60}},
  }
  assert at.choose_on_validation(rows) == ("b", "recon", 0.85)
  rows["a"]["val_auroc_by_score"]["iwae"] = 0.85  # a tie: the earlier row wins
  assert at.choose_on_validation(rows) == ("a", "iwae", 0.85)
  tie = {"c": {"val_auroc_by_score": {"sap_complexity": 0.9, "recon": 0.9}}}  # the earlier score in SCORES wins
  assert at.choose_on_validation(tie) == ("c", "recon", 0.9)
  nan = {"d": {"val_auroc_by_score": {"recon": float("nan"), "iwae": 0.5}}}
  assert at.choose_on_validation(nan) == ("d", "iwae", 0.5)
  with pytest.raises(ValueError, match="no validation AUROC"):
    at.choose_on_validation({"old": {"auroc_by_score": {"recon": 0.9}, "val_auroc_by_score": {}}})


def test_choose_and_validation_columns_from_results_files(tmp_path, monkeypatch, capsys):
  _write_val_row(tmp_path, "paper", {"recon": 0.95, "nelbo": 0.99}, {"recon": 0.91, "nelbo": 0.90})
  _write_val_row(tmp_path, "gpp", {"recon": 0.97, "nelbo": 0.98}, {"recon": 0.92, "nelbo": 0.93})
  _write_val_row(tmp_path, "cb", {"recon": 0.999}, {"recon": 0.99})  # not among --rows: not a candidate
  base = [str(tmp_path), "mnist", "one_vs_rest", "50", "--rows=paper,gpp"]
  monkeypatch.setattr("sys.argv", ["ablation"] + base + ["--choose"])
  at.main()
  assert capsys.readouterr().out == "gpp nelbo\n"
  monkeypatch.setattr("sys.argv", ["ablation"] + base + ["--validation"])
  at.main()
  out = capsys.readouterr().out
  assert "| paper | **0.910 / 0.950** | 0.900 / 0.990 |" in out  # bold: best on validation, not on test
  assert "| gpp | 0.920 / 0.970 | **0.930 / 0.980** |" in out
  monkeypatch.setattr("sys.argv", ["ablation", str(tmp_path), "mnist", "one_vs_rest", "50", "--rows=none", "--choose"])
  with pytest.raises(SystemExit, match="error: no validation AUROC"):
    at.main()
