"""Liveness, readiness (503 until a model is loaded) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from millrace.health import metrics_response
from millrace.http import problems
from millrace_predictor.deps import PredictorDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses=problems(503))
def ready(predictor: PredictorDep, response: Response) -> dict[str, Any]:
    """503 until a version serves, and while the online state is not known complete (``state``
    says why: being rebuilt, unreachable); ``refused`` names the versions this predictor will
    not serve, and why."""
    model = predictor.models.current
    refused = {str(v): reason for v, reason in predictor.models.refused.items()}
    if model is None:
        response.status_code = 503
        return {"status": "loading", "refused": refused}
    served = {"model": model.name, "version": model.version, "refused": refused}
    incomplete = predictor.state.completeness()
    if incomplete is not None:
        response.status_code = 503
        return {"status": "state incomplete", "state": incomplete, **served}
    return {"status": "ready", **served}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics() -> Response:
    return metrics_response()
