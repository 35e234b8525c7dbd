"""summaries.TensorBoardWriter: scalars written through tensorboardX read back, by our reader and by
TensorBoard's own EventAccumulator where the `tensorboard` extra is installed."""

import glob
import os

import numpy as np
import pytest

from dcvae_jax.train import tensorboard as summaries


def _write(logdir):
  with summaries.TensorBoardWriter(str(logdir)) as tb:
    for step in (1, 11, 21):
      tb.scalars("class0_seed0", step, {"loss": 100.0 / step, "kl": np.float32(0.5 * step)})
      tb.scalars("class1_seed0", step, {"loss": -1.25 * step})
    tb.flush(force=True)
    assert glob.glob(os.path.join(str(logdir), "class0_seed0", "events.out.tfevents.*"))


def test_scalars_read_back(tmp_path):
  _write(tmp_path / "tb")
  got = summaries.read_scalars(str(tmp_path / "tb"))
  assert sorted(got) == ["class0_seed0", "class1_seed0"]
  assert sorted(got["class0_seed0"]) == ["kl", "loss"]
  assert [s for s, _ in got["class0_seed0"]["loss"]] == [1, 11, 21]
  np.testing.assert_allclose([v for _, v in got["class0_seed0"]["loss"]], [100.0, 100 / 11, 100 / 21], rtol=1e-6)
  np.testing.assert_allclose([v for _, v in got["class0_seed0"]["kl"]], [0.5, 5.5, 10.5])
  assert got["class1_seed0"] == {"loss": [(1, -1.25), (11, -13.75), (21, -26.25)]}


def test_tensorboard_reads_them(tmp_path):
  event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
  _write(tmp_path / "tb")
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tb" / "class0_seed0"))
  acc.Reload()
  assert sorted(acc.Tags()["scalars"]) == ["kl", "loss"]
  events = acc.Scalars("loss")
  assert [e.step for e in events] == [1, 11, 21]
  np.testing.assert_allclose([e.value for e in events], [100.0, 100 / 11, 100 / 21], rtol=1e-6)
