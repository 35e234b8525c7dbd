"""dcvae_jax.options: the one place allowed values live, matching what each module implements, and light."""

import subprocess
import sys

from dcvae_jax import options
from dcvae_jax.models import networks
from dcvae_jax.models import registry as models


def test_model_names_match_the_registry():
  assert set(options.MODEL_NAMES) == set(models.MODELS)


def test_archs_match_the_networks():
  assert set(options.ARCHS) == set(networks.ENCODERS) == set(networks.DECODERS)


def test_validation_imports_nothing_heavy():
  """validate() reads its allowed values without importing JAX, Flax or any module that acts on them."""
  code = (
    "import sys, dcvae_jax.validation\n"
    "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax', 'orbax', 'numpy'))\n"
    "ours = sorted(m for m in sys.modules if m.startswith('dcvae_jax.'))\n"
    "print(heavy, ours)\n"
    "assert not heavy, heavy\n"
    "assert set(ours) <= {'dcvae_jax.validation', 'dcvae_jax.options', 'dcvae_jax.errors'}, ours\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True)
