"""Feature modules: one piece of code that both the backfill and the live runner execute."""

from millrace.features.api import (
    FeatureModule,
    Outcome,
    State,
    event_decoder,
    feature_schema_hash,
    load_feature_module,
    process_event,
)

__all__ = [
    "FeatureModule",
    "Outcome",
    "State",
    "event_decoder",
    "feature_schema_hash",
    "load_feature_module",
    "process_event",
]
