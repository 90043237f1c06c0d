"""The live featurizer: consume events, run the feature module, produce features exactly once.

Each poll batch is one Kafka transaction: the feature, label and dead-letter records and the
consumed offsets commit together (downstream reads ``read_committed``). Only then does the batch's
state go to Redis, fenced by source partition and offset (see :mod:`millrace.state`). If the
process dies between the two, the committed offset is ahead of the partition's Redis fence; when
the partition is next assigned (to this replica or another), :meth:`LiveFeaturizer.recover`
replays that gap from the events topic for its state only, producing nothing. Features are always
computed from the state of exactly the events before them, so a restarted or rebalanced featurizer
emits what an uninterrupted one would have.

A batch's commit and its Redis writes, which mostly wait on the broker and on Redis, run in a
committer thread while the loop computes the next batch from the states in memory
(:class:`~millrace_featurizer.owned_state.OwnedState`); the next transaction opens only once that
commit is done. If it failed, both batches are read again and the states in memory dropped.

That replay runs in the poll loop, not in the assignment callback: newly assigned partitions are
paused until their state is caught up, and the loop keeps polling between replay chunks, so a long
gap never exceeds ``max.poll.interval.ms``. A failed transaction is aborted and the batch read
again; a fatal producer error (another process took over this transactional id) or a loop that
stops making progress ends the process (see :class:`millrace.health.Liveness`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter, Gauge

from millrace import collector
from millrace.envelope import MAX_EVENT_BYTES
from millrace.features import load_feature_module
from millrace.featurize import BatchResult, DeadLetter, Featurizer, SourceEvent, source_event
from millrace.health import Liveness, ServiceFailed
from millrace.kafka import (
    Brokers,
    CommitOutcomeUnknown,
    Durability,
    TopicSpec,
    abort_transaction,
    client_config,
    committed_offsets,
    consumer_config,
    ensure_topics,
    has_data,
    outcome_unknown,
    replaceable,
    retry_retriable,
    wait_for_broker,
)
from millrace.state import UNREACHABLE, RedisState, StateLost
from millrace_featurizer import changelog
from millrace_featurizer.owned_state import OwnedState
from millrace_featurizer.recovery import StateRecovery
from millrace_featurizer.settings import FeaturizerSettings

log = logging.getLogger(__name__)

EVENTS_IN = Counter("millrace_featurizer_events_total", "Events consumed")
FEATURES_OUT = Counter("millrace_featurizer_features_total", "Feature records produced")
LABELS_OUT = Counter("millrace_featurizer_labels_total", "Label records produced")
DEAD = Counter("millrace_featurizer_dead_letters_total", "Events dead-lettered", ["kind"])
LATE = Counter("millrace_featurizer_late_events_total", "Events later than the allowed lateness")
STATE_WRITES = Counter("millrace_featurizer_state_writes_total", "Entity state writes")
LAG_MS = Gauge("millrace_featurizer_event_time_lag_ms", "Wall clock minus newest event time")
PRODUCERS_REPLACED = Counter(
    "millrace_featurizer_producers_replaced_total",
    "Producers replaced after a transaction of unknown outcome or a non-fence fatal error",
)
FAILED_TRANSACTIONS = Counter(
    "millrace_featurizer_failed_transactions_total", "Transactions aborted and read again"
)

#: A dead letter carries at most this much of the event (events above the envelope's limit are
#: rejected as too large, and their whole copy may not even fit in a Kafka message).
MAX_DEAD_LETTER_BYTES = MAX_EVENT_BYTES
MAX_DEAD_LETTER_KEY_BYTES = 1024
#: A transaction open longer is aborted by the broker (its cleanup runs every 10 s): committed
#: offsets still unstable after STABLE_WAIT_S belong to a hanging transaction (see
#: :func:`millrace.kafka.committed_offsets`). Batches commit in well under a second.
TRANSACTION_TIMEOUT_MS = 30_000
STABLE_WAIT_S = TRANSACTION_TIMEOUT_MS / 1000 + 15


class LiveFeaturizer:
    def __init__(
        self,
        featurizer: Featurizer,
        state: RedisState,
        brokers: Brokers,
        group: str,
        events_topic: str,
        features_topic: str,
        labels_topic: str,
        dead_letter_topic: str,
        changelog_topic: str | None,
        *,
        batch_size: int,
        instance_id: str,
        session_timeout_ms: int,
        stall_timeout_s: float,
        transaction_timeout_s: float,
        max_cached_entities: int,
        request_timeout_ms: int,
        durability: Durability = Durability(),
    ) -> None:
        """Every tunable from the featurizer's settings (:meth:`from_settings`), where the
        defaults are written."""
        self.featurizer = featurizer
        self.state = state
        self.brokers = brokers
        self.group = group
        self.events_topic = events_topic
        self.features_topic = features_topic
        self.labels_topic = labels_topic
        self.dead_letter_topic = dead_letter_topic
        #: The state changelog (None: off, for measuring its cost; Redis is then not rebuildable
        #: once the events topic's retention deleted what it needs).
        self.changelog_topic = changelog_topic
        self.durability = durability
        self.batch_size = batch_size
        self.stopping = threading.Event()
        self.liveness = Liveness(stall_timeout_s)
        self.transaction_timeout_s = transaction_timeout_s
        self.request_timeout_ms = request_timeout_ms
        self.batches = 0
        #: Events committed, and events read (committed or on their way).
        self.events = 0
        self.events_read = 0
        #: The states of the owned partitions' entities, between batches.
        self.owned = OwnedState(state.read_owned, max_cached_entities)
        #: One batch commits (Kafka, then Redis) in this thread while the next is computed.
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="featurizer-commit")
        self._pending: Future[None] | None = None
        # The transactional id is the same for every incarnation of a replica (its instance id:
        # a Kubernetes pod's ordinal name, or what compose and the local stack set), so a
        # restarted replica's first transaction fences and aborts what its dead predecessor left
        # open instead of readers waiting for that transaction to time out.
        self.instance_id = instance_id
        self.consumer = Consumer(
            consumer_config(
                brokers,
                group,
                **{
                    "client.id": self.instance_id,
                    # Static membership: a restarted replica takes its partitions back at
                    # once, without waiting for its old session to expire and a rebalance.
                    "group.instance.id": self.instance_id,
                    "session.timeout.ms": session_timeout_ms,
                },
            )
        )
        self.producer = self._new_producer()
        #: Producers replaced after a transaction of unknown outcome (kept: destroying one
        #: waits for what it still has in flight).
        self.replaced: list[Producer] = []
        self.recovery = StateRecovery(
            featurizer,
            state,
            self.consumer,
            self.producer,
            brokers,
            group,
            events_topic,
            changelog_topic,
            batch_size,
            self.liveness,
            self.stopping,
            STABLE_WAIT_S,
        )

    @classmethod
    def from_settings(cls, settings: FeaturizerSettings) -> LiveFeaturizer:
        """The runner the settings describe: their feature module, topics, Redis and broker."""
        if settings.redis_cluster_nodes and not settings.state_changelog:
            # Over several servers a batch's writes are atomic per server only: a crash between
            # them is repaired from the changelog, never by replaying events over half a batch.
            raise ServiceFailed(
                "MILLRACE_STATE_CHANGELOG=false is not supported on a Redis Cluster "
                "(MILLRACE_REDIS_CLUSTER_NODES): the state is rebuilt from the changelog"
            )
        return cls(
            Featurizer(load_feature_module(settings.feature_module)),
            RedisState.from_settings(settings),
            settings.kafka,
            group=f"{settings.topic_prefix}{settings.group}",
            events_topic=settings.events_topic,
            features_topic=settings.features_topic,
            labels_topic=settings.labels_topic,
            dead_letter_topic=settings.dead_letter_topic,
            changelog_topic=settings.state_changelog_topic if settings.state_changelog else None,
            batch_size=settings.batch_size,
            instance_id=settings.instance_id,
            session_timeout_ms=settings.session_timeout_ms,
            stall_timeout_s=settings.stall_timeout_s,
            transaction_timeout_s=settings.transaction_timeout_s,
            max_cached_entities=settings.max_cached_entities,
            request_timeout_ms=settings.request_timeout_ms,
            durability=Durability.of(settings),
        )

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())

    def _new_producer(self) -> Producer:
        return Producer(
            client_config(
                self.brokers,
                **{
                    "transactional.id": f"{self.group}-{self.instance_id}",
                    "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                    "request.timeout.ms": self.request_timeout_ms,
                    "socket.timeout.ms": self.request_timeout_ms,
                    "linger.ms": 5,
                    "compression.type": "lz4",
                },
            )
        )

    def health(self) -> dict[str, Any]:
        return self.liveness.status(batches=self.batches, events=self.events)

    def run(self) -> None:
        """Featurize until :attr:`stopping` is set; raises :class:`ServiceFailed` when the loop
        cannot go on."""
        self.state.wait_ready()
        self.state.claim_schema(self.featurizer.schema_marker)
        if self.changelog_topic is not None:
            self._ensure_changelog()
        self.producer.init_transactions(30)
        self.consumer.subscribe(
            [self.events_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        log.info("featurizer running", extra={"topic": self.events_topic})
        try:
            with collector.tuned():
                self._loop()
        except ServiceFailed as exc:
            self.liveness.fail(str(exc))
            raise
        finally:
            self._committer.shutdown(wait=self.liveness.failure is None)
            self.consumer.close()
            if self.liveness.failure is None:
                self.producer.flush(10)
            log.info("featurizer stopped", extra={"batches": self.batches})

    def _ensure_changelog(self) -> None:
        """The changelog, partitioned like the events topic (made here if it is missing)."""
        wait_for_broker(self.brokers)
        topics = self.consumer.list_topics(self.events_topic, timeout=30).topics
        partitions = len(topics[self.events_topic].partitions) or 1
        ensure_topics(
            self.brokers,
            [TopicSpec(self.changelog_topic or "", partitions, {"cleanup.policy": "compact"})],
            durability=self.durability,
        )

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.liveness.check()
            if self.recovery.unrecovered:
                if self._settle():
                    self._recover()
                continue
            messages = self.consumer.consume(self.batch_size, timeout=0.2)
            batch = [source_event(m) for m in messages if has_data(m)]
            self.events_read += len(batch)
            if not batch:
                if self._settle():
                    self.liveness.beat()
                continue
            # Computed while the previous batch commits: its Kafka and Redis calls mostly wait.
            try:
                result = self.featurizer.run_batch(batch, self.owned.load)
            except StateLost as exc:
                self.recovery.lost(exc.partitions, str(exc))
                self._settle()  # read again once the partitions are rebuilt
                continue
            except UNREACHABLE as exc:
                self.recovery.lost(self.recovery.owned(), f"Redis unreachable: {exc}")
                self._settle()
                continue
            if self._settle() and self._begin(batch, result):
                self.liveness.beat()
        self._settle()

    def _begin(self, batch: list[SourceEvent], result: BatchResult) -> bool:
        """Open the batch's transaction and produce its records, then hand the commit (and the
        state writes after it) to the committer thread; False if the transaction failed."""
        positions = self.consumer.position(self.consumer.assignment())
        in_batch = {s.partition for s in batch}
        # A partition's fence is its position minus one: what the committed offset will say,
        # whatever control records (of a transactional producer) lie past its last event.
        fences = {tp.partition: tp.offset - 1 for tp in positions if tp.partition in in_batch}
        try:
            self.producer.begin_transaction()
            self._produce(result, fences)
        except (KafkaException, BufferError) as exc:
            self._failed(exc)
            return False
        self.owned.pin(entity for entities in result.writes.values() for entity in entities)
        self._pending = self._committer.submit(
            self._commit, positions, self.consumer.consumer_group_metadata(), result, fences
        )
        return True

    def _commit(
        self,
        positions: list[TopicPartition],
        group: object,
        result: BatchResult,
        fences: dict[int, int],
    ) -> None:
        """The committer thread: the offsets into the transaction, the commit, then Redis."""
        timeout = self.transaction_timeout_s
        with self.liveness.bounded("send_offsets_to_transaction", timeout + 3):
            retry_retriable(
                lambda left: self.producer.send_offsets_to_transaction(positions, group, left),
                "send_offsets_to_transaction",
                timeout,
            )
        try:
            retry_retriable(self.producer.commit_transaction, "commit_transaction", timeout)
        except KafkaException as exc:
            if outcome_unknown(exc):
                raise CommitOutcomeUnknown(exc.args[0]) from exc
            raise
        # Committed: Kafka holds the batch (the changelog included). Redis follows, if it still
        # holds what this replica wrote; a partition whose fence moved is rebuilt.
        try:
            lost = self.state.apply(result.writes, fences, self.recovery.expected)
        except UNREACHABLE as exc:
            self.recovery.lost(self.recovery.owned(), f"Redis unreachable: {exc}")
        else:
            if lost:
                self.recovery.lost(lost, "a fence is not where this replica left it")
            self.recovery.applied(fences, lost)
        self.batches += 1
        self.events += result.events
        self._count(result)

    def _settle(self) -> bool:
        """Wait for the batch being committed; False if its transaction failed or Redis was
        found to have lost state (then it and all read after it are read again)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except (KafkaException, BufferError) as exc:
                self._failed(exc)
                return False
            finally:
                self.owned.pin(())
        self.recovery.check()  # no commit in flight: the fences are where it left them
        if self.recovery.take_losses():
            # What was computed since, on states in memory that the rebuild replaces, is read
            # again once the lost partitions are rebuilt (they stay paused until then).
            self.owned.clear()
            self._rewind()
            self.consumer.pause(
                [TopicPartition(self.events_topic, p) for p in self.recovery.unrecovered]
            )
            return False
        return True

    def _failed(self, exc: KafkaException | BufferError) -> None:
        # The batches in flight changed the states in memory: they are read again from Redis.
        self.owned.clear()
        if isinstance(exc, KafkaException) and (
            isinstance(exc, CommitOutcomeUnknown) or replaceable(exc)
        ):
            self._replace_producer(exc)
        else:
            try:
                self._abort(exc)
            except ServiceFailed as failed:
                cause = failed.__cause__
                if not isinstance(cause, KafkaException) or not replaceable(cause):
                    raise
                self._replace_producer(cause)  # the abort itself hit a non-fence fatal error
        self._rewind()

    def _replace_producer(self, exc: KafkaException) -> None:
        """The open transaction's outcome is unknown (a commit that timed out), or the producer
        cannot go on for a reason other than a fence (an invalid state or epoch, as a delayed
        EndTxn landing on a later transaction makes it, KAFKA-17754). Aborting could land on
        the next transaction: instead a new producer with the same transactional id, whose
        ``init_transactions`` bumps the epoch, so the old transaction is completed or aborted
        first and nothing the old producer still sends is accepted. Whether the batch
        committed is then read from the group's committed offsets; what it wrote to Redis is
        unknown, so the partitions are rebuilt from the changelog."""
        FAILED_TRANSACTIONS.inc()
        PRODUCERS_REPLACED.inc()
        log.error("transaction outcome unknown; replacing the producer", extra={"error": str(exc)})
        self.replaced.append(self.producer)
        self.producer = self.recovery.producer = self._new_producer()
        retry_retriable(self.producer.init_transactions, "init_transactions", 120)
        self.recovery.lost(self.recovery.owned(), f"transaction outcome unknown: {exc}")

    def _count(self, result: BatchResult) -> None:
        EVENTS_IN.inc(result.events)
        FEATURES_OUT.inc(len(result.features))
        LABELS_OUT.inc(len(result.labels))
        STATE_WRITES.inc(sum(len(entities) for entities in result.writes.values()))
        for dead in result.dead:
            DEAD.labels(dead.kind).inc()
            if dead.kind == "late":
                LATE.inc()
        if result.newest_ts:
            LAG_MS.set(time.time() * 1000 - result.newest_ts)

    def _abort(self, exc: KafkaException | BufferError) -> None:
        """Abort whatever transaction is open, whatever failed inside it: a transaction left
        open makes every later ``begin_transaction`` fail."""
        FAILED_TRANSACTIONS.inc()
        log.error("transaction failed; aborting and reading the batch again", exc_info=exc)
        abort_transaction(self.producer, exc)

    def _produce(self, result: BatchResult, fences: dict[int, int]) -> None:
        produce = self.producer.produce
        for key, value in result.features:
            produce(self.features_topic, value, key)
        for key, value in result.labels:
            produce(self.labels_topic, value, key)
        for dead in result.dead:
            self._dead_letter(dead)
        if self.changelog_topic is None:
            return
        states, encode = result.states, changelog.encode
        for partition, entities in result.writes.items():
            offset = fences[partition]
            for entity in entities:
                value = encode(partition, offset, states[entity])
                produce(self.changelog_topic, value, entity, partition=partition)

    def _dead_letter(self, dead: DeadLetter) -> None:
        source = f"{self.events_topic}/{dead.source.partition}/{dead.source.offset}"
        value, key = dead.source.value, dead.source.key
        headers: list[tuple[str, str | bytes | None]] = [
            ("reason", dead.reason.encode()[:1000]),
            ("kind", dead.kind.encode()),
            ("source", source.encode()),
        ]
        if len(value) > MAX_DEAD_LETTER_BYTES:
            headers.append(("truncated_from", str(len(value)).encode()))
            value = value[:MAX_DEAD_LETTER_BYTES]
        if key is not None and len(key) > MAX_DEAD_LETTER_KEY_BYTES:
            key = key[:MAX_DEAD_LETTER_KEY_BYTES]
        self.producer.produce(self.dead_letter_topic, value, key, headers=headers)
        log.warning("dead-lettered event", extra={"reason": dead.reason, "source": source})

    def _rewind(self) -> None:
        assignment = self.consumer.assignment()
        try:
            committed = committed_offsets(self.brokers, self.group, assignment, STABLE_WAIT_S)
        except KafkaException as exc:
            # Without the committed offsets the batch cannot be read again from the right place:
            # a restart reads them afresh (and fences what this process left open).
            raise ServiceFailed(f"cannot read the committed offsets: {exc.args[0]}") from exc
        for tp in committed:
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))

    # -- recovery ---------------------------------------------------------------------------

    def _recover(self) -> None:
        try:
            self.recovery.recover()
        except UNREACHABLE as exc:
            # A failover or a restart under way: the partitions stay paused, and the next turn
            # of the loop starts their recovery over (the liveness check bounds how long).
            log.warning(
                "redis unreachable during recovery; trying again", extra={"error": str(exc)}
            )
            self.stopping.wait(0.5)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        consumer.pause(partitions)
        self.recovery.assigned(tp.partition for tp in partitions)
        self.owned.drop_partitions(tp.partition for tp in partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._pending is not None:
            # The batch in flight finishes before its partitions go (its outcome is handled in
            # the loop): the next owner then finds Redis at the committed offsets.
            wait([self._pending])
        self.recovery.revoked(tp.partition for tp in partitions)
        self.owned.drop_partitions(tp.partition for tp in partitions)
