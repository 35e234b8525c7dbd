"""Every error a user can cause or meet. ``main`` prints each one in ``EXPECTED`` as a single ``error:`` line
and exits with status 1 (130 for ``Interrupted`` and any other KeyboardInterrupt, i.e. Ctrl-C); any other
exception is a bug and keeps its traceback."""


class ConfigError(ValueError):
  """A config that cannot be trained as asked (a field outside its allowed values, or values that clash)."""


class DataError(ValueError):
  """A dataset that cannot be loaded: missing, unreadable, or not what its spec says it is. The message is
  always one line (whatever an underlying exception contributed is collapsed)."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))


class ProtocolError(ValueError):
  """A protocol that cannot be run (unknown name, class out of range, no normal or no anomalous data)."""


class WorkdirError(RuntimeError):
  """The workdir holds a run that does not match the requested config, or is in use."""


class CheckpointError(RuntimeError):
  """Every checkpoint in a directory is damaged."""


class NonFiniteError(FloatingPointError):
  """A loss term or gradient became NaN/Inf."""


class MissingDependency(ImportError):
  """An optional extra the job needs is not installed; the message names the pip command."""


class Interrupted(KeyboardInterrupt):
  """SIGTERM / SIGINT arrived; a checkpoint was written before raising."""


EXPECTED = (ConfigError, DataError, ProtocolError, WorkdirError, CheckpointError, NonFiniteError, MissingDependency)
