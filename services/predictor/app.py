"""The predictor's HTTP API: ``POST /predict`` and health, readiness and metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from millrace.envelope import Event, InvalidEvent, parse_event
from millrace.features import FeatureModule, load_feature_module, process_event
from millrace.model_events import ModelEventFollower
from millrace.registry_client import RegistryClient
from millrace.serving import ModelHolder
from millrace.state import RedisState
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from predictor.settings import PredictorSettings

REQUESTS = Counter("millrace_predictor_requests_total", "Predict requests", ["version", "status"])
LATENCY = Histogram("millrace_predictor_latency_seconds", "Predict latency", ["version"])


class Predictor:
    """Everything a request needs, built once at start-up and injected into the handlers."""

    def __init__(self, settings: PredictorSettings) -> None:
        self.settings = settings
        self.module: FeatureModule = load_feature_module(settings.feature_module)
        self.state = RedisState.from_url(settings.redis_url, settings.topic_prefix)
        client = RegistryClient(
            settings.registry_url, settings.registry_token, settings.signing_key
        )
        self.models = ModelHolder(
            client, settings.model_name, settings.alias, settings.keep_versions
        )
        self.follower: ModelEventFollower | None = None

    def start(self) -> None:
        self.models.sync()
        self.models.start_polling(self.settings.poll_interval_s)
        if self.settings.follow_model_events:
            self.follower = ModelEventFollower(
                self.settings.kafka_bootstrap,
                self.settings.model_events_topic,
                self.models.on_model_event,
            )
            self.follower.start()

    def stop(self) -> None:
        self.models.stop()
        if self.follower is not None:
            self.follower.stop()

    def predict(self, event: Event) -> dict[str, Any]:
        model = self.models.current
        if model is None:
            raise HTTPException(503, "no model loaded yet")
        try:
            outcome = process_event(self.module, event, self.state.read(event.key))
        except InvalidEvent as exc:
            raise HTTPException(422, exc.reason) from None
        if outcome.features is None:
            raise HTTPException(
                422, f"event type {event.type!r} yields no features to predict from"
            )
        probability = model.learner.predict_proba_one(outcome.features)[True]
        return {
            "model": model.name,
            "version": model.version,
            "probability": probability,
            "event_id": event.id,
            "subject": outcome.subject,
            "feature_ts": event.ts,
        }


def _parse(body: bytes) -> Event:
    try:
        return parse_event(body)
    except InvalidEvent as exc:
        raise HTTPException(422, exc.reason) from None


def get_predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


PredictorDep = Annotated[Predictor, Depends(get_predictor)]


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    predictor = Predictor(settings or PredictorSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        predictor.start()
        yield
        predictor.stop()

    app = FastAPI(title="Millrace predictor", version="1", lifespan=lifespan)
    app.state.predictor = predictor

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready(p: PredictorDep, response: Response) -> dict[str, Any]:
        model = p.models.current
        if model is None:
            response.status_code = 503
            return {"status": "loading"}
        return {"status": "ready", "model": model.name, "version": model.version}

    @app.post(
        "/predict",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": Event.model_json_schema(by_alias=True)}},
            }
        },
    )
    async def predict(request: Request, p: PredictorDep) -> dict[str, Any]:
        """Predict for one event in the envelope the events topic carries (any content type)."""
        started = time.perf_counter()
        try:
            event = _parse(await request.body())
            result = await run_in_threadpool(p.predict, event)
        except HTTPException as exc:
            REQUESTS.labels("none", str(exc.status_code)).inc()
            raise
        version = str(result["version"])
        REQUESTS.labels(version, "200").inc()
        LATENCY.labels(version).observe(time.perf_counter() - started)
        return result

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
