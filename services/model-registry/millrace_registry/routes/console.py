"""The console's data: the sampled time series and the status of every sampled instance."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from millrace.http import problems
from millrace_registry.deps import READING, Readable, SeriesDep, SettingsDep

router = APIRouter(prefix="/console", tags=["console"], responses={**READING, **problems(422)})
#: At most this many points per series in one answer; older points are averaged into buckets.
MAX_POINTS = 720


@router.get("/series", dependencies=Readable)
def series(
    store: SeriesDep,
    settings: SettingsDep,
    hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24.0,
) -> dict[str, Any]:
    """Every series of the last ``hours``: ``points`` are ``[unix seconds, value]``, averaged
    into at most MAX_POINTS buckets over the span the points cover."""
    now = time.time()
    since = now - hours * 3600
    first = store.first_at(since)
    span = now - (first if first is not None else since)
    step = max(settings.metrics_interval_s, span / MAX_POINTS)
    return {"from": since, "to": now, "step": step, "series": store.series(since, step)}


@router.get("/targets", dependencies=Readable)
def targets(store: SeriesDep, settings: SettingsDep) -> dict[str, Any]:
    """Each sampled instance: whether its last scrape answered, and what a predictor refuses."""
    return {
        "interval_s": settings.metrics_interval_s,
        "configured": settings.metrics_targets,
        "targets": store.targets(),
    }
