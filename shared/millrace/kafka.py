"""Kafka helpers: client configs, topic creation and readiness.

Every function that makes a client takes :data:`Brokers`: a bootstrap address, or the full
librdkafka config a process starts from (``CommonSettings.kafka``: the address plus the
security settings), so TLS and SASL reach every client the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from millrace.errors import MillraceError, ServiceFailed
from millrace.settings import CommonSettings
from millrace.waiting import wait_until

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)


Brokers = str | Mapping[str, Any]


@dataclass(frozen=True)
class Durability:
    """How the topics Millrace creates are replicated (the settings ``replication_factor`` and
    ``min_insync``; unset, what the cluster allows: see :meth:`resolve`)."""

    replication_factor: int | None = None
    min_insync: int | None = None

    @classmethod
    def of(cls, settings: CommonSettings) -> Durability:
        return cls(settings.replication_factor, settings.min_insync)

    def resolve(self, brokers: int) -> tuple[int, int | None]:
        """(replication factor, min.insync.replicas or None for the brokers' default) on a
        cluster of ``brokers``.

        >>> Durability().resolve(1), Durability().resolve(3), Durability().resolve(5)
        ((1, None), (3, 2), (3, 2))
        >>> Durability(replication_factor=3).resolve(2)
        Traceback (most recent call last):
        ...
        millrace.errors.ServiceFailed: replication_factor 3 needs 3 brokers; the cluster has 2
        """
        factor = self.replication_factor or min(3, brokers)
        if factor > brokers:
            raise ServiceFailed(
                f"replication_factor {factor} needs {factor} brokers; the cluster has {brokers}"
            )
        min_insync = self.min_insync or (factor - 1 if factor >= 3 else None)
        if min_insync is not None and min_insync > factor:
            raise ServiceFailed(
                f"min_insync {min_insync} is above the replication factor {factor}: every "
                "write would be refused"
            )
        return factor, min_insync


class SourcePartition(str):
    """One partition of a topic, as the trainer keys its progress by it. Its text is
    ``"topic/partition"``, the form checkpoints and lineage record, so it goes into JSON as it
    is and hashes as fast as a string; it is parsed only here.

    >>> p = SourcePartition.of("millrace.features", 2)
    >>> p, p.topic, p.number
    ('millrace.features/2', 'millrace.features', 2)
    >>> SourcePartition("features")
    Traceback (most recent call last):
    ...
    ValueError: 'features' is not a source partition ("topic/partition")
    """

    __slots__ = ()

    def __new__(cls, text: str) -> SourcePartition:
        topic, _, number = text.rpartition("/")
        if not topic or not number.isdigit():
            raise ValueError(f'{text!r} is not a source partition ("topic/partition")')
        return super().__new__(cls, text)

    @classmethod
    def of(cls, topic: str, partition: int) -> SourcePartition:
        return cls(f"{topic}/{partition}")

    @property
    def topic(self) -> str:
        return self.rpartition("/")[0]

    @property
    def number(self) -> int:
        return int(self.rpartition("/")[2])

    def at(self, offset: int) -> TopicPartition:
        """The client's position of this partition at ``offset``."""
        return TopicPartition(self.topic, self.number, offset)


def client_config(brokers: Brokers, **extra: Any) -> dict[str, Any]:
    """A librdkafka config: ``brokers`` (an address or a base config) plus ``extra``."""
    base = {"bootstrap.servers": brokers} if isinstance(brokers, str) else dict(brokers)
    return {**base, **extra}


def admin(brokers: Brokers, **extra: Any) -> AdminClient:
    return AdminClient(client_config(brokers, **extra))


def wait_for_broker(brokers: Brokers, timeout: float = 60.0) -> None:
    """Block until an AdminClient gets metadata from the broker, or raise TimeoutError."""
    # Refused connections are expected while the broker starts; the timeout reports the last.
    client = admin(brokers, log_level=0)
    address = client_config(brokers)["bootstrap.servers"]
    wait_until(
        lambda: client.list_topics(timeout=2).brokers,
        timeout,
        f"Kafka at {address}",
        errors=(KafkaException,),
        announce=f"waiting for Kafka at {address} (set by MILLRACE_KAFKA_BOOTSTRAP)",
    )


def ensure_topics(
    brokers: Brokers,
    specs: Iterable[TopicSpec],
    timeout: float = 30.0,
    durability: Durability = Durability(),
) -> None:
    """Create the topics that do not exist yet, replicated as ``durability`` says (on one
    local broker: replication factor 1)."""
    client = admin(brokers)
    metadata = client.list_topics(timeout=timeout)
    factor, min_insync = durability.resolve(len(metadata.brokers))
    replicated = {} if min_insync is None else {"min.insync.replicas": str(min_insync)}
    wanted = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=factor,
            config={**replicated, **s.config},
        )
        for s in specs
        if s.name not in set(metadata.topics)
    ]
    if not wanted:
        return
    for name, future in client.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic", extra={"topic": name})
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    names = [t.topic for t in wanted]

    def described() -> bool:
        topics = client.list_topics(timeout=timeout).topics
        return all(n in topics and not topics[n].error for n in names)

    wait_until(described, timeout, f"the metadata of topics {names}", 0.2)


