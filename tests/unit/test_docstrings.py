"""The runnable examples in the library's docstrings are tests too."""

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = (
    "millrace",
    "millrace_featurizer",
    "millrace_trainer",
    "millrace_predictor",
    "millrace_registry",
    "millrace_cli",
    "millrace_stack",
    "millrace_flights",
)
MODULES = sorted(
    m.name
    for package in PACKAGES
    for m in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
