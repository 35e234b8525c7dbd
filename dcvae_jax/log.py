"""Progress and status messages through absl logging, so that ``--verbosity`` works.

``log`` is the default of every ``log=`` parameter (``experiment.train_and_evaluate``, ``train.train_runs``,
``report.make_report``, ...): INFO, or WARNING for a message that starts with ``warning:``. From Python, pass
any callable taking one string instead (``log=print``, ``log=lambda *_: None``).

On the command line (``dcvae_jax.main``) our INFO messages show by default and ``--verbosity=-1`` keeps
only warnings; other libraries (Orbax logs every checkpoint save at INFO) stay at WARNING unless
``--verbosity=1`` or more.
"""

from __future__ import annotations

import logging as std_logging
import os

from absl import logging

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def log(message: str) -> None:
  """One progress or status message: absl INFO, or WARNING when it starts with ``warning:``."""
  level = logging.WARNING if message.startswith("warning:") else logging.INFO
  logging.log(level, "%s", message, stacklevel=2)  # the record names the caller, not this file


class OnlyOurInfo(std_logging.Filter):
  """Lets through every record at WARNING or above, and below that only the records of dcvae_jax."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


def quiet_other_libraries() -> None:
  """Other libraries' INFO and DEBUG messages are dropped unless ``--verbosity`` asks for DEBUG (1 or more)."""
  handler = logging.get_absl_handler()
  for f in list(handler.filters):
    if isinstance(f, OnlyOurInfo):
      handler.removeFilter(f)
  if logging.get_verbosity() < logging.DEBUG:
    handler.addFilter(OnlyOurInfo())
