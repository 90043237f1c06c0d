"""What the predictor's handlers need, injected, and the parsing they share."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter, Histogram

from millrace.envelope import Event, EventDecoder, InvalidEvent
from millrace.features import FeatureModule
from millrace_predictor.service import Predictor

REQUESTS = Counter("millrace_predictor_requests_total", "Predict requests", ["version", "status"])
LATENCY = Histogram("millrace_predictor_latency_seconds", "Predict latency", ["version"])
REF_TEMPLATE = "#/components/schemas/{name}"


def prediction_event_schema(module: FeatureModule) -> tuple[dict[str, Any], dict[str, Any]]:
    """The envelopes ``POST /predict`` takes for ``module`` (one variant per event type that
    yields features, with that type's payload schema when the module declares one), and the
    OpenAPI components they refer to."""
    (envelope,), components = msgspec.json.schema_components([Event], ref_template=REF_TEMPLATE)
    base = components.pop(envelope["$ref"].rsplit("/", 1)[-1])
    types = sorted(module.feature_event_types or module.event_types)
    payloads = [module.payload_schemas.get(t) for t in types]
    refs, payload_components = msgspec.json.schema_components(
        [p for p in payloads if p is not None], ref_template=REF_TEMPLATE
    )
    components.update(payload_components)
    found = iter(refs)
    variants = []
    for event_type, payload in zip(types, payloads, strict=True):
        data = next(found) if payload is not None else {"type": "object"}
        properties = {**base["properties"], "type": {"const": event_type}, "data": data}
        variants.append({**base, "title": "Event", "properties": properties})
    return (variants[0] if len(variants) == 1 else {"oneOf": variants}), components


def get_predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


PredictorDep = Annotated[Predictor, Depends(get_predictor)]


def parse_one(events: EventDecoder, body: bytes) -> Event:
    try:
        return events.decode(body)
    except InvalidEvent as exc:
        raise HTTPException(422, exc.reason) from None


def parse_many(events: EventDecoder, items: Any, limit: int) -> list[Event]:
    """A non-empty list of envelopes (objects or JSON strings), at most ``limit``; 422 names
    the first bad one."""
    if not isinstance(items, list) or not items:
        raise HTTPException(422, "expected a non-empty list of events")
    if len(items) > limit:
        raise HTTPException(422, f"at most {limit} events per call")
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(events.decode(item) if isinstance(item, str) else events.convert(item))
        except InvalidEvent as exc:
            raise HTTPException(422, f"event {index}: {exc.reason}") from None
    return parsed


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
