"""The event envelope (version 1): what producers write to the events topic and what
``POST /predict`` accepts.

.. code-block:: json

    {"schema": "millrace.event/v1", "id": "2013-01-15.UA1545.EWR/scheduled",
     "type": "flight.scheduled", "key": "N14228", "ts": 1358244900000, "data": {...}}

- ``id``: unique per event; ``type``: chosen by the feature module (it lists what it reads);
- ``key``: the entity the stateful features aggregate over; it is also the Kafka message key;
- ``ts``: event time, integer milliseconds since the Unix epoch (UTC);
- ``data``: the payload, typed by the feature module for each event type.

An :class:`EventDecoder` turns bytes into an :class:`Event` in two C calls: the envelope, then
the payload with the schema (a ``msgspec.Struct``) that the feature module declares for the
event's type. Anything that fails is an :class:`InvalidEvent` carrying a reason; the featurizer
sends it to the dead-letter topic and the HTTP API answers 422 with the same reason.

>>> from typing import Annotated
>>> class Reading(msgspec.Struct):
...     celsius: Annotated[float, msgspec.Meta(ge=-90, le=60)]
>>> decoder = EventDecoder({"reading": Reading})
>>> raw = b'{"id": "r1", "type": "reading", "key": "s1", "ts": 5, "data": {"celsius": 21}}'
>>> decoder.decode(raw).data
Reading(celsius=21.0)
>>> decoder.decode(raw.replace(b"21", b"99"))
Traceback (most recent call last):
...
millrace.envelope.InvalidEvent: invalid reading: data.celsius: Expected `float` <= 60.0
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from millrace.errors import MillraceError

SCHEMA_V1: Literal["millrace.event/v1"] = "millrace.event/v1"
MAX_EVENT_BYTES = 64 * 1024
MAX_TS_MS = 2**53 - 1

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Timestamp = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS_MS)]


#: Why an event was refused: a small fixed vocabulary, safe as a metric label and a header.
RejectionKind = Literal[
    "too_large",
    "malformed_json",
    "invalid_envelope",
    "unknown_type",
    "invalid_data",
    "key_mismatch",
    "missing_key",
    "late",
    "module_error",
    "no_features",
]


class InvalidEvent(MillraceError, ValueError):
    """An event that cannot be processed; ``reason`` is short and safe to put in a header."""

    def __init__(self, reason: str, kind: RejectionKind = "invalid_data") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: RejectionKind = kind


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One decoded, validated event; ``data`` is the payload as the module's schema for
    ``type`` decodes it (a plain ``dict`` when the module declares none)."""

    id: Name
    type: Name
    key: Name
    ts: Timestamp
    data: Any
    schema: Literal["millrace.event/v1"] = SCHEMA_V1


class _RawEvent(Event, frozen=True, forbid_unknown_fields=True, gc=False):
    """The envelope with its payload still undecoded (decoded next, by its type's schema)."""

    data: msgspec.Raw


_ENVELOPE = msgspec.json.Decoder(_RawEvent)
_ANY_JSON = msgspec.json.Decoder()
_PLAIN_PAYLOAD = msgspec.json.Decoder(dict[str, Any])
# msgspec's messages end with where the problem is: "Expected `int` <= 23 - at `$.data.hour`".
_WHERE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


