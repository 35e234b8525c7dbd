"""The errors a user can cause or meet; ``main`` turns each into one ``error:`` line and exit status 1."""

from dcvae_jax.data import DataError
from dcvae_jax.experiment import WorkdirError
from dcvae_jax.protocols import ProtocolError
from dcvae_jax.train import CheckpointError, ConfigError, Interrupted, NonFiniteError

EXPECTED = (DataError, WorkdirError, ProtocolError, ConfigError, NonFiniteError, CheckpointError, KeyError)
