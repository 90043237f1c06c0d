"""The state changelog: every entity state a batch wrote, in the batch's own Kafka transaction.

Topic ``<prefix>state-changelog``, compacted, partitioned like the events topic: partition p
holds what partition p's events made of their entities. A record's key is the entity; its value
(JSON, ``"v": 1``) is the entity's whole state after the batch, with the source partition and
the batch's last source offset in that partition (the state reflects every event up to it)::

    {"v": 1, "partition": 2, "offset": 51234, "state": {"n": 3.0, "__max_ts": 1357...}}

Because the records commit with the batch's features and consumed offsets, the changelog holds
exactly the committed state: Redis can be rebuilt from it whatever the events topic's retention.

The changelog covers what was written since it was turned on. A featurizer that finds state
committed before its changelog began writes one marker (key ``__covers_from__``, value
``{"v": 1, "offset": N}``): a rebuild then needs the events before offset N from the events topic,
and refuses to guess if retention deleted them.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
import orjson
from confluent_kafka import Consumer

from millrace.kafka import read_range, watermarks

VERSION = 1
COVERS_FROM = b"__covers_from__"


class ChangelogRecord(msgspec.Struct, frozen=True):
    v: int
    partition: int
    offset: int
    state: dict[str, float]


class Coverage(msgspec.Struct, frozen=True):
    v: int
    offset: int


_record = msgspec.json.Decoder(ChangelogRecord)
_coverage = msgspec.json.Decoder(Coverage)


def encode(partition: int, offset: int, state: Mapping[str, float]) -> bytes:
    return orjson.dumps({"v": VERSION, "partition": partition, "offset": offset, "state": state})


def encode_coverage(offset: int) -> bytes:
    return orjson.dumps({"v": VERSION, "offset": offset})


class Replayed(msgspec.Struct):
    """A changelog partition read to its end: the newest state of each entity, the newest source
    offset any record reflects, and where the changelog's coverage starts."""

    states: dict[str, dict[str, float]]
    reflected: int | None
    covers_from: int
    records: int


def replay(
    reader: Consumer, topic: str, partition: int, until: int, batch_size: int, timeout: float
) -> Replayed:
    """Read changelog ``partition`` to its end (its last stable offset: records of a transaction
    still open or aborted are not part of the committed state), keeping per entity the newest
    state that reflects source offsets up to ``until``."""
    low, end = watermarks(reader, topic)[partition]
    found = Replayed({}, None, 0, 0)
    for messages in read_range(reader, topic, partition, low, end, batch_size, timeout):
        for message in messages:
            found.records += 1
            value = message.value() or b""
            if message.key() == COVERS_FROM:
                found.covers_from = _coverage.decode(value).offset
                continue
            record = _record.decode(value)
            if record.offset > until:
                continue
            found.states[(message.key() or b"").decode()] = record.state
            if found.reflected is None or record.offset > found.reflected:
                found.reflected = record.offset
    return found
