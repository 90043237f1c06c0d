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
from typing import Any

import orjson

from millrace import collector
from millrace.envelope import Event, InvalidEvent, parse_event
from millrace.features.api import FeatureModule, feature_schema_hash, process_event
from millrace.progress import Progress
from millrace.records import encode, feature_record, label_record
from millrace.state import StateWrite

log = logging.getLogger(__name__)

MAX_TS = "__max_ts"
#: A feature or label record above this many bytes dead-letters its event (Kafka's default
#: message limit is about 1 MB; a record that cannot be produced must not block a transaction).
MAX_RECORD_BYTES = 256 * 1024
StateLoader = Callable[[Iterable[str]], dict[str, dict[str, float]]]


@dataclass(frozen=True)
class SourceEvent:
    value: bytes
    key: bytes | None
    partition: int
    offset: int
    #: Whether the event came as a Kafka message, whose key must then be the envelope's key
    #: (files and in-memory lists have no message key to check).
    from_kafka: bool = True


@dataclass(frozen=True)
class DeadLetter:
    source: SourceEvent
    reason: str
    kind: str


@dataclass
class BatchResult:
    #: (entity key, canonical bytes) to produce, and the same records as dicts, in order.
    features: list[tuple[str, bytes]] = field(default_factory=list)
    labels: list[tuple[str, bytes]] = field(default_factory=list)
    feature_records: list[dict[str, Any]] = field(default_factory=list)
    label_records: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    writes: list[StateWrite] = field(default_factory=list)
    newest_ts: int = 0


class Featurizer:
    def __init__(self, module: FeatureModule) -> None:
        self.module = module
        self.schema_hash = feature_schema_hash(module)

    @property
    def schema_marker(self) -> str:
        return f"{self.module.name}/v{self.module.version}"

    def run_batch(self, batch: list[SourceEvent], load_state: StateLoader) -> BatchResult:
        result = BatchResult()
        parsed: list[tuple[SourceEvent, Event]] = []
        for source in batch:
            try:
                parsed.append((source, _parse(source)))
            except InvalidEvent as exc:
                result.dead.append(DeadLetter(source, exc.reason, exc.kind))
        states = load_state(event.key for _, event in parsed)
        for source, event in parsed:
            state = states.setdefault(event.key, {})
            result.newest_ts = max(result.newest_ts, event.ts)
            try:
                self._check_lateness(event, state)
                outcome = process_event(self.module, event, state)
                feature = (
                    _encoded(feature_record(event, outcome, self.schema_hash))
                    if outcome.features is not None
                    else None
                )
                label = (
                    _encoded(label_record(event, outcome)) if outcome.label is not None else None
                )
            except InvalidEvent as exc:
                result.dead.append(DeadLetter(source, exc.reason, exc.kind))
                continue
            if feature is not None:
                result.features.append((event.key, feature[1]))
                result.feature_records.append(feature[0])
            if label is not None:
                result.labels.append((event.key, label[1]))
                result.label_records.append(label[0])
            update = dict(outcome.state_update)
            if event.ts > state.get(MAX_TS, -1.0):
                update[MAX_TS] = float(event.ts)
            if update:
                state.update(update)
                result.writes.append(StateWrite(event.key, update, source.partition, source.offset))
        return result

    def _check_lateness(self, event: Event, state: dict[str, float]) -> None:
        allowed = self.module.allowed_lateness_ms
        newest = state.get(MAX_TS)
        if allowed is not None and newest is not None and event.ts < newest - allowed:
            raise InvalidEvent(
                f"late event: ts {event.ts} is more than {allowed} ms behind {int(newest)}",
                "late",
            )


def _encoded(record: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    data = encode(record)
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidEvent(f"record too large: {len(data)} bytes > {MAX_RECORD_BYTES}", "too_large")
    return record, data


def _parse(source: SourceEvent) -> Event:
    if source.from_kafka and source.key is None:
        # Without the key, the partitioner spreads one entity over several partitions, and two
        # replicas would update its state concurrently and out of order.
        raise InvalidEvent("message has no key: the key must be the envelope's key", "missing_key")
    event = parse_event(source.value)
    if source.key is not None and source.key.decode("utf-8", "replace") != event.key:
        raise InvalidEvent("message key does not match the envelope's key", "key_mismatch")
    return event


# -- a bounded set of events, state in memory ---------------------------------------------


@dataclass
class BackfillResult:
    features: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
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

    def load(entities: Iterable[str]) -> dict[str, dict[str, float]]:
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
