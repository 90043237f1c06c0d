"""Feature and label records: what the featurizer writes and the trainer reads.

Both are JSON with sorted keys (a canonical encoding, so equal records are equal bytes)::

    {"schema": "millrace.features/v1", "id": <subject>, "key": <entity>, "ts": <event ms>,
     "event_id": <source event id>, "feature_schema": <hash>, "features": {name: float}}
    {"schema": "millrace.label/v1", "id": <subject>, "key": <entity>, "ts": <event ms>,
     "event_id": <source event id>, "label": 0.0 | 1.0}
"""

from __future__ import annotations

import msgspec

FEATURES_V1 = "millrace.features/v1"
LABEL_V1 = "millrace.label/v1"


class FeatureRecord(msgspec.Struct, frozen=True, gc=False):
    """A feature record (a consumer reading one ignores the fields it does not know)."""

    id: str
    key: str
    ts: int
    features: dict[str, float]
    event_id: str = ""
    feature_schema: str = ""
    schema: str = FEATURES_V1


class LabelRecord(msgspec.Struct, frozen=True, gc=False):
    """A label record (a consumer reading one ignores the fields it does not know)."""

    id: str
    key: str
    ts: int
    label: float
    event_id: str = ""
    schema: str = LABEL_V1


#: The canonical encoding: keys sorted, numbers in their shortest exact form.
encode = msgspec.json.Encoder(order="sorted").encode
#: Typed decoders for the two topics: one C call per record, validation included (a record of
#: the wrong shape raises ``msgspec.ValidationError``, a broken one ``msgspec.DecodeError``).
decode_features = msgspec.json.Decoder(FeatureRecord).decode
decode_label = msgspec.json.Decoder(LabelRecord).decode