class EventDecoder:
    """Decodes envelopes for the event types of one feature module.

    ``payload_schemas`` maps an event type to the ``msgspec.Struct`` of its ``data``;
    ``event_types`` (default: the keys of ``payload_schemas``) are all the types accepted, those
    without a schema keeping ``data`` as a dict. With neither, every type is accepted.

    Numbers follow JSON Schema, like the schemas published from these types: ``12.0`` is an
    integer, ``true`` and ``"12"`` are not numbers.
    """

    def __init__(
        self,
        payload_schemas: Mapping[str, type] | None = None,
        event_types: frozenset[str] | None = None,
    ) -> None:
        schemas = dict(payload_schemas or {})
        self.event_types = event_types if event_types is not None else frozenset(schemas) or None
        self.schemas = schemas
        self._payload: dict[str, msgspec.json.Decoder[Any]] = {
            t: msgspec.json.Decoder(s) for t, s in schemas.items()
        }

    def decode(self, raw: bytes | str) -> Event:
        """Decode and validate one envelope, or raise :class:`InvalidEvent` with the reason."""
        if len(raw) > MAX_EVENT_BYTES:
            raise InvalidEvent(
                f"event too large: {len(raw)} bytes > {MAX_EVENT_BYTES}", "too_large"
            )
        try:
            envelope = _ENVELOPE.decode(raw)
            payload = self._payload.get(envelope.type, _PLAIN_PAYLOAD)
            data = payload.decode(envelope.data)
        except msgspec.ValidationError:  # (a subclass of DecodeError)
            # The rare path: find what is wrong, or accept what JSON Schema accepts (12.0 for an
            # integer) that msgspec's strict decoding refuses.
            return self.convert(_any_json(raw))
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"malformed JSON: {exc}", "malformed_json") from None
        self._check_type(envelope.type)
        return Event(envelope.id, envelope.type, envelope.key, envelope.ts, data, envelope.schema)

    def convert(self, decoded: Any) -> Event:
        """Validate an already decoded envelope (a JSON value), with the same rules."""
        if not isinstance(decoded, dict):
            raise InvalidEvent("event must be a JSON object", "invalid_envelope")
        envelope = _converted(decoded, _RawEnvelopeObject, "invalid envelope", "invalid_envelope")
        self._check_type(envelope.type)
        schema = self.schemas.get(envelope.type, dict[str, Any])
        data = _converted(envelope.data, schema, f"invalid {envelope.type}", "invalid_data", "data")
        return Event(envelope.id, envelope.type, envelope.key, envelope.ts, data, envelope.schema)

    def _check_type(self, event_type: str) -> None:
        if self.event_types is not None and event_type not in self.event_types:
            raise InvalidEvent(f"unknown event type {event_type!r}", "unknown_type")


def _any_json(raw: bytes | str) -> Any:
    try:
        return _ANY_JSON.decode(raw)
    except msgspec.DecodeError as exc:  # a number beyond a double's range, say
        raise InvalidEvent(f"malformed JSON: {exc}", "malformed_json") from None


class _RawEnvelopeObject(Event, frozen=True, forbid_unknown_fields=True, gc=False):
    data: dict[str, Any]


def _converted(value: Any, schema: Any, what: str, kind: RejectionKind, prefix: str = "") -> Any:
    """``value`` as ``schema``, integral floats taken as integers where an int is expected."""
    for _ in range(64):  # each round fixes one integral float
        try:
            return msgspec.convert(value, schema, strict=True)
        except msgspec.ValidationError as exc:
            message, path = _split(str(exc))
            if not (message.startswith("Expected `int`") and _make_integral(value, path)):
                where = ".".join(p for p in (prefix, path) if p)
                raise InvalidEvent(
                    f"{what}: {where + ': ' if where else ''}{message}", kind
                ) from None
    raise InvalidEvent(f"{what}: too many numbers written as floats", kind)


def _split(message: str) -> tuple[str, str]:
    match = _WHERE.match(message)
    assert match is not None  # the pattern matches any text
    return match["what"], (match["path"] or "").lstrip(".")


def _make_integral(value: Any, path: str) -> bool:
    """Replace the float at ``path`` (``a.b[2].c``) by its integer, if it is one."""
    steps: list[str | int] = [
        int(index) if index else name for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)
    ]
    if not steps:
        return False
    parent = value
    try:
        for step in steps[:-1]:
            parent = parent[step]
        number = parent[steps[-1]]
    except (KeyError, IndexError, TypeError):
        return False
    if type(number) is not float or not number.is_integer():
        return False
    parent[steps[-1]] = int(number)
    return True


#: Any type, ``data`` as a dict: for tools and tests that have no module at hand.
_ANY_TYPE = EventDecoder()


def parse_event(raw: bytes | str) -> Event:
    """Decode and validate one envelope of any type, or raise :class:`InvalidEvent`."""
    return _ANY_TYPE.decode(raw)


# -- removed names, importable for one more release -----------------------------------------


def _describe_errors(errors: Any, whole: str = "event") -> str:
    """The first three of pydantic's errors as one line: ``where: what; ...``."""
    parts = []
    for item in list(errors)[:3]:
        where = ".".join(str(p) for p in item.get("loc", ())) or whole
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or f"invalid {whole}"


def _describe_validation_error(error: Any) -> str:
    return _describe_errors(error.errors())


_REMOVED: dict[str, tuple[Any, str]] = {
    "describe_errors": (
        _describe_errors,
        "declare payloads as msgspec Structs: EventDecoder's InvalidEvent carries the reason",
    ),
    "describe_validation_error": (
        _describe_validation_error,
        "declare payloads as msgspec Structs: EventDecoder's InvalidEvent carries the reason",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _REMOVED:
        found, instead = _REMOVED[name]
        warnings.warn(
            f"millrace.envelope.{name} is deprecated and goes in the next release; {instead}",
            DeprecationWarning,
            stacklevel=2,
        )
        return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
