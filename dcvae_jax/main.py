"""Train dCVAE and its baselines as unsupervised anomaly detectors, score every test image, report.

usage: dcvae-jax [--config=NAME[:smoke|:best]] [--config.KEY=VALUE ...] [--workdir=DIR] [--mode=MODE]
       python -m dcvae_jax.main ...   (the same)

modes:
  train    train every run of the protocol, score it, write results.json (the default; a rerun resumes
           from the last checkpoint and skips finished runs)
  report   figures and report.html of a trained workdir (the plots extra)
  table    every model of config.table.models: the paper's Table 1 (results.md, results.csv, results.json)
  rescore  recompute every score of a trained workdir from its checkpoints (its own config, this command
           line's eval.* settings)
  config   print the config after the overrides, one line of meaning per field, and exit
  predict  score new images with a trained workdir alone: --input=PATH (a folder, an .npz or one image)
           [--output=FILE] [--run=NAME]; writes a CSV of every score and the 0/1 decision

examples:
  dcvae-jax --config=default:smoke                       # seconds, offline
  dcvae-jax --config=mnist --config.model.name=dcvae --config.data.data_dir=DIR
  dcvae-jax --config=mnist --mode=config                 # every field, its value and its meaning

Every expected failure is one "error: ..." line on stderr and a non-zero exit: 2 for a bad command line, 1 for
anything later, 130 when interrupted (Ctrl-C, SIGTERM): rerun the same command to finish; nothing is redone.
"""

from __future__ import annotations

import difflib
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG_HELP = (
  "A config: a name (default, mnist, fashion_mnist, ...: the files of configs/, shipped with the package) or a "
  "config file's path, with an optional :argument (smoke: a run of seconds; best: the best detector found). "
  "Any field is then set with --config.KEY=VALUE."
)
_MODES = ("train", "report", "table", "rescore", "config", "predict")

flags.DEFINE_string("workdir", None, "Where checkpoints, scores and results go (default: workdirs/<config name>).")
flags.DEFINE_enum("mode", "train", _MODES, "What to do; dcvae-jax --help explains each mode.")
flags.DEFINE_string("input", None, "--mode=predict: a folder of images, an .npz or one image file.")
flags.DEFINE_string("output", None, "--mode=predict: the CSV to write (default: <workdir>/predictions.csv).")
flags.DEFINE_string("run", None, "--mode=predict: the run of a workdir with several (e.g. class3_seed0).")
FLAGS = flags.FLAGS


def _default_config() -> str:
  from dcvae_jax.config import config_file

  try:
    return config_file("default")
  except ValueError:  # no configs shipped or beside the package: a checkout's relative path, as before
    return os.path.join("configs", "default.py")


def _define_config_flag(argv):
  # Defining the flag already reads the default config and the --config.* overrides in argv.
  config_flags.DEFINE_config_file("config", _default_config(), _CONFIG_HELP, lock_config=True, sys_argv=argv)


def default_workdir(config_arg: str) -> str:
  path, _, arg = config_arg.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("workdirs", stem + (f"_{arg}" if arg else ""))


def usage() -> str:
  """``--help``: this module's docstring, the project's flags and the config names."""
  from dcvae_jax.config import config_names

  def entry(name: str, help_text: str, default=None) -> str:
    text = help_text + (f" (default: {default})" if default else "")
    return flags.text_wrap(f"--{name}: {text}", length=110, indent="      ", firstline_indent="  ")

  lines = [
    __doc__.strip(),
    "",
    "flags:",
    entry("config", _CONFIG_HELP, "default"),
    entry("workdir", FLAGS["workdir"].help),
    entry("mode", " | ".join(_MODES), FLAGS["mode"].default),
    entry("verbosity", "-1: warnings only; 0: our progress messages (default); 1: other libraries' too"),
    entry("helpfull", "every flag of every library"),
    "",
    flags.text_wrap(f"config names: {', '.join(config_names()) or '(none found)'}", length=110, indent="  "),
  ]
  return "\n".join(lines)


def _print_and_exit(text: str):
  """Print ``text`` to stdout and exit 0, quietly also when the reader stops early (``dcvae-jax --help | head``)."""
  try:
    print(text)
    sys.stdout.flush()
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit does not fail again
  sys.exit(0)


def _interrupted_message(mode: str) -> str:
  done = "figures drawn so far" if mode == "report" else "finished runs and their scores"
  return f"error: interrupted (Ctrl-C) in --mode={mode}; {done} are kept: rerun the same command to finish"


def main(argv):
  from dcvae_jax import errors

  try:
    _main(FLAGS.mode)
  except errors.Interrupted as e:  # training stopped by a signal, after saving a checkpoint
    print(f"error: {e}", file=sys.stderr)
    sys.exit(130)
  except KeyboardInterrupt:  # Ctrl-C outside the training loop: scoring, figures, loading
    print(_interrupted_message(FLAGS.mode), file=sys.stderr)
    sys.exit(130)
  except errors.EXPECTED as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def _job_config(mode: str, workdir: str):
  """The config the job runs with: the command line's, or for report / rescore the workdir's own (if any)."""
  if mode in ("report", "rescore", "predict") and os.path.exists(os.path.join(workdir, "config.json")):
    from dcvae_jax.config import load_saved

    return load_saved(os.path.join(workdir, "config.json"))
  return FLAGS.config


