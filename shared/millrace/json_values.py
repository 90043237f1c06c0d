"""Numbers as JSON Schema means them, for pydantic models that validate decoded JSON.

Pydantic's lax mode takes ``true`` and ``"12"`` for an ``int`` and ``"1.5"`` for a ``float``;
its strict mode refuses ``12.0`` for an ``int``, which JSON Schema calls an integer. The
published schemas (OpenAPI, the feature modules' payloads) say what JSON Schema says, so the
validation must too:

>>> from pydantic import TypeAdapter
>>> integer = TypeAdapter(JsonInt)
>>> integer.validate_python(12.0), integer.validate_python(12)
(12, 12)
>>> integer.validate_python(True)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for function-before[...]
...
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Strict


def _not_bool_or_text(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be a JSON integer")
    return value


#: Put last in ``Annotated[int, Field(...), JSON_INTEGER]`` (after the bounds, so they stay
#: ``minimum``/``maximum`` in the schema): ``1`` and ``1.0``, never ``true`` or ``"1"``.
JSON_INTEGER = BeforeValidator(_not_bool_or_text)
JsonInt = Annotated[int, JSON_INTEGER]
#: A JSON number: an int or a float, never ``true`` or ``"1.5"``.
JSON_NUMBER = Strict()
#: A JSON boolean only.
JSON_BOOLEAN = Strict()
