"""The event envelope (version 1): what producers write to the events topic and what
``POST /predict`` accepts.

.. code-block:: json

    {"schema": "millrace.event/v1", "id": "2013-01-15.UA1545.EWR/scheduled",
     "type": "flight.scheduled", "key": "N14228", "ts": 1358244900000, "data": {...}}

- ``id``: unique per event; ``type``: chosen by the feature module (it lists what it reads);
- ``key``: the entity the stateful features aggregate over; it is also the Kafka message key;
- ``ts``: event time, integer milliseconds since the Unix epoch (UTC);
- ``data``: the payload, validated by the feature module for each event type.

Anything that fails here is an :class:`InvalidEvent` carrying a reason; the featurizer sends it to
the dead-letter topic and the HTTP API answers 422 with the same reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from millrace.json_values import JSON_INTEGER

SCHEMA_V1 = "millrace.event/v1"
MAX_EVENT_BYTES = 64 * 1024
MAX_TS_MS = 2**53 - 1

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class InvalidEvent(ValueError):
    """An event that cannot be processed; ``reason`` is short and safe to put in a header."""

    def __init__(self, reason: str, kind: str = "invalid_data") -> None:
        super().__init__(reason)
        self.reason = reason
        #: A small fixed vocabulary, safe as a metric label: too_large, malformed_json,
        #: invalid_envelope, unknown_type, invalid_data, key_mismatch, missing_key, late,
        #: module_error.
        self.kind = kind


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["millrace.event/v1"] = Field(default="millrace.event/v1", alias="schema")
    id: Name
    type: Name
    key: Name
    ts: Annotated[int, Field(ge=0, le=MAX_TS_MS), JSON_INTEGER]
    data: dict[str, Any]


def describe_errors(errors: Any, whole: str = "event") -> str:
    """The first three of pydantic's errors as one line: ``where: what; ...``."""
    parts = []
    for item in list(errors)[:3]:
        where = ".".join(str(p) for p in item.get("loc", ())) or whole
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or f"invalid {whole}"


def describe_validation_error(error: ValidationError) -> str:
    return describe_errors(error.errors())


def parse_event(raw: bytes | str) -> Event:
    """Decode and validate one envelope, or raise :class:`InvalidEvent` with the reason."""
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event too large: {len(raw)} bytes > {MAX_EVENT_BYTES}", "too_large")
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}", "malformed_json") from None
    return validate_event(decoded)


def validate_event(decoded: Any) -> Event:
    if not isinstance(decoded, dict):
        raise InvalidEvent("event must be a JSON object", "invalid_envelope")
    try:
        return Event.model_validate(decoded)
    except ValidationError as exc:
        raise InvalidEvent(
            f"invalid envelope: {describe_validation_error(exc)}", "invalid_envelope"
        ) from None
