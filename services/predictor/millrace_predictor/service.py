"""The predictor's wiring: what every request needs, built once and injected into handlers."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from confluent_kafka import Producer
from fastapi import HTTPException
from prometheus_client import Counter, Gauge, Histogram

from millrace.envelope import Event, InvalidEvent
from millrace.features import event_decoder, feature_schema_hash, load_feature_module
from millrace.kafka import client_config
from millrace.model_events import ModelEventFollower
from millrace.registry_client import RegistryClient, RegistryError
from millrace.state import RedisState, StateIncomplete
from millrace_predictor.monitoring import Guardrail, LiveQuality
from millrace_predictor.serving import ModelHolder, score
from millrace_predictor.settings import PredictorSettings

log = logging.getLogger(__name__)

SCORES = Histogram(
    "millrace_predictor_score",
    "Predicted probabilities",
    ["version"],
    buckets=[i / 10 for i in range(1, 11)],
)
MODEL_AGE = Gauge(
    "millrace_predictor_model_age_seconds", "Time since the serving version was published"
)
UNLOGGED = Counter("millrace_predictor_predictions_not_logged_total", "Predictions the log dropped")
REFUSED_INCOMPLETE = Counter(
    "millrace_predictor_refused_incomplete_state_total",
    "Predict requests answered 503: the online state was being rebuilt or unreachable",
)
#: What a 503 for incomplete state tells the client to wait (a rebuild takes seconds).
RETRY_AFTER_S = 2


class Predictor:
    def __init__(self, settings: PredictorSettings) -> None:
        self.settings = settings
        self.module = load_feature_module(settings.feature_module)
        #: Envelopes of the module's event types, payloads by the module's schemas.
        self.events = event_decoder(self.module)
        self.state = RedisState.from_settings(settings)
        self.client = RegistryClient.from_settings(settings)
        self.models = ModelHolder(
            self.client,
            settings.model_name,
            settings.alias,
            settings.keep_versions,
            allow_pickle=settings.allow_pickle,
            feature_schema=feature_schema_hash(self.module),
        )
        self.predictions_topic = settings.predictions_topic
        self.follower: ModelEventFollower | None = None
        self.quality: LiveQuality | None = None
        self.producer: Producer | None = None
        MODEL_AGE.set_function(self._model_age)

    def _model_age(self) -> float:
        current = self.models.current
        return time.time() - current.published_at if current and current.published_at else 0.0

    def start(self) -> None:
        s = self.settings
        self.state.wait_ready()
        # Follow the moves from now on first, then read the alias's current state: a move in
        # between arrives both ways, and the sequence numbers keep the newer.
        if s.follow_model_events:
            self.follower = ModelEventFollower(
                s.kafka, s.model_events_topic, self.models.on_model_event
            )
            self.follower.start()
        self.models.sync()
        self.models.start_polling(s.poll_interval_s)
        if s.log_predictions:
            self.producer = Producer(
                client_config(
                    s.kafka,
                    **{"enable.idempotence": True, "linger.ms": 20, "compression.type": "lz4"},
                )
            )
            guardrail = Guardrail(
                self._rollback, s.guardrail_margin, s.guardrail_min_labels, s.guardrail
            )
            self.quality = LiveQuality(s.kafka, self.predictions_topic, s.labels_topic, guardrail)
            self.quality.start()

    def stop(self) -> None:
        self.models.stop()
        for worker in (self.follower, self.quality):
            if worker is not None:
                worker.stop()
        if self.producer is not None:
            self.producer.flush(5)
            self.producer = None

    def _rollback(self, bad: int, good: int, reason: str) -> bool:
        """Compare-and-set: only if the alias still names the bad version."""
        try:
            self.client.move_alias(self.settings.model_name, self.settings.alias, good, bad, reason)
            return True
        except RegistryError as exc:
            log.info(
                "guardrail rollback not applied", extra={"status": exc.status, "detail": exc.detail}
            )
            return False

    def predict_many(self, events: list[Event]) -> dict[str, Any]:
        serving = self.models.serving  # read once: the model and its shadow belong together
        if serving is None:
            raise HTTPException(503, "no model loaded yet")
        model, shadow = serving.current, serving.previous
        try:
            scored = score(self.module, self.state.read_complete, model, shadow, events)
        except InvalidEvent as exc:
            raise HTTPException(422, exc.reason) from None
        except StateIncomplete as exc:
            # Features from state known incomplete would be features no training run saw.
            REFUSED_INCOMPLETE.inc()
            raise HTTPException(
                503, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}
            ) from None
        histogram = SCORES.labels(str(model.version))
        for row in scored:
            histogram.observe(row.probability)
            self._log(model.version, row, shadow.version if shadow else None)
        return {
            "model": model.name,
            "version": model.version,
            "predictions": [
                {
                    "probability": row.probability,
                    "event_id": row.event.id,
                    "subject": row.subject,
                    "feature_ts": row.event.ts,
                }
                for row in scored
            ],
        }

    def _log(self, version: int, row: Any, shadow_version: int | None) -> None:
        if self.producer is None:
            return
        record = {
            "subject": row.subject,
            "event_id": row.event.id,
            "model": self.settings.model_name,
            "version": version,
            "probability": row.probability,
            "ts": row.event.ts,
            "shadow": (
                {"version": shadow_version, "probability": row.shadow}
                if shadow_version is not None and row.shadow is not None
                else None
            ),
        }
        try:
            self.producer.produce(self.predictions_topic, orjson.dumps(record), row.subject)
            self.producer.poll(0)
        except BufferError:
            UNLOGGED.inc()
