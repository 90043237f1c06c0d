from __future__ import annotations

from pathlib import Path

from millrace.settings import HttpSettings


class RegistrySettings(HttpSettings):
    port: int = 8700
    data_dir: Path = Path(".run/registry")
    max_body_bytes: int = 64 * 1024 * 1024
    # Verify publishers' Ed25519 signatures on upload (with MILLRACE_VERIFY_KEY).
    verify_signatures: bool = True
    # Announce alias moves on the model-events topic.
    announce: bool = True
    # Retention after every publish: keep the newest N versions (0 = keep all), and never a
    # version an alias points at or the last `retain_history_moves` alias moves reference.
    retain_versions: int = 0
    retain_history_moves: int = 20