def pipeline_topics(settings: CommonSettings, partitions: int = 3) -> list[TopicSpec]:
    """The topics of the data flow for one settings object (see README, Topics)."""
    return [
        TopicSpec(settings.events_topic, partitions),
        TopicSpec(settings.features_topic, partitions),
        TopicSpec(settings.labels_topic, partitions),
        TopicSpec(settings.dead_letter_topic, 1),
        TopicSpec(settings.model_events_topic, 1, {"cleanup.policy": "compact"}),
        TopicSpec(settings.predictions_topic, partitions),
        # Partitioned like the events topic: partition p holds the states partition p wrote.
        TopicSpec(settings.state_changelog_topic, partitions, {"cleanup.policy": "compact"}),
    ]


def consumer_config(brokers: Brokers, group: str, **extra: Any) -> dict[str, Any]:
    return client_config(
        brokers,
        **{
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **extra,
        },
    )


def committed_offsets(
    brokers: Brokers, group: str, partitions: list[TopicPartition], wait_stable_s: float
) -> list[TopicPartition]:
    """``group``'s committed offsets of ``partitions``, as a transactional reader must see them.

    While a transaction that commits offsets for the group is open, the broker answers such a
    fetch "unstable" (KIP-447) and librdkafka keeps asking. A transaction older than its
    timeout is aborted by the broker, so one still pending after ``wait_stable_s`` (more than
    the producers' ``transaction.timeout.ms`` plus the broker's cleanup interval) is a hanging
    one that no producer can commit any more: seen after a broker was killed during
    ``send_offsets_to_transaction`` (Kafka 4.4, librdkafka 2.x), it stays pending for good.
    It is then passed over, said in an error log, for the last stable offsets."""
    stable = Consumer(consumer_config(brokers, group))
    try:
        return list(stable.committed(partitions, timeout=wait_stable_s))
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._TIMED_OUT:
            raise
    finally:
        stable.close()
    log.error(
        "committed offsets still unstable: a hanging transaction holds them; reading the last "
        "stable ones",
        extra={"group": group, "waited_s": wait_stable_s},
    )
    loose = Consumer(consumer_config(brokers, group, **{"isolation.level": "read_uncommitted"}))
    try:
        return list(loose.committed(partitions, timeout=30))
    finally:
        loose.close()


def watermarks(consumer: Consumer, topic: str, timeout: float = 30.0) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) offsets of ``topic``, read once."""
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        for p in sorted(partitions)
    }


def read_range(
    consumer: Consumer,
    topic: str,
    partition: int,
    start: int,
    end: int,
    batch_size: int = 5000,
    timeout: float | None = None,
) -> Iterator[list[Message]]:
    """The records of one partition with ``start <= offset < end``, in batches, through
    ``consumer`` (assigned to that partition here). With ``read_committed`` the consumer's
    position passes aborted records and transaction markers, so reaching ``end`` is certain once
    the records below it are committed; ``timeout`` (seconds) bounds the wait otherwise."""
    if start >= end:
        return
    consumer.assign([TopicPartition(topic, partition, start)])
    here = [TopicPartition(topic, partition)]
    deadline = None if timeout is None else time.monotonic() + timeout
    while consumer.position(here)[0].offset < end:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"reading {topic}/{partition} [{start}, {end}) timed out")
        batch = [
            m
            for m in consumer.consume(batch_size, timeout=0.5)
            if has_data(m) and (m.offset() or 0) < end
        ]
        if batch:
            yield batch


def retry_retriable(call: Callable[[float], object], what: str, timeout: float) -> None:
    """``call(seconds_left)`` until it succeeds, calling it again after a retriable error (a
    coordinator loading or moving, a timed-out commit still in progress) as librdkafka's
    transactional API asks for ``send_offsets_to_transaction`` and ``commit_transaction``:
    aborting instead would race the call still pending inside the client. An error that needs
    an abort, a fatal one, or one past ``timeout`` seconds propagates."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call(max(deadline - time.monotonic(), 1.0))
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            late = time.monotonic() + _RETRY_PAUSE_S >= deadline
            if late or not error.retriable() or error.txn_requires_abort() or error.fatal():
                raise
            log.warning(f"{what} failed; calling it again", extra={"error": str(error)})
            time.sleep(_RETRY_PAUSE_S)


