"""The runnable examples in the library's docstrings are tests too."""

import doctest
import importlib
import pkgutil

import millrace
import pytest

MODULES = sorted(m.name for m in pkgutil.walk_packages(millrace.__path__, "millrace."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
