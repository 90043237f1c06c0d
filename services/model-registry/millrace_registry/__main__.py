"""``python -m model_registry``: serve the registry over HTTP."""

from __future__ import annotations

import logging

import uvicorn

from millrace.kafka import Durability, TopicSpec, ensure_topics, wait_for_broker
from millrace.logs import configure_logging
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings


def main() -> None:
    settings = RegistrySettings()
    configure_logging("model-registry", settings.log_level)
    # The console's sampler calls every service every few seconds: no line per request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.announce:
        wait_for_broker(settings.kafka)
        ensure_topics(
            settings.kafka,
            [TopicSpec(settings.model_events_topic, 1, {"cleanup.policy": "compact"})],
            durability=Durability.of(settings),
        )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
