"""Optional dependencies, checked before any work starts: a missing one is one ``error:`` line that names the
pip command, not an ImportError after the data is loaded and the models trained.

  plots        matplotlib          --mode=report, and --mode=table with table.figures
  tfds         tensorflow_datasets a dataset read from TFDS (no data.data_dir, not embedded or generated)
  (core)       tensorboardX        train.tensorboard (a core dependency; only a broken install lacks it)

Light on purpose: nothing here imports JAX, so ``main`` can check before it starts JAX.
"""

from __future__ import annotations

import importlib.util

from dcvae_jax.errors import MissingDependency


def installed(module: str) -> bool:
  """Whether ``module`` can be imported (found on the path and not blocked in sys.modules)."""
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # a parent package that fails, or a module without a spec
    return False


def pip_command(extra: str | None, package: str) -> str:
  if extra is None:
    return f'pip install "{package}" (a core dependency: pip install -e . or pip install dcvae_jax installs it)'
  return f'pip install -e ".[{extra}]" in a checkout, or pip install "dcvae_jax[{extra}]"'


def require(module: str, *, extra: str | None, package: str, needed_by: str, alternative: str = "") -> None:
  """Raise MissingDependency (one line: what needs it and the pip command) unless ``module`` is installed."""
  if not installed(module):
    also = f"; or {alternative}" if alternative else ""
    raise MissingDependency(f"{needed_by} needs {package}: {pip_command(extra, package)}{also}")


def check(config, mode: str) -> None:
  """Every optional dependency the job ``mode`` will need with ``config`` is installed (else MissingDependency).

  ``config``: the config the job runs with (for report and rescore: the workdir's own, if it has one)."""
  data = config.data
  if mode == "report" or (mode == "table" and bool(config.table.figures)):
    what = "--mode=report" if mode == "report" else "--mode=table with table.figures=True"
    require(
      "matplotlib",
      extra="plots",
      package="matplotlib",
      needed_by=what,
      alternative="--config.table.figures=False" if mode == "table" else "",
    )
  if mode in ("train", "table", "rescore", "report"):
    from dcvae_jax.data import datasets

    if datasets.needs_tfds(data.name, data.data_dir):
      require(
        "tensorflow_datasets",
        extra="tfds",
        package="tensorflow-datasets",
        needed_by=f"dataset {data.name} (read from TFDS)",
        alternative="--config.data.data_dir=DIR with its .npz or IDX files",
      )
  if mode in ("train", "table", "rescore") and bool(config.train.tensorboard):
    require(
      "tensorboardX",
      extra=None,
      package="tensorboardX",
      needed_by="train.tensorboard=True",
      alternative="--config.train.tensorboard=False",
    )
