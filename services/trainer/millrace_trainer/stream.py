"""The trainer's poll loop: consume both topics in batches, decode them typed, join, learn every
ready window in one call, and checkpoint.

A checkpoint holds the model, the learner and lineage state and the join's cursor, never the
buffered records; it is written in the same Kafka transaction that commits, as the group's
offsets, the oldest offset each partition still needs. So it stays small whatever the backlog,
and a restarted trainer reads again from those offsets and learns exactly what an uninterrupted
one would have. Checkpoints come every ``interval_s`` seconds of wall-clock time and/or every
``every_batches`` batches, whichever comes first (time affects only where a restart resumes,
never what is learned).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter, Gauge

from millrace import collector
from millrace.health import Liveness
from millrace.kafka import SourcePartition
from millrace_trainer.checkpoints import CheckpointFailed, KafkaCheckpoints
from millrace_trainer.training import StreamTrainer

log = logging.getLogger(__name__)

LATE = Gauge("millrace_trainer_late_labels", "Samples whose label came later than the wait")
EXPIRED = Gauge("millrace_trainer_join_expired", "Records that expired without a partner")
EVICTED = Gauge("millrace_trainer_join_evicted", "Records evicted from a full join buffer")
WATERMARK = Gauge("millrace_trainer_watermark_ms", "Event time the watermark has reached")
CHECKPOINT_BYTES = Gauge("millrace_trainer_checkpoint_bytes", "Size of the last checkpoint")
FAILED_CHECKPOINTS = Counter(
    "millrace_trainer_failed_checkpoints_total", "Checkpoints aborted (tried again later)"
)


@dataclass
class Cadence:
    """When to checkpoint: after ``every_batches`` batches and/or ``interval_s`` seconds."""

    every_batches: int | None = None
    interval_s: float | None = 10.0

    def due(self, batches: int, elapsed_s: float) -> bool:
        by_count = self.every_batches is not None and batches >= self.every_batches
        by_time = self.interval_s is not None and elapsed_s >= self.interval_s
        return by_count or by_time


@dataclass
class QuietPublish:
    """The wall-clock publishing rules: what was learned goes out once no batch has come for
    ``idle_s``, and at the latest ``within_s`` after the first unpublished batch was learned."""

    idle_s: float | None = 30.0
    within_s: float | None = 600.0
    #: When the oldest unpublished batch was learned, and the newest.
    first_learned: float | None = None
    last_learned: float | None = None

    def learned(self, now: float) -> None:
        if self.first_learned is None:
            self.first_learned = now
        self.last_learned = now

    def published(self) -> None:
        self.first_learned = self.last_learned = None

    def due(self, now: float) -> str | None:
        """The rule that says publish now, if one does."""
        if self.first_learned is None or self.last_learned is None:
            return None
        if self.idle_s is not None and now - self.last_learned >= self.idle_s:
            return "publish_idle_s"
        if self.within_s is not None and now - self.first_learned >= self.within_s:
            return "publish_within_s"
        return None


class StreamLoop:
    def __init__(
        self,
        trainer: StreamTrainer,
        consumer: Consumer,
        checkpoints: KafkaCheckpoints,
        features_topic: str,
        labels_topic: str,
        cadence: Cadence | None = None,
        quiet: QuietPublish | None = None,
        poll_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        stall_timeout_s: float = 300.0,
    ) -> None:
        self.trainer = trainer
        self.consumer = consumer
        self.checkpoints = checkpoints
        self.features_topic = features_topic
        self.labels_topic = labels_topic
        self.cadence = cadence or Cadence()
        self.quiet = quiet or QuietPublish()
        self._lineage = trainer.lineage
        self.poll_size = poll_size
        self.clock = clock
        self.source = {"stream": [features_topic, labels_topic]}
        self.checkpoint_bytes_max = 0
        self.checkpoints_written = 0
        #: Beats once per poll; /health turns 503 and the loop ends if it stops (see Liveness).
        self.liveness = Liveness(stall_timeout_s)

    @property
    def last_offsets(self) -> dict[SourcePartition, int]:
        """The offset of the last record read per partition, by this process."""
        return self.trainer.join.last_offsets()

    def run(self) -> None:
        self.consumer.subscribe([self.features_topic, self.labels_topic], on_assign=self._on_assign)
        try:
            with collector.tuned():
                self._poll_until_stopped()
            self.trainer.settle()  # what was learned and handed over is published before the end
        finally:
            self.consumer.close()
            self.trainer.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A partition this process read before (a rebalance after a lost session, say a broker
        restart) resumes after the last record the join holds, not at the committed offset the
        group would restart it from: that would feed the join records it already has."""
        last_offsets = self.last_offsets
        for tp in partitions:
            last = last_offsets.get(SourcePartition.of(tp.topic, tp.partition))
            if last is not None:
                tp.offset = last + 1
        consumer.assign(partitions)
        self.trainer.join.assign({SourcePartition.of(tp.topic, tp.partition) for tp in partitions})

    def _poll_until_stopped(self) -> None:
        join = self.trainer.join
        batches_since, checkpointed_at, dirty = 0, self.clock(), False
        while not self.trainer.stopping.is_set():
            self.liveness.check()
            messages = self.consumer.consume(self.poll_size, timeout=0.5)
            now = self.clock()
            dirty |= join.add_poll(messages, self.features_topic, now) > 0
            ready = join.ready(now)
            if ready:
                self.trainer.learn_stream(ready, self.source)
                batches_since += len(ready)
            dirty |= self._publish_on_time(bool(ready), now)
            self.trainer.note_published()
            self.trainer.publisher.raise_if_failed()
            self._note_idle()
            if dirty and self.cadence.due(batches_since, now - checkpointed_at):
                try:
                    self.checkpoint()
                    dirty = False
                except CheckpointFailed as exc:
                    FAILED_CHECKPOINTS.inc()
                    log.error("checkpoint failed; trying again later", extra={"error": str(exc)})
                batches_since, checkpointed_at = 0, now
            self._gauges()
            self.liveness.beat()

    def _publish_on_time(self, learned: bool, now: float) -> bool:
        """The wall-clock rules; True if a version was published."""
        lineage = self.trainer.lineage
        if lineage is not self._lineage:  # published since (a new lineage began)
            self._lineage = lineage
            self.quiet.published()
        if not lineage.batches:
            return False
        if learned:
            self.quiet.learned(now)
        reason = self.quiet.due(now)
        if reason is None:
            return False
        self.quiet.published()  # a refused candidate waits for the next rule, not every poll
        return self.trainer.publish_if_due(self.source, reason) is not None

    def _note_idle(self) -> None:
        join = self.trainer.join
        for event in join.idle_events:
            log.info(
                "partition idle: it leaves the watermark until it has data",
                extra={"partition": event.partition, "watermark": event.watermark},
            )
            self.trainer.lineage.idle.append(
                {"partition": event.partition, "watermark": event.watermark}
            )
        join.idle_events.clear()

    def checkpoint(self) -> int:
        """Write the checkpoint and commit the offsets still needed, in one transaction."""
        state: dict[str, Any] = self.trainer.snapshot()
        offsets = [SourcePartition(name).at(offset) for name, offset in state["needed"].items()]
        # librdkafka may block for good in a transactional call (see Liveness.bounded).
        with self.liveness.bounded("the checkpoint's commit", 60.0):
            size = self.checkpoints.commit(state, offsets, self.consumer)
        CHECKPOINT_BYTES.set(size)
        self.checkpoints_written += 1
        self.checkpoint_bytes_max = max(self.checkpoint_bytes_max, size)
        return size

    def _gauges(self) -> None:
        join = self.trainer.join
        LATE.set(join.late)
        EXPIRED.set(join.expired)
        EVICTED.set(join.evicted)
        watermark = join.watermark_without_idle()
        if watermark is not None:
            WATERMARK.set(watermark)
