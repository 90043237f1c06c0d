"""Typed settings read from the environment (``MILLRACE_*``), one object per service.

Every service settings class derives from :class:`CommonSettings`, so the connection facts
(Kafka, Redis, registry, topics) are spelled once and a ``docker-compose.yml`` or a shell can set
them for the whole stack with the same variable names.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_TOKEN = "millrace-dev-token"
DEV_SIGNING_KEY = "millrace-dev-signing-key"


class CommonSettings(BaseSettings):
    """Connection settings shared by every Millrace process."""

    model_config = SettingsConfigDict(env_prefix="MILLRACE_", env_ignore_empty=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every topic and Redis key starts with this, so test runs never see each other's data.
    topic_prefix: str = "millrace."
    registry_url: str = "http://127.0.0.1:8700"
    registry_token: str = DEV_TOKEN
    signing_key: str = DEV_SIGNING_KEY
    model_name: str = "flights-delay"
    feature_module: str = "millrace_flights.features:FlightsFeatures"
    log_level: str = "INFO"

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}events"

    @property
    def features_topic(self) -> str:
        return f"{self.topic_prefix}features"

    @property
    def labels_topic(self) -> str:
        return f"{self.topic_prefix}labels"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}dead-letter"

    @property
    def predictions_topic(self) -> str:
        return f"{self.topic_prefix}predictions"

    @property
    def model_events_topic(self) -> str:
        return f"{self.topic_prefix}model-events"


class HttpSettings(CommonSettings):
    """A service with an HTTP listener (health and metrics at least)."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
