"""Feature and label records: what the featurizer writes and the trainer reads.

Both are JSON with sorted keys (a canonical encoding, so equal records are equal bytes)::

    {"schema": "millrace.features/v1", "id": <subject>, "key": <entity>, "ts": <event ms>,
     "event_id": <source event id>, "feature_schema": <hash>, "features": {name: float}}
    {"schema": "millrace.label/v1", "id": <subject>, "key": <entity>, "ts": <event ms>,
     "event_id": <source event id>, "label": 0.0 | 1.0}
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from millrace.envelope import Event
from millrace.features.api import Outcome

FEATURES_V1 = "millrace.features/v1"
LABEL_V1 = "millrace.label/v1"


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def feature_record(event: Event, outcome: Outcome, schema_hash: str) -> dict[str, Any]:
    return {
        "schema": FEATURES_V1,
        "id": outcome.subject,
        "key": event.key,
        "ts": event.ts,
        "event_id": event.id,
        "feature_schema": schema_hash,
        "features": outcome.features,
    }


def label_record(event: Event, outcome: Outcome) -> dict[str, Any]:
    return {
        "schema": LABEL_V1,
        "id": outcome.subject,
        "key": event.key,
        "ts": event.ts,
        "event_id": event.id,
        "label": outcome.label,
    }


class FeatureRecord(msgspec.Struct, frozen=True, gc=False):
    """A feature record as a consumer reads it (unknown fields ignored)."""

    id: str
    key: str
    ts: int
    features: dict[str, float]


class LabelRecord(msgspec.Struct, frozen=True, gc=False):
    """A label record as a consumer reads it (unknown fields ignored)."""

    id: str
    key: str
    ts: int
    label: float


#: Typed decoders for the two topics: one C call per record, validation included (a record of
#: the wrong shape raises ``msgspec.ValidationError``, a broken one ``msgspec.DecodeError``).
decode_features = msgspec.json.Decoder(FeatureRecord).decode
decode_label = msgspec.json.Decoder(LabelRecord).decode
