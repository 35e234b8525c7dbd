"""TensorBoard event files of training and evaluation (``train.tensorboard``, on by default).

  <workdir>/tensorboard/<run name>/events.out.tfevents.*   one scalar per logged term, x-axis = training step;
      after the run is scored, at its last step: auroc_by_score/<score> and aupr_by_score/<score> (the test AUROC
      and AUPR of every score; any other <prefix>_<score>_<metric> such as val_recon_auroc as
      <prefix>_<metric>_by_score/<score>), and the image ``reconstructions``: a few normal test images over their
      reconstructions, then a few anomalous ones (rows: normal inputs, their reconstructions, anomalous inputs,
      theirs)
  <workdir>/tensorboard/mean/events.out.tfevents.*         every ``*_by_score`` dict of results.json (the mean
      over runs) under the same tags, so TensorBoard draws each run and the mean on one chart

  pip install -e ".[tensorboard]" && tensorboard --logdir <workdir>/tensorboard

The same records as metrics.jsonl (every ``train.log_every_steps`` steps), written by tensorboardX (a small
writer with no TensorFlow or PyTorch behind it); the ``tensorboard`` command that shows them is the
``tensorboard`` extra.
"""

from __future__ import annotations

import collections
import glob
import logging
import os
import struct
import time
from typing import Any

import numpy as np

from dcvae_jax.options import SCORES

# A NaN loss is logged as NaN (train.on_nonfinite=skip); tensorboardX would also warn once per value.
logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)


class TensorBoardWriter:
  """One tensorboardX writer per run, created on the run's first record.

  ``flush()`` writes to disk at most every ``flush_seconds`` (each flush is an fsync per run; the training loop
  asks after every compiled call); ``close()`` always does.
  """

  def __init__(self, logdir: str, flush_seconds: float = 10.0):
    self.logdir = logdir
    self.flush_seconds = flush_seconds
    self._writers: dict[str, Any] = {}
    self._flushed = time.monotonic()

  def scalars(self, run: str, step: int, values: dict):
    writer = self._writer(run)
    for tag, value in values.items():
      writer.add_scalar(tag, float(value), global_step=int(step))

  def _writer(self, run: str):
    if run not in self._writers:
      from tensorboardX import SummaryWriter

      self._writers[run] = SummaryWriter(os.path.join(self.logdir, run), flush_secs=max(int(self.flush_seconds), 1))
    return self._writers[run]

  def image(self, run: str, step: int, tag: str, image: np.ndarray):
    """One grey image (H, W) with values in [0, 1] (NaN, from a diverged model, drawn black)."""
    image = np.clip(np.nan_to_num(np.asarray(image, np.float32), nan=0.0), 0, 1)
    self._writer(run).add_image(tag, image, int(step), dataformats="HW")

  def evaluation(self, run: str, step: int, result: dict):
    """The evaluation scalars of one run's result or of the summary (see :func:`evaluation_scalars`)."""
    values = evaluation_scalars(result)
    if values:
      self.scalars(run, step, values)

  def flush(self, force: bool = False):
    if not force and time.monotonic() - self._flushed < self.flush_seconds:
      return
    for writer in self._writers.values():
      writer.flush()
    self._flushed = time.monotonic()

  def close(self):
    for writer in self._writers.values():
      writer.close()
    self._writers = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def evaluation_scalars(result: dict) -> dict:
  """{tag: value} of the detection metrics in a run's result or in results.json.

  ``<name>_by_score`` dicts ({score: value}, e.g. auroc_by_score, val_auroc_by_score) -> ``<name>_by_score/<score>``;
  a run's flat ``[<prefix>_]<score>_auroc`` / ``_aupr`` -> ``[<prefix>_]auroc_by_score/<score>`` (the tag of the
  same number averaged over runs). Non-numbers and nested dicts (per-class tables) are left out."""
  out = {}
  for key, value in result.items():
    if key.endswith("_by_score") and isinstance(value, dict):
      out.update({f"{key}/{s}": float(v) for s, v in value.items() if isinstance(v, (int, float))})
  for key, value in result.items():
    metric = key.rpartition("_")[2]
    if metric not in ("auroc", "aupr") or not isinstance(value, (int, float)) or isinstance(value, bool):
      continue
    stem = key[: -len(metric) - 1]
    scores = [s for s in SCORES if stem == s or stem.endswith(f"_{s}")]
    if scores:
      score = max(scores, key=len)  # val_sap_complexity is sap_complexity's, not complexity's
      out.setdefault(f"{stem[: -len(score)]}{metric}_by_score/{score}", float(value))
  return out


def _records(path: str):
  """The payloads of a TFRecord file (uint64 length, uint32 masked CRC, data, uint32 masked CRC)."""
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if len(header) < 12:
        return
      (length,) = struct.unpack("<Q", header[:8])
      data = f.read(length)
      if len(data) < length or len(f.read(4)) < 4:
        return  # a record cut short by a writer still at work
      yield data


def read_scalars(logdir: str) -> dict:
  """{run: {tag: [(step, value), ...]}} from the event files under ``logdir`` (for tests and notebooks).

  Parsed with tensorboardX's own protos, so reading needs nothing that writing does not.
  """
  from tensorboardX.proto import event_pb2

  out: collections.defaultdict[str, collections.defaultdict[str, list]] = collections.defaultdict(
    lambda: collections.defaultdict(list)
  )
  for path in sorted(glob.glob(os.path.join(logdir, "*", "events.out.tfevents.*"))):
    run = os.path.basename(os.path.dirname(path))
    for data in _records(path):
      event = event_pb2.Event.FromString(data)
      for v in event.summary.value:
        if v.HasField("simple_value"):
          out[run][v.tag].append((int(event.step), float(v.simple_value)))
  return {run: {tag: sorted(points) for tag, points in tags.items()} for run, tags in out.items()}
