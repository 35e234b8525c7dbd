"""TensorBoard event files of the training metrics (``train.tensorboard``).

  <workdir>/tensorboard/<run name>/events.out.tfevents.*   one scalar per logged term, x-axis = training step

  tensorboard --logdir <workdir>/tensorboard

The same records as metrics.jsonl (every ``train.log_every_steps`` steps). TensorFlow, a dependency already (TFDS),
writes the files; it is imported only when TensorBoard output is asked for, and never sees a GPU.
"""

from __future__ import annotations

import collections
import glob
import os


def _tf():
  import tensorflow as tf  # slow import: only when TensorBoard output is on
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF already initialised its devices (another module used it first)
    pass
  return tf


class TensorBoardWriter:
  """One event-file writer per run, created on the run's first record."""

  def __init__(self, logdir: str):
    from tensorflow.core.framework import summary_pb2
    self.logdir = logdir
    self._tf = _tf()
    self._writers = {}
    # tf.summary.scalar lives in the tensorboard package (not a dependency); tf.summary.write with the scalars
    # plugin's metadata writes the same record.
    self._scalar_metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()

  def scalars(self, run: str, step: int, values: dict):
    writer = self._writers.get(run)
    if writer is None:
      writer = self._writers[run] = self._tf.summary.create_file_writer(os.path.join(self.logdir, run))
    with writer.as_default():
      for tag, value in values.items():
        self._tf.summary.write(tag, self._tf.constant(float(value), self._tf.float32), step=int(step),
                               metadata=self._scalar_metadata)

  def flush(self):
    for writer in self._writers.values():
      writer.flush()

  def close(self):
    for writer in self._writers.values():
      writer.close()
    self._writers = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def read_scalars(logdir: str) -> dict:
  """{run: {tag: [(step, value), ...]}} from the event files under ``logdir`` (for tests and notebooks)."""
  tf = _tf()
  out = collections.defaultdict(lambda: collections.defaultdict(list))
  for path in sorted(glob.glob(os.path.join(logdir, "*", "events.out.tfevents.*"))):
    run = os.path.basename(os.path.dirname(path))
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        value = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else float(v.simple_value)
        out[run][v.tag].append((int(event.step), value))
  return {run: {tag: sorted(points) for tag, points in tags.items()} for run, tags in out.items()}
