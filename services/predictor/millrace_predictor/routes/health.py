"""Liveness, readiness (503 until a model is loaded) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from millrace.http import problems
from millrace_predictor.deps import PredictorDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses=problems(503))
def ready(predictor: PredictorDep, response: Response) -> dict[str, Any]:
    model = predictor.models.current
    if model is None:
        response.status_code = 503
        return {"status": "loading"}
    return {"status": "ready", "model": model.name, "version": model.version}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
