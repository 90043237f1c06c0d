from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from millrace.settings import LOCAL_PORTS, HttpSettings


class RegistrySettings(HttpSettings):
    port: int = LOCAL_PORTS["model-registry"]
    data_dir: Path = Path(".run/registry")
    # Unset: the embedded SQLite file in data_dir (one replica). `postgresql://user@host/db`:
    # several replicas on one database, artifacts in it too (migrate it first:
    # `millrace registry migrate --to <url>`).
    registry_database_url: str | None = None
    max_body_bytes: int = 64 * 1024 * 1024
    # Verify publishers' Ed25519 signatures on upload (with MILLRACE_VERIFY_KEY).
    verify_signatures: bool = True
    # Announce alias moves on the model-events topic.
    announce: bool = True
    # Retention after every publish: keep the newest N versions (0 = keep all), and never a
    # version an alias points at or the last `retain_history_moves` alias moves reference.
    retain_versions: int = 0
    retain_history_moves: int = 20
    # The console's time series: the service instances the registry samples (role -> base
    # URLs; the defaults are the local stack's ports), how often, and for how long points stay.
    metrics_targets: dict[str, list[str]] = {
        role: [f"http://127.0.0.1:{LOCAL_PORTS[role]}"]
        for role in ("featurizer", "trainer", "predictor")
    }
    metrics_interval_s: float = Field(default=10.0, gt=0)
    metrics_retention_hours: float = Field(default=48.0, gt=0)

    @field_validator("registry_database_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty value (compose's `${MILLRACE_REGISTRY_DATABASE_URL:-}`) means unset."""
        return None if value == "" else value
