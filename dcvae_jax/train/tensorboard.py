"""TensorBoard event files of the training metrics (``train.tensorboard``, on by default).

  <workdir>/tensorboard/<run name>/events.out.tfevents.*   one scalar per logged term, x-axis = training step

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
    self._writers = {}
    self._flushed = time.monotonic()

  def scalars(self, run: str, step: int, values: dict):
    writer = self._writers.get(run)
    if writer is None:
      from tensorboardX import SummaryWriter

      writer = self._writers[run] = SummaryWriter(
        os.path.join(self.logdir, run), flush_secs=max(int(self.flush_seconds), 1)
      )
    for tag, value in values.items():
      writer.add_scalar(tag, float(value), global_step=int(step))

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

  out = collections.defaultdict(lambda: collections.defaultdict(list))
  for path in sorted(glob.glob(os.path.join(logdir, "*", "events.out.tfevents.*"))):
    run = os.path.basename(os.path.dirname(path))
    for data in _records(path):
      event = event_pb2.Event.FromString(data)
      for v in event.summary.value:
        if v.HasField("simple_value"):
          out[run][v.tag].append((int(event.step), float(v.simple_value)))
  return {run: {tag: sorted(points) for tag, points in tags.items()} for run, tags in out.items()}
