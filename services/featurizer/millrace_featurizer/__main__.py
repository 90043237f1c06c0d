"""``python -m featurizer``: run the feature module live on the events topic."""

from __future__ import annotations

from millrace.health import run_supervised, serve_health
from millrace.kafka import Durability, ensure_topics, pipeline_topics, wait_for_broker
from millrace.logs import configure_logging
from millrace_featurizer.live import LiveFeaturizer
from millrace_featurizer.settings import FeaturizerSettings


def main() -> None:
    settings = FeaturizerSettings()
    configure_logging("featurizer", settings.log_level)
    wait_for_broker(settings.kafka)
    ensure_topics(
        settings.kafka,
        pipeline_topics(settings, settings.partitions),
        durability=Durability.of(settings),
    )
    runner = LiveFeaturizer.from_settings(settings)
    runner.install_signal_handlers()
    serve_health(settings.host, settings.port, runner.health)
    run_supervised(runner.run, runner.liveness, "featurizer")


if __name__ == "__main__":
    main()
