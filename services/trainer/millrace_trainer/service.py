"""The trainer service's wiring from its settings: the service, the tests and `make bench` all
build the trainer, its checkpoints and its poll loop here, so they run the same thing."""

from __future__ import annotations

from confluent_kafka import Consumer

from millrace.kafka import consumer_config
from millrace.registry_client import RegistryClient
from millrace_trainer.batching import WindowedJoin
from millrace_trainer.checkpoints import KafkaCheckpoints
from millrace_trainer.settings import TrainerSettings
from millrace_trainer.stream import Cadence, StreamLoop
from millrace_trainer.training import StreamTrainer


def group_id(settings: TrainerSettings) -> str:
    return f"{settings.topic_prefix}{settings.group}"


def make_trainer(
    settings: TrainerSettings, client: RegistryClient, feature_schema: str
) -> StreamTrainer:
    return StreamTrainer(
        settings.build_learner(),
        client,
        settings.model_name,
        feature_schema,
        join=WindowedJoin(
            settings.window_ms,
            settings.label_wait_ms,
            settings.batch_samples,
            idle_ms=settings.idle_partition_ms,
            max_waiting=settings.max_waiting,
        ),
        publish_every=settings.publish_every,
        promotion=settings.promotion,
        run_key=group_id(settings),
        baseline_rounds=settings.baseline_rounds,
        gate_margin=settings.gate_margin,
        rolling_batches=settings.rolling_batches,
    )


def make_checkpoints(settings: TrainerSettings) -> KafkaCheckpoints:
    group = group_id(settings)
    return KafkaCheckpoints(
        settings.kafka_bootstrap,
        f"{settings.topic_prefix}trainer-checkpoints",
        key=f"{group}/{settings.model_name}",
        transactional_id=f"{group}-{settings.instance_id}",
    )


def make_loop(
    settings: TrainerSettings, trainer: StreamTrainer, checkpoints: KafkaCheckpoints
) -> StreamLoop:
    consumer = Consumer(
        consumer_config(
            settings.kafka_bootstrap,
            group_id(settings),
            **{"session.timeout.ms": settings.session_timeout_ms, "enable.partition.eof": True},
        )
    )
    return StreamLoop(
        trainer,
        consumer,
        checkpoints,
        settings.features_topic,
        settings.labels_topic,
        Cadence(settings.checkpoint_every, settings.checkpoint_interval_s),
        settings.poll_size,
    )
