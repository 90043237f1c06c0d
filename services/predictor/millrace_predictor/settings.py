from __future__ import annotations

from pydantic import Field

from millrace.settings import LOCAL_PORTS, HttpSettings


class PredictorSettings(HttpSettings):
    port: int = LOCAL_PORTS["predictor"]
    alias: str = "production"
    poll_interval_s: float = 5.0
    keep_versions: int = 3
    follow_model_events: bool = True
    max_batch: int = Field(default=1000, ge=1)
    max_body_bytes: int = 8 * 1024 * 1024
    # Log every prediction (with the predecessor's shadow score) to the predictions topic and
    # score versions on live labels.
    log_predictions: bool = True
    # Roll back a new version that is worse than its predecessor on the same live labels.
    guardrail: bool = True
    guardrail_margin: float = 0.05
    guardrail_min_labels: int = 200
    # Load pickle-based (River) versions. Their state is code run on load: allow it only when
    # whoever holds the signing key may run code in the predictors.
    allow_pickle: bool = False
