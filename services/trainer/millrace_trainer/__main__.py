"""``python -m millrace_trainer``: restore or train the baseline, then learn from the stream."""

from __future__ import annotations

import logging
import signal

from millrace.days import day_start_ms
from millrace.dotted import load_object
from millrace.features import feature_schema_hash, load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.health import run_supervised, serve_health
from millrace.join import Sample, join_all
from millrace.kafka import Durability, ensure_topics, pipeline_topics, wait_for_broker
from millrace.logs import configure_logging
from millrace.record_files import read_parquet
from millrace.registry_client import RegistryClient
from millrace_trainer.checkpoints import CheckpointRefused
from millrace_trainer.service import make_checkpoints, make_loop, make_trainer
from millrace_trainer.settings import TrainerSettings
from millrace_trainer.training import EmptyBaseline

log = logging.getLogger(__name__)


def main() -> None:
    settings = TrainerSettings()
    configure_logging("trainer", settings.log_level)
    module = load_feature_module(settings.feature_module)
    client = RegistryClient.from_settings(settings, signs=True)
    wait_for_broker(settings.kafka)
    ensure_topics(
        settings.kafka,
        pipeline_topics(settings, settings.partitions),
        durability=Durability.of(settings),
    )
    client.wait_ready()
    checkpoints = make_checkpoints(settings)
    trainer = make_trainer(settings, client, feature_schema_hash(module))

    def baseline() -> list[Sample]:
        if settings.baseline_parquet is not None:
            return join_all(*read_parquet(settings.baseline_parquet))
        if settings.baseline_events is None:
            return []
        window = load_object(settings.baseline_events, "baseline_events")
        events = window(day_start_ms(settings.baseline_start), day_start_ms(settings.baseline_end))
        result = backfill(Featurizer(module), from_envelopes(events))
        return join_all(result.features, result.labels)

    source: dict[str, str]
    if settings.baseline_parquet is not None:
        source = {"backfill": str(settings.baseline_parquet)}
    elif settings.baseline_events is not None:
        source = {
            "backfill": settings.baseline_events,
            "from": settings.baseline_start.isoformat(),
            "until": settings.baseline_end.isoformat(),
        }
    else:
        source = {"baseline_parquet": "not set"}
    try:
        trainer.start(checkpoints.load(), baseline, source)
    except (EmptyBaseline, CheckpointRefused) as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: trainer.stopping.set())
    loop = make_loop(settings, trainer, checkpoints)
    serve_health(
        settings.host,
        settings.port,
        lambda: loop.liveness.status(
            version=trainer.version,
            batches=trainer.batches_total,
            checkpoints=loop.checkpoints_written,
        ),
    )
    run_supervised(loop.run, loop.liveness, "trainer")


if __name__ == "__main__":
    main()
