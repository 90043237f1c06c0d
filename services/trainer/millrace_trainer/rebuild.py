"""A published version trained again from its parent and its lineage, and its bytes compared.

The lineage of a stream version names the records it learned since its parent (per source
partition, inclusive offset ranges) and the batches they made (samples per batch, and a chained
digest of each batch's ``(time, id)`` order). A rebuild reads exactly those records from Kafka,
pairs each feature record with its label, orders the samples as the trainer's join hands them
out (by time, then id), cuts them into the recorded batches, checks the digest, and learns them
on the parent's model with the trainer's own training step. Same bytes: the version is what its
lineage says. ``millrace models rebuild`` runs it from a terminal.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer

from millrace.artifacts import dump_model, load_model
from millrace.errors import MillraceError
from millrace.join import Sample
from millrace.kafka import Brokers, SourcePartition, consumer_config, has_data
from millrace.records import FeatureRecord, LabelRecord, decode_features, decode_label
from millrace.registry_client import RegistryClient
from millrace_trainer.lineage import EMPTY_DIGEST, LEARNED_FORMAT, chain_digest, expand
from millrace_trainer.training import learn_windows


class NotRebuildable(MillraceError):
    """The version's lineage cannot rebuild it (a baseline, an older release's lineage, or
    records Kafka no longer holds); the message says which."""


@dataclass(frozen=True)
class Rebuilt:
    version: int
    parent: int
    samples: int
    batches: int
    #: Whether the rebuilt model's bytes are the published artifact's.
    identical: bool
    #: Why the version was published (the rule), from its lineage.
    published_because: str


def rebuild_version(
    client: RegistryClient, brokers: Brokers, model: str, version: int, timeout: float = 120.0
) -> Rebuilt:
    """Train ``version`` of ``model`` again from its parent and lineage and compare the bytes."""
    lineage = client.get_version(model, version)["metadata"].get("lineage") or {}
    parent, learned = lineage.get("parent"), lineage.get("learned")
    if parent is None:
        raise NotRebuildable(
            f"version {version} of {model} is a baseline, trained from "
            f"{lineage.get('source') or 'a bounded data set'}, not from a parent: the trainer "
            "trains it again from that source"
        )
    if not learned or learned.get("format") != LEARNED_FORMAT:
        raise NotRebuildable(
            f"the lineage of version {version} of {model} does not name the records it learned "
            f"(format {LEARNED_FORMAT}): it was published by an older release, or after a restart "
            "from an older release's checkpoint"
        )
    features_topic = lineage["source"]["stream"][0]
    features, labels = _read(brokers, learned["records"], features_topic, timeout)
    batches = _batches(_pair(features, labels), learned["batch_samples"], learned["digest"])
    learner = load_model(client.download(model, int(parent)), allow_pickle=True)
    learn_windows(learner, batches)
    identical = dump_model(learner) == client.download(model, version)
    return Rebuilt(
        version,
        int(parent),
        sum(map(len, batches)),
        len(batches),
        identical,
        str(lineage.get("published_because", "")),
    )


FeaturesRead = list[tuple[SourcePartition, int, FeatureRecord]]
LabelsRead = list[tuple[SourcePartition, int, LabelRecord]]


def _read(
    brokers: Brokers, records: dict[str, list[list[int]]], features_topic: str, timeout: float
) -> tuple[FeaturesRead, LabelsRead]:
    """The feature and label records at the lineage's offsets, decoded, in (partition,
    offset) order; an offset Kafka no longer holds (retention) is said, never skipped."""
    reader = Consumer(consumer_config(brokers, f"millrace-rebuild-{uuid.uuid4().hex}"))
    try:
        wanted = {SourcePartition(name): set(expand(ranges)) for name, ranges in records.items()}
        last = {partition: max(offsets) for partition, offsets in wanted.items()}
        for partition, offsets in wanted.items():
            low, high = reader.get_watermark_offsets(partition.at(0), timeout=30)
            if low > min(offsets) or high <= last[partition]:
                raise NotRebuildable(
                    f"{partition} holds offsets [{low}, {high}); the lineage needs "
                    f"[{min(offsets)}, {last[partition]}]"
                    + (" (deleted by retention)" if low > min(offsets) else "")
                )
        found = _consume(reader, wanted, last, timeout)
    finally:
        reader.close()
    for partition, offsets in wanted.items():
        missing = len(offsets) - len(found.get(partition, {}))
        if missing:
            raise NotRebuildable(
                f"{partition}: {missing} of the {len(offsets)} records the lineage names are "
                "not committed records there"
            )
    features: FeaturesRead = []
    labels: LabelsRead = []
    for partition in sorted(found):
        for offset, value in sorted(found[partition].items()):
            if partition.topic == features_topic:
                features.append((partition, offset, decode_features(value)))
            else:
                labels.append((partition, offset, decode_label(value)))
    return features, labels


def _consume(
    reader: Consumer,
    wanted: dict[SourcePartition, set[int]],
    last: dict[SourcePartition, int],
    timeout: float,
) -> dict[SourcePartition, dict[int, bytes]]:
    """partition -> offset -> value of the wanted records, every partition read at once from
    its first wanted offset past its last (read_committed: aborted records are passed over)."""
    reader.assign([partition.at(min(offsets)) for partition, offsets in wanted.items()])
    here = [partition.at(0) for partition in wanted]
    names = {(p.topic, p.number): p for p in wanted}
    found: dict[SourcePartition, dict[int, bytes]] = {p: {} for p in wanted}
    deadline = time.monotonic() + timeout
    while any(tp.offset <= last[names[(tp.topic, tp.partition)]] for tp in reader.position(here)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading the lineage's records took over {timeout:g} s")
        for message in filter(has_data, reader.consume(10_000, timeout=0.05)):
            partition = names[(str(message.topic()), message.partition() or 0)]
            offset = message.offset() or 0
            if offset in wanted[partition]:
                found[partition][offset] = message.value() or b""
    return found


def _pair(features: FeaturesRead, labels: LabelsRead) -> list[Sample]:
    """Each feature record with the label of its id (the first unpaired, in offset order),
    in the join's order: by time, then id."""
    waiting: dict[str, deque[LabelRecord]] = defaultdict(deque)
    for _, _, label in labels:
        waiting[label.id].append(label)
    samples = []
    for partition, offset, record in features:
        queue = waiting.get(record.id)
        if not queue:
            raise NotRebuildable(
                f"the feature record at {partition}@{offset} has no label among the records "
                "the lineage names"
            )
        samples.append(Sample(record.id, record.ts, record.features, queue.popleft().label))
    if any(waiting.values()):
        raise NotRebuildable("the lineage names labels that no feature record it names pairs")
    samples.sort(key=lambda s: (s.ts, s.id))
    return samples