def _main(mode: str):
  from dcvae_jax import extras
  from dcvae_jax import log as messages
  from dcvae_jax.config import describe

  if mode == "config":
    _print_and_exit(describe(FLAGS.config))
  workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
  extras.check(_job_config(mode, workdir), mode)  # before JAX starts or any data is read

  messages.quiet_other_libraries()  # our INFO messages show by default (--verbosity=-1: warnings only); Orbax's not
  # Imports after flag parsing: JAX must not start before XLA_FLAGS are final.
  from dcvae_jax import distributed, xla_cache

  xla_cache.enable()  # the persistent compilation cache, before anything compiles (DCVAE_XLA_CACHE=0: off)
  distributed.maybe_initialize()
  if mode == "predict":  # the workdir alone: exit 0 when at least one image was scored
    from dcvae_jax import errors, predict

    if not FLAGS.input:
      raise errors.ConfigError("--mode=predict needs --input=PATH (a folder of images, an .npz or an image)")
    lines = predict.predict(
      workdir, FLAGS.input, output=FLAGS.output, run=FLAGS.run, warn=lambda m: print(m, file=sys.stderr)
    )
    print("\n".join(lines))
    return
  from dcvae_jax import experiment
  from dcvae_jax.evaluators import metrics

  if mode == "report":
    from dcvae_jax.report import html as report

    print(f"report: {report.make_report(workdir)}")
    return
  if mode == "table":
    from dcvae_jax import table

    rows = table.run_table(FLAGS.config, workdir)
    print(table.format_markdown(rows), end="")
    print(f"table: {os.path.join(workdir, 'results.md')}")
    return
  if mode == "rescore":  # the workdir's own config, with the command line's eval settings
    config = experiment.load_config(workdir)
    config.eval = FLAGS.config.eval
    results = experiment.train_and_evaluate(config, workdir, rescore=True)
  else:
    results = experiment.train_and_evaluate(FLAGS.config, workdir)
  if distributed.is_primary():
    print(metrics.format_table(results))
    print(f"results: {os.path.join(workdir, 'results.json')}")


def _bad_command_line(message: str):
  print(f"error: bad command line: {message}", file=sys.stderr)
  sys.exit(2)


def _describe_parse_error(e: BaseException) -> str:
  """absl's and ml_collections' parse errors as one line (their messages hold newlines, tracebacks, quotes)."""
  text = str(e.args[0] if isinstance(e, (AttributeError, KeyError)) and e.args else e)
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  if any(l.startswith("Attempted") for l in lines):  # config file not found or not importable
    lines = ["cannot load the config file", lines[-1]]
  elif any(l.startswith("Traceback") for l in lines):  # an exception inside the config file: keep its last line
    lines = [lines[0].rstrip(":"), lines[-1]]
  return "; ".join(lines[:3])


def _config_args(argv) -> list:
  """[(index, value)] of every --config flag in argv (``--config=X`` or ``--config X``); the last one counts."""
  found = []
  for i, a in enumerate(argv[1:], 1):
    if a == "--":
      break
    if a.startswith("--config="):
      found.append((i, a[len("--config=") :]))
    elif a == "--config" and i + 1 < len(argv):
      found.append((i + 1, argv[i + 1]))
  return found


def _resolve_config_names(argv) -> list:
  """argv with each named config (``--config=mnist:smoke``) replaced by its file's path."""
  from dcvae_jax.config import config_file

  argv = list(argv)
  for i, value in _config_args(argv):
    try:
      path = config_file(value)
    except ValueError as e:
      _bad_command_line(str(e))
    argv[i] = f"--config={path}" if argv[i].startswith("--config=") else path
  return argv


def _unknown_override(argv) -> str | None:
  """The first --config.KEY of argv that the config (loaded without the overrides) does not have, as one
  message with the nearest key; None if every key exists (the failure was something else)."""
  import ml_collections

  from dcvae_jax.config import leaves, moved_message

  keys = [a[2:].split("=", 1)[0].split(".", 1)[1] for a in argv[1:] if a.startswith("--config.")]
  if not keys:
    return None
  found = _config_args(argv)
  own = flags.FlagValues()
  try:
    config_flags.DEFINE_config_file(
      "config", found[-1][1] if found else _default_config(), flag_values=own, sys_argv=argv[:1], lock_config=False
    )
    own(argv[:1])
    config = own.config
  except Exception:  # noqa: BLE001 - the config file itself fails: the generic message says why
    return None
  known: set[str] = set()
  for key, _ in leaves(config):
    parts = key.split(".")
    known.update(".".join(parts[: i + 1]) for i in range(len(parts)))
  for key in keys:
    node = config
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        if moved_message(key):
          return moved_message(key)
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else "; --mode=config lists every key"
        return f"unknown config key '{key}'{hint}"
      node = node[part]
  return None


def _parse_flags(argv):
  """absl's parser, then the config file and its overrides: any failure is one ``error:`` line, exit 2."""
  if any(a in ("--help", "-h", "-?", "--helpshort") for a in argv[1:]):
    _print_and_exit(usage())
  argv = _resolve_config_names(argv)
  try:
    _define_config_flag(argv)
    rest = FLAGS(argv)
    FLAGS.config.to_dict()  # loads the config file and applies the --config.* overrides
  except Exception as e:  # noqa: BLE001 - absl and ml_collections raise many types here
    _bad_command_line(_unknown_override(argv) or _describe_parse_error(e))
  if len(rest) > 1:
    _bad_command_line(f"unexpected arguments: {' '.join(rest[1:])}")
  if FLAGS.workdir and "://" in FLAGS.workdir:
    from dcvae_jax import errors, files

    try:
      files.check_local(FLAGS.workdir)
    except errors.WorkdirError as e:
      _bad_command_line(str(e))
  return rest


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
