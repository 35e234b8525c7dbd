"""Files written whole or not at all (an interrupted write leaves the old file and no temporary), and a URL as a
workdir refused before anything is created."""

import json
import os

import numpy as np
import pytest

from dcvae_jax import experiment, files
from dcvae_jax.errors import WorkdirError
from dcvae_jax.report import style
from tests.helpers import tiny_config


def _interrupt(*args, **kwargs):
  raise KeyboardInterrupt


def test_writes_round_trip(tmp_path):
  files.write_json(str(tmp_path / "a.json"), {"b": [1, 2], "a": 0.5})
  assert json.load(open(tmp_path / "a.json")) == {"a": 0.5, "b": [1, 2]}
  files.write_text(str(tmp_path / "a.md"), "| x |\n")
  assert (tmp_path / "a.md").read_text() == "| x |\n"
  files.write_npz(str(tmp_path / "a.npz"), x=np.arange(3), y=np.eye(2))
  with np.load(tmp_path / "a.npz") as f:
    np.testing.assert_array_equal(f["x"], np.arange(3))
    np.testing.assert_array_equal(f["y"], np.eye(2))
  assert sorted(os.listdir(tmp_path)) == ["a.json", "a.md", "a.npz"]


def test_an_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
  path = str(tmp_path / "s.npz")
  files.write_npz(path, x=np.zeros(2))
  files.write_json(str(tmp_path / "r.json"), {"old": 1})
  monkeypatch.setattr(np, "savez", _interrupt)
  with pytest.raises(KeyboardInterrupt):
    files.write_npz(path, x=np.ones(2))
  with pytest.raises(TypeError):  # not serialisable: the old file stays
    files.write_json(str(tmp_path / "r.json"), {"a": 1, "b": object()})
  with np.load(path) as f:
    np.testing.assert_array_equal(f["x"], np.zeros(2))
  assert json.load(open(tmp_path / "r.json")) == {"old": 1}
  assert sorted(os.listdir(tmp_path)) == ["r.json", "s.npz"]


def test_an_interrupted_figure_leaves_no_file(tmp_path):
  class Figure:  # savefig writes part of a PNG, then Ctrl-C
    def savefig(self, path, **kw):
      with open(path, "wb") as f:
        f.write(b"\x89PNG")
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    style._save(Figure(), str(tmp_path / "figures" / "roc.png"))
  assert os.listdir(tmp_path / "figures") == []


@pytest.mark.parametrize("url", ["gs://bucket/run", "s3://b/r", "file:///tmp/x"])
def test_url_workdir_is_refused_before_anything_is_created(tmp_path, monkeypatch, url):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(WorkdirError, match="gcsfuse"):
    experiment.train_and_evaluate(tiny_config(), url)
  assert os.listdir(tmp_path) == []
  files.check_local(str(tmp_path / "local" / "run"))  # a folder is fine
