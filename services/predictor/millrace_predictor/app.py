"""The predictor's HTTP API: ``POST /predict``, ``POST /predict/batch``, the Open Inference
Protocol paths, health, readiness and metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field

from millrace.envelope import Event, InvalidEvent, parse_event, validate_event
from millrace.http import BodySizeLimit
from millrace_predictor.service import Predictor
from millrace_predictor.settings import PredictorSettings

REQUESTS = Counter("millrace_predictor_requests_total", "Predict requests", ["version", "status"])
LATENCY = Histogram("millrace_predictor_latency_seconds", "Predict latency", ["version"])


class InferInput(BaseModel):
    name: str = Field(max_length=64)
    datatype: str = Field(max_length=16)
    shape: list[int] = Field(max_length=4)
    data: list[Any]


class InferRequest(BaseModel):
    id: str | None = Field(default=None, max_length=200)
    inputs: list[InferInput] = Field(min_length=1, max_length=1)


def get_predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


PredictorDep = Annotated[Predictor, Depends(get_predictor)]
EVENT_SCHEMA = Event.model_json_schema(by_alias=True)


def _parse_one(body: bytes) -> Event:
    try:
        return parse_event(body)
    except InvalidEvent as exc:
        raise HTTPException(422, exc.reason) from None


def _parse_many(items: Any, limit: int) -> list[Event]:
    if not isinstance(items, list) or not items:
        raise HTTPException(422, "expected a non-empty list of events")
    if len(items) > limit:
        raise HTTPException(422, f"at most {limit} events per call")
    events = []
    for index, item in enumerate(items):
        try:
            decoded = orjson.loads(item) if isinstance(item, str) else item
            events.append(validate_event(decoded))
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, f"event {index}: malformed JSON: {exc}") from None
        except InvalidEvent as exc:
            raise HTTPException(422, f"event {index}: {exc.reason}") from None
    return events


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    settings = settings or PredictorSettings()
    predictor = Predictor(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        predictor.start()
        yield
        predictor.stop()

    app = FastAPI(title="Millrace predictor", version="1", lifespan=lifespan)
    app.state.predictor = predictor
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    async def timed(p: Predictor, events: list[Event]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = await run_in_threadpool(p.predict_many, events)
        except HTTPException as exc:
            REQUESTS.labels("none", str(exc.status_code)).inc()
            raise
        version = str(result["version"])
        REQUESTS.labels(version, "200").inc()
        LATENCY.labels(version).observe(time.perf_counter() - started)
        return result

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
                "content": {"application/json": {"schema": EVENT_SCHEMA}},
            }
        },
    )
    async def predict(request: Request, p: PredictorDep) -> dict[str, Any]:
        """One event in the envelope the events topic carries (any content type)."""
        result = await timed(p, [_parse_one(await request.body())])
        return {**result.pop("predictions")[0], **result}

    @app.post(
        "/predict/batch",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["events"],
                            "properties": {"events": {"type": "array", "items": EVENT_SCHEMA}},
                        }
                    }
                },
            }
        },
    )
    async def predict_batch(request: Request, p: PredictorDep) -> dict[str, Any]:
        """``{"events": [...]}``: all answered by one model version, in order."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, f"malformed JSON: {exc}") from None
        if not isinstance(body, dict):
            raise HTTPException(422, 'expected {"events": [...]}')
        return await timed(p, _parse_many(body.get("events"), settings.max_batch))

    # -- Open Inference Protocol (KServe v2) ------------------------------------------------

    @app.get("/v2/health/live")
    def v2_live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def v2_ready(p: PredictorDep, response: Response) -> dict[str, bool]:
        is_ready = p.models.current is not None
        response.status_code = 200 if is_ready else 503
        return {"ready": is_ready}

    def check_model(p: Predictor, name: str) -> None:
        if name != p.settings.model_name:
            raise HTTPException(404, f"unknown model {name!r}")

    @app.get("/v2/models/{name}")
    def v2_model(name: str, p: PredictorDep) -> dict[str, Any]:
        check_model(p, name)
        current = p.models.current
        return {
            "name": name,
            "versions": [str(current.version)] if current else [],
            "platform": "millrace",
            "inputs": [{"name": "event", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]}],
        }

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(name: str, body: InferRequest, p: PredictorDep) -> dict[str, Any]:
        """Input ``event``: BYTES, one JSON envelope (string or object) per element."""
        check_model(p, name)
        tensor = body.inputs[0]
        if tensor.name != "event" or tensor.datatype != "BYTES":
            raise HTTPException(422, 'expected one input named "event" of datatype BYTES')
        result = await timed(p, _parse_many(tensor.data, settings.max_batch))
        probabilities = [row["probability"] for row in result["predictions"]]
        return {
            "model_name": name,
            "model_version": str(result["version"]),
            "id": body.id,
            "outputs": [
                {
                    "name": "probability",
                    "datatype": "FP64",
                    "shape": [len(probabilities)],
                    "data": probabilities,
                }
            ],
        }

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
