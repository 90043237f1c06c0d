"""One root: every exception class the project defines derives from MillraceError."""

from __future__ import annotations

import importlib
import inspect

from millrace.errors import MillraceError
from tests.helpers import project_modules


def test_every_exception_class_derives_from_millrace_error():
    strays = []
    for name in project_modules():
        if name.endswith("__main__") or name.startswith("millrace_flights"):
            continue
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            mine = cls.__module__ == name and issubclass(cls, BaseException)
            if mine and not issubclass(cls, MillraceError):
                strays.append(f"{name}.{cls.__name__}")
    assert strays == []
