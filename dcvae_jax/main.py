"""Command line: ``python -m dcvae_jax.main [--config=configs/X.py[:smoke]] [--workdir=DIR] [--config.k=v]``.

Modes: ``train`` (train, evaluate, write results.json; resumes from the workdir by itself).
Every expected failure (bad config, missing data, non-finite loss, damaged checkpoints) ends with one
``error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                               "default.py")
if not os.path.exists(_DEFAULT_CONFIG):
  _DEFAULT_CONFIG = os.path.join("configs", "default.py")

config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Experiment config file (path[:argument]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints and results go (default: workdirs/<config name>).")
flags.DEFINE_enum("mode", "train", ["train"], "What to do.")
FLAGS = flags.FLAGS


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("workdirs", stem + (f"_{arg}" if arg else ""))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imports after flag parsing: JAX must not start before XLA_FLAGS are final.
  from dcvae_jax import errors, evaluate, experiment
  config_arg = FLAGS["config"].value and FLAGS["config"].config_filename
  workdir = FLAGS.workdir or default_workdir(config_arg or _DEFAULT_CONFIG)
  try:
    results = experiment.train_and_evaluate(FLAGS.config, workdir)
  except errors.EXPECTED as e:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)
  print(evaluate.format_table(results))
  print(f"results: {os.path.join(workdir, 'results.json')}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
