"""Objects named in settings by their import path: a feature module, a learner, a function.

>>> load_object("json:dumps", "a setting")([1])
'[1]'
>>> load_object("os.path.join", "a setting")("a", "b")
'a/b'
>>> load_object("no_such_package:thing", "feature_module")
Traceback (most recent call last):
...
ValueError: cannot load feature_module 'no_such_package:thing': No module named 'no_such_package'
"""

from __future__ import annotations

import importlib
from typing import Any


def load_object(path: str, setting: str) -> Any:
    """The object ``package.module:name`` (or ``package.module.name``) names; a ValueError
    naming ``setting`` if it cannot be imported."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot load {setting} {path!r}: {exc}") from None
