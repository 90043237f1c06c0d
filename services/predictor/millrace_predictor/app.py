"""The predictor's HTTP API: ``POST /predict``, ``POST /predict/batch``, the Open Inference
Protocol paths, health, readiness and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from millrace import collector
from millrace.http import BodySizeLimit, install_error_contract
from millrace_predictor.deps import prediction_event_schema
from millrace_predictor.routes import health, inference, predict
from millrace_predictor.service import Predictor
from millrace_predictor.settings import PredictorSettings


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    predictor = Predictor(settings or PredictorSettings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        predictor.start()
        # What start-up built (the app, the module's tables, the model) stays out of the
        # collector's scans, and requests' short-lived objects are collected in bulk.
        with collector.tuned():
            yield
        predictor.stop()

    app = FastAPI(title="Millrace predictor", version="1", lifespan=lifespan)
    app.state.predictor = predictor
    app.add_middleware(BodySizeLimit, max_bytes=predictor.settings.max_body_bytes)
    install_error_contract(app)
    for router in (predict.router, inference.router, health.router):
        app.include_router(router)
    _document_events(app, *prediction_event_schema(predictor.module), predictor.settings.max_batch)
    return app


def _document_events(
    app: FastAPI, event: dict[str, Any], components: dict[str, Any], max_batch: int
) -> None:
    """Put the feature module's envelopes into the OpenAPI document: the routes read raw bodies
    (any content type, one parse), so FastAPI cannot derive them."""
    default_openapi = app.openapi
    events = {"type": "array", "items": event, "minItems": 1, "maxItems": max_batch}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = default_openapi()
            paths = document["paths"]
            paths["/predict"]["post"]["requestBody"] = _json_body(event)
            paths["/predict/batch"]["post"]["requestBody"] = _json_body(
                {"type": "object", "required": ["events"], "properties": {"events": events}}
            )
            document["components"]["schemas"]["InferInput"]["properties"]["data"] = events
            document["components"]["schemas"].update(components)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}
