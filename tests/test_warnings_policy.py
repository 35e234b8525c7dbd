"""The warnings policy of [tool.pytest.ini_options]: a warning issued from a module of the package (dcvae_jax or
dcvae_jax.*) is an error in the tests; one from any other module stays a warning."""

import warnings

import pytest

POLICY = r"error:::dcvae_jax(\..*)?"


def _warn_from(module_name, category=UserWarning):
  """warnings.warn called from code whose module is ``module_name`` (the frame's __name__ decides the filter)."""
  code = compile(f"import warnings\nwarnings.warn('from {module_name}', {category.__name__})", module_name, "exec")
  exec(code, {"__name__": module_name, category.__name__: category})


def test_the_policy_is_configured(request):
  assert POLICY in request.config.getini("filterwarnings")


@pytest.mark.parametrize("module_name", ["dcvae_jax", "dcvae_jax.main", "dcvae_jax.evaluators.anomaly_scores"])
@pytest.mark.parametrize("category", [UserWarning, RuntimeWarning, DeprecationWarning])
def test_a_package_warning_fails(module_name, category):
  with pytest.raises(category, match=f"from {module_name}"):
    _warn_from(module_name, category)


@pytest.mark.parametrize("module_name", ["numpy_like", "tests.helpers", "other.dcvae_jax"])
def test_another_module_warning_is_only_recorded(module_name):
  with warnings.catch_warnings(record=True) as caught:  # keeps the filters pytest installed from the config
    _warn_from(module_name)
  assert [str(w.message) for w in caught] == [f"from {module_name}"]
