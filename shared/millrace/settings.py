"""Typed settings, one object per service, from one settings file and the environment.

Every service settings class derives from :class:`CommonSettings`, so the connection facts
(Kafka, Redis, registry, topics) are spelled once. Each process reads the settings file
(``MILLRACE_CONFIG``, by default ``millrace.toml`` in the working folder; the demo's is at the
repository's root) and then the environment, which wins: ``feature_module = "..."`` in the file,
``MILLRACE_FEATURE_MODULE`` in the environment. A key of the file that no service knows is an
error (see :func:`check_config_keys`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from millrace.errors import MillraceError
from millrace.signing import SigningKey, VerifyKey, development_keypair

#: The public values MILLRACE_DEV_MODE=1 stands in for missing secrets: local development only.
DEV_TOKEN = "millrace-dev-token"


class MissingSecret(MillraceError, ValueError):
    """A secret setting is unset outside development mode."""

    def __init__(self, variable: str, what: str) -> None:
        super().__init__(
            f"{variable} is not set: {what}. Set it (`make up` generates one into .run/secrets), "
            "or set MILLRACE_DEV_MODE=1 to use the public development values on a local machine."
        )


def config_file() -> Path:
    """The settings file every process reads (it need not exist)."""
    return Path(os.environ.get("MILLRACE_CONFIG") or "millrace.toml")


#: Each service's HTTP port on one machine (`make up`; compose publishes the same): the one
#: place they are written, read by the services' settings, the registry's defaults and the
#: local stack.
LOCAL_PORTS = {"model-registry": 8700, "predictor": 8701, "featurizer": 8702, "trainer": 8703}


class CommonSettings(BaseSettings):
    """Connection settings shared by every Millrace process."""

    # MILLRACE_<NAME>=null unsets an optional setting (an empty value keeps the default).
    model_config = SettingsConfigDict(
        env_prefix="MILLRACE_", env_ignore_empty=True, env_parse_none_str="null", extra="ignore"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments, then the environment, then the settings file.
        settings_file = _SettingsFile(settings_cls, config_file())
        return init_settings, env_settings, dotenv_settings, settings_file, file_secret_settings

    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis behind Sentinel instead of redis_url: the sentinels ("host:port", comma-separated
    # in the environment) and the name of the master they watch; a failover is followed.
    redis_sentinels: Annotated[list[str], NoDecode] = []
    redis_master_name: str = "mymaster"
    # Redis Cluster instead: some of its nodes ("host:port", comma-separated); the client finds
    # the rest. The state's keys spread over every primary by entity (docs/architecture.md).
    redis_cluster_nodes: Annotated[list[str], NoDecode] = []
    # The password of the Redis nodes behind sentinels or of a cluster's nodes (one Redis:
    # in redis_url, redis://:password@host), and of the sentinels themselves if they ask one.
    redis_password: SecretStr | None = None
    redis_sentinel_password: SecretStr | None = None
    # Every topic and Redis key starts with this, so test runs never see each other's data.
    topic_prefix: str = "millrace."
    # The topics Millrace creates: their replication factor (unset: 3, or the cluster's broker
    # count when it has fewer) and min.insync.replicas (unset: the replication factor - 1 from a
    # factor of 3 on, else the brokers' own default). Existing topics are left as they are.
    replication_factor: int | None = Field(default=None, ge=1)
    min_insync: int | None = Field(default=None, ge=1)
    registry_url: str = f"http://127.0.0.1:{LOCAL_PORTS['model-registry']}"
    # Secrets have no defaults: outside development mode (MILLRACE_DEV_MODE=1, public values)
    # a process that needs one and lacks it refuses to start, naming the variable.
    dev_mode: bool = False
    # Bearer token of the registry's mutating calls (publish, move, rollback, archive, prune).
    registry_token: SecretStr | None = None
    # Optional bearer token the registry then requires for reads (the write token also reads).
    registry_read_token: SecretStr | None = None
    # Ed25519 private key (base64 of 32 bytes, or PEM): the trainer's alone.
    signing_key: SecretStr | None = None
    # Ed25519 public key: what the registry and the predictors verify artifacts with.
    verify_key: str | None = None
    # Kafka client security, passed to every Kafka client (librdkafka's names in brackets).
    kafka_security_protocol: str | None = None  # security.protocol: SASL_SSL, SASL_PLAINTEXT, SSL
    kafka_sasl_mechanism: str | None = None  # sasl.mechanism: PLAIN, SCRAM-SHA-256, ...
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    # What the pipeline computes and serves: named by the settings file (the demo's names the
    # flights module and `flights-delay`).
    model_name: str = "model"
    feature_module: str = ""
    log_level: str = "INFO"

    @field_validator("redis_sentinels", "redis_cluster_nodes", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def token(self) -> str:
        """The registry's write token."""
        if self.registry_token is not None:
            return self.registry_token.get_secret_value()
        if self.dev_mode:
            return DEV_TOKEN
        raise MissingSecret("MILLRACE_REGISTRY_TOKEN", "the registry's bearer token")

    def read_token(self) -> str | None:
        """The registry's read token, if reads need one."""
        token = self.registry_read_token
        return token.get_secret_value() if token is not None else None

    def signer(self) -> SigningKey:
        """The private key that signs artifacts (the trainer's)."""
        if self.signing_key is not None:
            return SigningKey.from_text(self.signing_key.get_secret_value())
        if self.dev_mode:
            return SigningKey.from_text(development_keypair()[0])
        raise MissingSecret("MILLRACE_SIGNING_KEY", "the Ed25519 private key that signs models")

    def verifier(self) -> VerifyKey:
        """The public key artifacts are verified with."""
        if self.verify_key is not None:
            return VerifyKey.from_text(self.verify_key)
        if self.signing_key is not None:
            return self.signer().verify_key()
        if self.dev_mode:
            return VerifyKey.from_text(development_keypair()[1])
        raise MissingSecret("MILLRACE_VERIFY_KEY", "the Ed25519 public key models are checked with")

    @property
    def kafka(self) -> dict[str, Any]:
        """The librdkafka settings every client of this process starts from."""
        options: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": reveal(self.kafka_sasl_password),
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
            "ssl.key.password": reveal(self.kafka_ssl_key_password),
        }
        return {name: value for name, value in options.items() if value is not None}

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

    @property
    def state_changelog_topic(self) -> str:
        """Every entity state the featurizer wrote, compacted: what Redis is rebuilt from."""
        return f"{self.topic_prefix}state-changelog"


