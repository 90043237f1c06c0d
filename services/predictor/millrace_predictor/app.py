"""The predictor's HTTP API: ``POST /predict``, ``POST /predict/batch``, the Open Inference
Protocol paths, health, readiness and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from millrace.http import BodySizeLimit
from millrace_predictor.routes import health, inference, predict
from millrace_predictor.service import Predictor
from millrace_predictor.settings import PredictorSettings


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    predictor = Predictor(settings or PredictorSettings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        predictor.start()
        yield
        predictor.stop()

    app = FastAPI(title="Millrace predictor", version="1", lifespan=lifespan)
    app.state.predictor = predictor
    app.add_middleware(BodySizeLimit, max_bytes=predictor.settings.max_body_bytes)
    for router in (predict.router, inference.router, health.router):
        app.include_router(router)
    return app
