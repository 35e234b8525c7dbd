"""The package's floors: a module imports only from its own floor or lower ones (function-level imports
included), and the report path never loads the training loop."""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "dcvae_jax"

# Lowest first. Top-level helpers sit on the ground floor; experiment and main on the top ones.
FLOORS = {
  "dcvae_jax.errors": 0,
  "dcvae_jax.options": 0,
  "dcvae_jax.log": 0,
  "dcvae_jax.files": 0,
  "dcvae_jax.config": 0,
  "dcvae_jax.validation": 0,
  "dcvae_jax.distributed": 0,
  "dcvae_jax.workdir": 0,
  "dcvae_jax.extras": 1,  # which extras a job needs depends on its data source
  "dcvae_jax.xla_cache": 0,
  "dcvae_jax.data": 1,
  "dcvae_jax.models": 2,
  "dcvae_jax.train": 3,
  "dcvae_jax.evaluators": 4,
  "dcvae_jax.report": 5,
  "dcvae_jax.experiment": 6,
  "dcvae_jax.table": 7,  # Table 1 runs one experiment per model
  "dcvae_jax.predict": 7,  # scores new images with a trained workdir, through experiment's scoring
  "dcvae_jax.detector": 7,  # fit = experiment.train_and_evaluate, scores = predict
  "dcvae_jax.main": 8,
}


def _floor(module: str) -> int:
  best = max((k for k in FLOORS if module == k or module.startswith(k + ".")), key=len)
  return FLOORS[best]


def _imports(path: pathlib.Path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dcvae_jax"):
      if node.module == "dcvae_jax":
        yield from (f"dcvae_jax.{a.name}" for a in node.names)
      else:
        yield node.module
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names if a.name.startswith("dcvae_jax"))


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_module_has_a_floor():
  for path in PACKAGE.rglob("*.py"):
    name = _module_name(path)
    if name != "dcvae_jax":
      _floor(name)  # raises ValueError (max of an empty sequence) for a module outside every floor


def test_no_import_goes_up_a_floor():
  upward = []
  for path in PACKAGE.rglob("*.py"):
    name = _module_name(path)
    if name == "dcvae_jax":
      continue
    for target in _imports(path):
      if _floor(target) > _floor(name):
        upward.append(f"{name} -> {target}")
  assert not upward, upward


def test_report_path_does_not_load_the_training_loop():
  code = (
    "import sys, dcvae_jax.report.html\n"
    "loaded = [m for m in ('dcvae_jax.train.trainer', 'dcvae_jax.experiment') if m in sys.modules]\n"
    "assert not loaded, loaded\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True)
