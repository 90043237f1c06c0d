from __future__ import annotations

from millrace.settings import HttpSettings


class PredictorSettings(HttpSettings):
    port: int = 8701
    alias: str = "production"
    poll_interval_s: float = 5.0
    keep_versions: int = 3
    follow_model_events: bool = True