_RETRY_PAUSE_S = 0.5


class CommitOutcomeUnknown(MillraceError, KafkaException):
    """``commit_transaction`` timed out (or failed retriably) until its deadline: the
    transaction may have committed or not. Never abort it (the abort could land on the next
    transaction, KAFKA-17754): replace the producer (:func:`replaceable`)."""


#: Fatal errors that mean another process took over the transactional id: that one goes on.
_FENCES = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


def outcome_unknown(exc: KafkaException) -> bool:
    """Whether a failed commit left its outcome unknown (timed out or retriable to the end),
    rather than refused (abortable) or fatal."""
    error: KafkaError = exc.args[0]
    return not error.fatal() and not error.txn_requires_abort()


def replaceable(exc: KafkaException | BufferError) -> bool:
    """A fatal producer error other than a fence: a new producer with the same transactional
    id can go on (a fenced one must stop: another incarnation holds the id)."""
    if not isinstance(exc, KafkaException):
        return False
    error: KafkaError = exc.args[0]
    return bool(error.fatal()) and error.code() not in _FENCES


def abort_transaction(
    producer: Producer, failure: KafkaException | BufferError, attempts: int = 2
) -> None:
    """After ``failure`` inside a transaction: abort whatever is open (a transaction left open
    makes every later ``begin_transaction`` fail), or raise :class:`ServiceFailed` if the
    producer cannot go on (a fatal error: another process took over its transactional id).

    An abort that times out (a coordinator still loading, moving) is still in progress inside
    librdkafka: it is completed by calling the abort again, never by another call (which fails
    with ``_CONFLICT`` for as long as the abort is pending)."""
    _raise_if_fatal(failure)
    for attempt in range(1, attempts + 1):
        try:
            producer.abort_transaction(30)
            return
        except KafkaException as abort_failure:
            _raise_if_fatal(abort_failure)
            if abort_failure.args[0].code() == KafkaError._STATE:
                # Nothing was open (begin_transaction itself failed): nothing to abort.
                log.info("no transaction to abort", extra={"error": str(abort_failure)})
                return
            log.warning(
                "abort not completed; calling it again",
                extra={"attempt": attempt, "error": str(abort_failure)},
            )
    raise ServiceFailed(f"the transaction could not be aborted in {attempts} attempts")


def _raise_if_fatal(exc: KafkaException | BufferError) -> None:
    if isinstance(exc, KafkaException):
        error: KafkaError = exc.args[0]
        if error.fatal():
            raise ServiceFailed(f"fatal Kafka producer error: {error.str()}") from exc


def has_data(message: Message) -> bool:
    """True for a record; consumer errors are logged (end-of-partition events are not).

    A fatal one (a static member fenced, say by its own rejoin while a coordinator was away)
    raises :class:`ServiceFailed`: that consumer delivers nothing more, and a loop that only
    logged it would look alive while it stood still."""
    error = message.error()
    if error is None:
        return True
    raise_if_consumer_failed(error)
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error", extra={"error": str(error)})
    return False


def raise_if_consumer_failed(error: KafkaError) -> None:
    # A consumer's fatal error arrives as a message whose error has the code _FATAL (and not
    # always the fatal flag).
    if error.fatal() or error.code() == KafkaError._FATAL:
        raise ServiceFailed(f"fatal Kafka consumer error: {error.str()}")
