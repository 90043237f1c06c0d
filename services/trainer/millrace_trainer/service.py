"""The trainer service's wiring from its settings: the service, the tests and `make bench` all
build the trainer, its checkpoints and its poll loop here, so they run the same thing."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from millrace.kafka import Durability, SourcePartition, consumer_config, has_data, watermarks
from millrace.learners import Classifier
from millrace.registry_client import RegistryClient
from millrace_trainer.batching import WindowedJoin
from millrace_trainer.checkpoints import KafkaCheckpoints
from millrace_trainer.settings import TrainerSettings
from millrace_trainer.stream import Cadence, QuietPublish, StreamLoop
from millrace_trainer.training import StreamTrainer


def group_id(settings: TrainerSettings) -> str:
    return f"{settings.topic_prefix}{settings.group}"


def make_join(settings: TrainerSettings, counting: bool = False) -> WindowedJoin:
    """The settings' join; ``counting`` everything the topics hold at once, nothing idles
    and nothing is let go for waiting too long."""
    return WindowedJoin(
        window_ms=settings.window_ms,
        label_wait_ms=settings.label_wait_ms,
        batch_samples=settings.batch_samples,
        idle_ms=None if counting else settings.idle_partition_ms,
        max_waiting=None if counting else settings.max_waiting,
    )


def fetch_config(partition_bytes: int) -> dict[str, int]:
    """librdkafka's fetch sizes for ``partition_bytes`` per partition: a request may carry
    that much from each of a few partitions (at least librdkafka's own 50 MiB)."""
    return {
        "max.partition.fetch.bytes": partition_bytes,
        "fetch.max.bytes": max(8 * partition_bytes, 52_428_800),
    }


def make_trainer(
    settings: TrainerSettings,
    client: RegistryClient,
    feature_schema: str,
    learner: Classifier | None = None,
) -> StreamTrainer:
    """The trainer the settings describe (with ``learner`` instead of a fresh one of the
    settings' kind, when given)."""
    return StreamTrainer(
        learner if learner is not None else settings.build_learner(),
        client,
        settings.model_name,
        feature_schema,
        join=make_join(settings),
        publish_every=settings.publish_every,
        publish_interval_ms=settings.publish_interval_ms,
        promotion=settings.promotion,
        run_key=group_id(settings),
        baseline_rounds=settings.baseline_rounds,
        gate_margin=settings.gate_margin,
        rolling_batches=settings.rolling_batches,
    )


def make_checkpoints(settings: TrainerSettings) -> KafkaCheckpoints:
    group = group_id(settings)
    return KafkaCheckpoints(
        settings.kafka,
        f"{settings.topic_prefix}trainer-checkpoints",
        key=f"{group}/{settings.model_name}",
        transactional_id=f"{group}-{settings.instance_id}",
        signer=settings.signer(),
        durability=Durability.of(settings),
    )


def make_loop(
    settings: TrainerSettings, trainer: StreamTrainer, checkpoints: KafkaCheckpoints
) -> StreamLoop:
    consumer = Consumer(
        consumer_config(
            settings.kafka,
            group_id(settings),
            **{
                "session.timeout.ms": settings.session_timeout_ms,
                "enable.partition.eof": True,
                **fetch_config(settings.fetch_partition_bytes),
            },
        )
    )
    return StreamLoop(
        trainer,
        consumer,
        checkpoints,
        settings.features_topic,
        settings.labels_topic,
        Cadence(settings.checkpoint_every, settings.checkpoint_interval_s),
        QuietPublish(settings.publish_idle_s, settings.publish_within_s),
        settings.poll_size,
        stall_timeout_s=settings.stall_timeout_s,
    )


def learnable_samples(settings: TrainerSettings, timeout: float = 600.0) -> tuple[int, int]:
    """(samples, records): how many samples the trainer's join yields over everything the
    features and labels topics hold now, and how many records that is. A run over the same
    topics learns exactly that many, so benchmarks and tests stop on it, not on a stall."""
    join = make_join(settings, counting=True)
    reader = Consumer(
        consumer_config(settings.kafka, f"{group_id(settings)}-count-{uuid.uuid4().hex}")
    )
    try:
        ends = {
            (topic, partition): bounds
            for topic in (settings.features_topic, settings.labels_topic)
            for partition, bounds in watermarks(reader, topic).items()
        }
        join.assign({SourcePartition.of(t, p) for t, p in ends})
        reader.assign([TopicPartition(t, p, low) for (t, p), (low, _) in ends.items()])
        here = [TopicPartition(t, p) for t, p in ends]
        samples = records = 0
        deadline = time.monotonic() + timeout
        while any(tp.offset < ends[(tp.topic, tp.partition)][1] for tp in reader.position(here)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading the topics to their ends took over {timeout:g} s")
            polled = filter(has_data, reader.consume(10_000, timeout=0.5))
            records += join.add_poll(polled, settings.features_topic)
            samples += sum(len(batch.samples) for batch in join.ready())
        return samples, records
    finally:
        reader.close()
