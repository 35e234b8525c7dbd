"""Command line: ``python -m dcvae_jax.main [--config=configs/X.py[:smoke]] [--workdir=DIR] [--config.k=v]``.

Modes: ``train`` (train, evaluate, write results.json; resumes from the workdir by itself); ``predict``
(``--workdir=W --input=PATH [--output=FILE] [--run=NAME]``: score new images with W alone, dcvae_jax/predict.py).
Every expected failure (bad config, missing data, non-finite loss, damaged checkpoints) ends with one
``error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.py")
if not os.path.exists(_DEFAULT_CONFIG):
  _DEFAULT_CONFIG = os.path.join("configs", "default.py")


def _define_config_flag():
  # Defining the flag already reads the default config and the --config.* overrides in sys.argv.
  config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Experiment config file (path[:argument]).", lock_config=True
  )


flags.DEFINE_string("workdir", None, "Where checkpoints and results go (default: workdirs/<config name>).")
flags.DEFINE_enum(
  "mode",
  "train",
  ["train", "report", "table", "rescore", "predict"],
  "train: train, evaluate, write results.json (resumes by itself); report: figures and "
  "report.html of a trained workdir; table: every model of config.table.models (Table 1); "
  "rescore: recompute every score of a trained workdir from its checkpoints (its own config, "
  "the command line's eval settings); predict: score the images of --input with a trained workdir "
  "alone (a CSV of every score and the 0/1 decision).",
)
flags.DEFINE_string("input", None, "--mode=predict: a folder of images, an .npz or one image file.")
flags.DEFINE_string("output", None, "--mode=predict: the CSV to write (default: <workdir>/predictions.csv).")
flags.DEFINE_string("run", None, "--mode=predict: the run of a workdir with several (e.g. class3_seed0).")
FLAGS = flags.FLAGS


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("workdirs", stem + (f"_{arg}" if arg else ""))


def main(argv):
  from dcvae_jax import log as messages

  messages.quiet_other_libraries()  # our INFO messages show by default (--verbosity=-1: warnings only); Orbax's not
  # Imports after flag parsing: JAX must not start before XLA_FLAGS are final.
  from dcvae_jax import distributed

  distributed.maybe_initialize()
  from dcvae_jax import errors, experiment
  from dcvae_jax.evaluators import metrics

  config_arg = FLAGS["config"].value and FLAGS["config"].config_filename
  workdir = FLAGS.workdir or default_workdir(config_arg or _DEFAULT_CONFIG)
  try:
    if FLAGS.mode == "predict":  # the workdir alone: exit 0 when at least one image was scored
      from dcvae_jax import predict

      if not FLAGS.input:
        raise errors.ConfigError("--mode=predict needs --input=PATH (a folder of images, an .npz or an image)")
      lines = predict.predict(
        workdir, FLAGS.input, output=FLAGS.output, run=FLAGS.run, warn=lambda m: print(m, file=sys.stderr)
      )
      print("\n".join(lines))
      return
    if FLAGS.mode == "report":
      from dcvae_jax.report import html as report

      print(f"report: {report.make_report(workdir)}")
      return
    if FLAGS.mode == "table":
      from dcvae_jax import table

      rows = table.run_table(FLAGS.config, workdir)
      print(table.format_markdown(rows), end="")
      print(f"table: {os.path.join(workdir, 'results.md')}")
      return
    if FLAGS.mode == "rescore":  # the workdir's own config, with the command line's eval settings
      config = experiment.load_config(workdir)
      config.eval = FLAGS.config.eval
      results = experiment.train_and_evaluate(config, workdir, rescore=True)
    else:
      results = experiment.train_and_evaluate(FLAGS.config, workdir)
  except errors.Interrupted as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(130)
  except errors.EXPECTED as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if distributed.is_primary():
    print(metrics.format_table(results))
    print(f"results: {os.path.join(workdir, 'results.json')}")


def _bad_command_line(e: BaseException):
  text = str(e.args[0] if isinstance(e, (AttributeError, KeyError)) and e.args else e)
  lines = [l.strip().strip("'\"") for l in text.replace("\\n", "\n").splitlines() if l.strip()]
  if any(l.startswith("Attempted") for l in lines):  # config file not found or not importable
    lines = ["cannot load the config file", lines[-1]]
  elif any(l.startswith("Traceback") for l in lines):  # an exception inside the config file: keep its last line
    lines = [lines[0], lines[-1]]
  print(f"error: bad command line: {'; '.join(lines[:3])}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl's parser, then the config file and its overrides: any failure is one ``error:`` line, exit 2."""
  try:
    _define_config_flag()
    rest = FLAGS(argv)
    FLAGS.config.to_dict()  # loads the config file and applies the --config.* overrides
  except Exception as e:  # noqa: BLE001 - absl and ml_collections raise many types here
    _bad_command_line(e)
  if len(rest) > 1:
    _bad_command_line(ValueError(f"unexpected arguments: {' '.join(rest[1:])}"))
  return rest


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
