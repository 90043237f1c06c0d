"""What the predictor's handlers need, injected, and the parsing they share."""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter, Histogram

from millrace.envelope import Event, InvalidEvent, parse_event, validate_event
from millrace.features import FeatureModule
from millrace_predictor.service import Predictor

REQUESTS = Counter("millrace_predictor_requests_total", "Predict requests", ["version", "status"])
LATENCY = Histogram("millrace_predictor_latency_seconds", "Predict latency", ["version"])
EVENT_SCHEMA = Event.model_json_schema(by_alias=True)


def prediction_event_schema(module: FeatureModule) -> dict[str, Any]:
    """The envelopes ``POST /predict`` takes for ``module``: one variant per event type that
    yields features, with that type's payload schema when the module declares one."""
    variants = []
    for event_type in sorted(module.feature_event_types or module.event_types):
        payload = module.payload_schemas.get(event_type)
        data = payload.model_json_schema() if payload is not None else {"type": "object"}
        properties = {**EVENT_SCHEMA["properties"], "type": {"const": event_type}, "data": data}
        variants.append({**EVENT_SCHEMA, "properties": properties})
    return variants[0] if len(variants) == 1 else {"oneOf": variants}


def get_predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


PredictorDep = Annotated[Predictor, Depends(get_predictor)]


def parse_one(body: bytes) -> Event:
    try:
        return parse_event(body)
    except InvalidEvent as exc:
        raise HTTPException(422, exc.reason) from None


def parse_many(items: Any, limit: int) -> list[Event]:
    """A non-empty list of envelopes (objects or JSON strings), at most ``limit``; 422 names
    the first bad one."""
    if not isinstance(items, list) or not items:
        raise HTTPException(422, "expected a non-empty list of events")
    if len(items) > limit:
        raise HTTPException(422, f"at most {limit} events per call")
    events = []
    for index, item in enumerate(items):
        try:
            events.append(validate_event(orjson.loads(item) if isinstance(item, str) else item))
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, f"event {index}: malformed JSON: {exc}") from None
        except InvalidEvent as exc:
            raise HTTPException(422, f"event {index}: {exc.reason}") from None
    return events


async def predict_timed(predictor: Predictor, events: list[Event]) -> dict[str, Any]:
    """Predict off the event loop, counted and timed by the version that answered."""
    started = time.perf_counter()
    try:
        result = await run_in_threadpool(predictor.predict_many, events)
    except HTTPException as exc:
        REQUESTS.labels("none", str(exc.status_code)).inc()
        raise
    version = str(result["version"])
    REQUESTS.labels(version, "200").inc()
    LATENCY.labels(version).observe(time.perf_counter() - started)
    return result