class HttpSettings(CommonSettings):
    """A service with an HTTP listener (health and metrics at least)."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)


def reveal(secret: SecretStr | None) -> str | None:
    """A secret setting's value, for the client that needs it (None: unset)."""
    return secret.get_secret_value() if secret is not None else None


class _SettingsFile(TomlConfigSettingsSource):
    """The settings file: a relative path in it is relative to the file's folder, so the file
    means the same wherever a process runs (on the host, or mounted into a container)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls, toml_file=path)
        self.folder = path.resolve().parent

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        for name, value in values.items():
            field = self.settings_cls.model_fields.get(name)
            is_path = field is not None and Path in (field.annotation, *get_args(field.annotation))
            if is_path and isinstance(value, str) and not Path(value).is_absolute():
                values[name] = str(self.folder / value)
        return values


class UnknownSetting(MillraceError, ValueError):
    pass


def check_config_keys(path: Path, known: Iterable[str]) -> None:
    """Refuse a settings file with a key no service reads (a typo would be silently ignored),
    naming the closest known ones."""
    if not path.exists():
        return
    try:
        keys = tomllib.loads(path.read_text()).keys()
    except tomllib.TOMLDecodeError as exc:
        raise UnknownSetting(f"{path} is not valid TOML: {exc}") from None
    names = sorted(set(known))
    for key in keys:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise UnknownSetting(f"{path}: unknown setting {key!r}{hint}")