def _batches(samples: list[Sample], sizes: Sequence[int], digest: str) -> list[list[Sample]]:
    """The samples cut into the recorded batches, checked against the recorded digest."""
    if sum(sizes) != len(samples):
        raise NotRebuildable(
            f"the lineage's batches hold {sum(sizes)} samples; its records pair into {len(samples)}"
        )
    batches, start, chained = [], 0, EMPTY_DIGEST
    for size in sizes:
        batch = samples[start : start + size]
        chained = chain_digest(chained, batch)
        batches.append(batch)
        start += size
    if chained != digest:
        raise NotRebuildable(
            "the lineage's records pair into batches in another order than the version learned "
            "(their digest differs)"
        )
    return batches


def stream_lineages(client: RegistryClient, model: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(version, lineage) of every version of ``model`` that has a parent (the ones a lineage
    can rebuild), oldest first."""
    found, offset = [], 0
    while True:
        page = client.list_versions(model, limit=100, offset=offset)
        for item in page["items"]:
            lineage = item["metadata"].get("lineage") or {}
            if lineage.get("parent") is not None:
                found.append((int(item["version"]), lineage))
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return iter(sorted(found, key=lambda pair: pair[0]))


def stream_versions(client: RegistryClient, model: str) -> list[int]:
    return [version for version, _ in stream_lineages(client, model)]


def published_samples(client: RegistryClient, model: str) -> int:
    """Samples the stream versions of ``model`` learned, by their lineage: once it equals what
    the trainer learned, everything learned is served."""
    return sum(
        sum((lineage.get("learned") or {}).get("batch_samples", []))
        for _, lineage in stream_lineages(client, model)
    )
