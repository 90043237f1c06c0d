"""The one featurization loop body, shared by the live runner, the backfill, the trainer's
baseline and the tests.

:class:`Featurizer` turns a batch of raw events into feature records, label records,
dead letters and fenced state writes. Within a batch it carries each entity's state forward in
memory, so the result equals processing the events one at a time in offset order.
:func:`backfill` runs it over a bounded set of events with the state in memory and returns the
records exactly as the live runner would have produced them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from millrace import collector
from millrace.envelope import Event, InvalidEvent, RejectionKind
from millrace.features.api import (
    FeatureModule,
    event_decoder,
    feature_schema_hash,
    process_event,
)
from millrace.progress import Progress
from millrace.records import FeatureRecord, LabelRecord, encode

if TYPE_CHECKING:
    from confluent_kafka import Message

log = logging.getLogger(__name__)

MAX_TS = "__max_ts"
#: A feature or label record above this many bytes dead-letters its event (Kafka's default
#: message limit is about 1 MB; a record that cannot be produced must not block a transaction).
MAX_RECORD_BYTES = 256 * 1024
#: Reads the states of a batch's entities (entity -> the source partition it came from): every
#: entity asked for is in the answer, a new one with an empty state.
StateLoader = Callable[[Mapping[str, int]], dict[str, dict[str, float]]]


class SourceEvent(msgspec.Struct, frozen=True, gc=False):
    value: bytes
    key: bytes | None
    partition: int
    offset: int
    #: Whether the event came as a Kafka message, whose key must then be the envelope's key
    #: (files and in-memory lists have no message key to check).
    from_kafka: bool = True


def source_event(message: Message) -> SourceEvent:
    """The event a Kafka record carries (a data record: it has a partition and an offset)."""
    partition, offset = message.partition(), message.offset()
    assert partition is not None and offset is not None  # data messages always have both
    return SourceEvent(message.value() or b"", message.key(), partition, offset)


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    source: SourceEvent
    reason: str
    kind: RejectionKind


@dataclass
class BatchResult:
    #: (entity key, canonical bytes) to produce, and the same records, in order.
    features: list[tuple[str, bytes]] = field(default_factory=list)
    labels: list[tuple[str, bytes]] = field(default_factory=list)
    feature_records: list[FeatureRecord] = field(default_factory=list)
    label_records: list[LabelRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: partition -> entity -> the state fields the batch set (their latest values).
    writes: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: entity -> its whole state after the batch (the batch's own, changed in place by the
    #: next batch over the same states: read it before that one runs).
    states: dict[str, dict[str, float]] = field(default_factory=dict)
    newest_ts: int = 0
    #: How many source events the batch had.
    events: int = 0


class Featurizer:
    def __init__(self, module: FeatureModule) -> None:
        self.module = module
        self.schema_hash = feature_schema_hash(module)
        self.decoder = event_decoder(module)

    @property
    def schema_marker(self) -> str:
        return f"{self.module.name}/v{self.module.version}"

    def run_batch(self, batch: list[SourceEvent], load_state: StateLoader) -> BatchResult:
        result = BatchResult(events=len(batch))
        parsed: list[tuple[SourceEvent, Event]] = []
        entities: dict[str, int] = {}
        for source in batch:
            try:
                event = self._parse(source)
            except InvalidEvent as exc:
                result.dead.append(DeadLetter(source, exc.reason, exc.kind))
                continue
            parsed.append((source, event))
            entities[event.key] = source.partition
        states = result.states = load_state(entities)
        for source, event in parsed:
            self._run_one(source, event, states[event.key], result)
        return result

    def _run_one(
        self, source: SourceEvent, event: Event, state: dict[str, float], result: BatchResult
    ) -> None:
        ts = event.ts
        if ts > result.newest_ts:
            result.newest_ts = ts
        newest = state.get(MAX_TS)
        allowed = self.module.allowed_lateness_ms
        try:
            if allowed is not None and newest is not None and ts < newest - allowed:
                raise InvalidEvent(
                    f"late event: ts {ts} is more than {allowed} ms behind {int(newest)}", "late"
                )
            outcome = process_event(self.module, event, state)
            feature = label = None
            if outcome.features is not None:
                feature = FeatureRecord(
                    outcome.subject, event.key, ts, outcome.features, event.id, self.schema_hash
                )
                feature_bytes = _encoded(feature)
            if outcome.label is not None:
                label = LabelRecord(outcome.subject, event.key, ts, outcome.label, event.id)
                label_bytes = _encoded(label)
        except InvalidEvent as exc:
            result.dead.append(DeadLetter(source, exc.reason, exc.kind))
            return
        if feature is not None:
            result.features.append((event.key, feature_bytes))
            result.feature_records.append(feature)
        if label is not None:
            result.labels.append((event.key, label_bytes))
            result.label_records.append(label)
        update = outcome.state_update
        if newest is None or ts > newest:
            update = {**update, MAX_TS: float(ts)}
        if update:
            state.update(update)
            by_entity = result.writes.get(source.partition)
            if by_entity is None:
                by_entity = result.writes[source.partition] = {}
            written = by_entity.get(event.key)
            if written is None:
                by_entity[event.key] = dict(update)
            else:
                written.update(update)

    def _parse(self, source: SourceEvent) -> Event:
        if source.from_kafka and source.key is None:
            # Without the key, the partitioner spreads one entity over several partitions, and
            # two replicas would update its state concurrently and out of order.
            raise InvalidEvent(
                "message has no key: the key must be the envelope's key", "missing_key"
            )
        event = self.decoder.decode(source.value)
        if source.key is not None and source.key.decode("utf-8", "replace") != event.key:
            raise InvalidEvent("message key does not match the envelope's key", "key_mismatch")
        return event


def _encoded(record: FeatureRecord | LabelRecord) -> bytes:
    data = encode(record)
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidEvent(f"record too large: {len(data)} bytes > {MAX_RECORD_BYTES}", "too_large")
    return data


# -- a bounded set of events, state in memory ---------------------------------------------


@dataclass
class BackfillResult:
    features: list[FeatureRecord] = field(default_factory=list)
    labels: list[LabelRecord] = field(default_factory=list)
    dead: list[tuple[bytes, str]] = field(default_factory=list)
    state: dict[str, dict[str, float]] = field(default_factory=dict)
    events: int = 0
    #: The records' canonical bytes, parallel to ``features`` and ``labels``.
    feature_bytes: list[bytes] = field(default_factory=list)
    label_bytes: list[bytes] = field(default_factory=list)


def backfill(
    featurizer: Featurizer,
    sources: Iterable[SourceEvent],
    batch_size: int = 10_000,
    on_progress: Progress | None = None,
) -> BackfillResult:
    result = BackfillResult()

    def load(entities: Mapping[str, int]) -> dict[str, dict[str, float]]:
        # The batch mutates what it is handed, so the in-memory store is the state itself.
        return {e: result.state.setdefault(e, {}) for e in entities}

    batch: list[SourceEvent] = []
    # The result only grows and holds no cycles: pausing the cyclic collector, which would
    # otherwise rescan it over and over, cuts a third of the run time.
    with collector.paused():
        for source in sources:
            batch.append(source)
            if len(batch) >= batch_size:
                _run(featurizer, batch, load, result, on_progress)
                batch = []
        if batch:
            _run(featurizer, batch, load, result, on_progress)
    log.info(
        "backfill done",
        extra={
            "events": result.events,
            "features": len(result.features),
            "labels": len(result.labels),
            "dead": len(result.dead),
        },
    )
    return result


def _run(
    featurizer: Featurizer,
    batch: list[SourceEvent],
    load: StateLoader,
    result: BackfillResult,
    on_progress: Progress | None,
) -> None:
    out = featurizer.run_batch(batch, load)
    result.features += out.feature_records
    result.labels += out.label_records
    result.feature_bytes += [v for _, v in out.features]
    result.label_bytes += [v for _, v in out.labels]
    result.dead.extend((d.source.value, d.reason) for d in out.dead)
    result.events += len(batch)
    if on_progress:
        on_progress(result.events)


def from_envelopes(events: Iterable[Mapping[str, Any]]) -> Iterator[SourceEvent]:
    for offset, event in enumerate(events):
        key = event.get("key")
        encoded = key.encode() if isinstance(key, str) else None
        yield SourceEvent(orjson.dumps(event), encoded, 0, offset, from_kafka=False)
