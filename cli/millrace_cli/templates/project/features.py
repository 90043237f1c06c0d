"""Will this job fail? A feature module written by ``millrace init``: change it to your data.

Events (the envelope's ``key`` is the entity whose state the features aggregate over, here a
machine; ``ts`` is event time in epoch milliseconds):

- ``job.started``: a job begins on a machine — the moment a prediction is asked for. Its
  features describe the job and the machine's recent history, known *before* the job;
- ``job.finished``: the job's outcome, ``failed`` — the label, joined with the features by the
  subject id (``job_id``); it also updates the machine's history.

Each event type's payload is a ``msgspec.Struct``: its types and ranges are checked before the
module sees an event (a bad event goes to the dead-letter topic with the reason), and the
predictor publishes them in its OpenAPI document.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from millrace.envelope import Event
from millrace.features.api import FeatureModule, State
from millrace.features.windows import Window

HOUR_MS = 3_600_000
STARTED = "job.started"
FINISHED = "job.finished"
JobId = Annotated[str, Meta(min_length=1, max_length=64)]


class JobStarted(msgspec.Struct, frozen=True, gc=False):
    job_id: JobId
    temperature_c: Annotated[float, Meta(ge=-50, le=200)]
    load: Annotated[float, Meta(ge=0, le=1)]


class JobFinished(msgspec.Struct, frozen=True, gc=False):
    job_id: JobId
    failed: bool


class Features(FeatureModule):
    name = "jobs"
    version = 1
    event_types = frozenset({STARTED, FINISHED})
    feature_event_types = frozenset({STARTED})
    payload_schemas: ClassVar[dict[str, type[msgspec.Struct]]] = {
        STARTED: JobStarted,
        FINISHED: JobFinished,
    }
    #: An event more than an hour older than its machine's newest is late (dead-lettered).
    allowed_lateness_ms = HOUR_MS
    failures_24h = Window("failures24h", size_ms=24 * HOUR_MS, step_ms=HOUR_MS)
    feature_names: ClassVar[tuple[str, ...]] = (
        "temperature",
        "load",
        "hot_and_busy",
        "failure_rate_24h",
        "jobs_24h_log",
        "since_failure_log_h",
    )

    def subject(self, event: Event) -> str:
        job: JobStarted | JobFinished = event.data
        return job.job_id

    def features(self, event: Event, state: State) -> dict[str, float] | None:
        if event.type != STARTED:
            return None
        job: JobStarted = event.data
        temperature = (job.temperature_c - 70.0) / 10.0
        x = {"temperature": temperature, "load": job.load, "hot_and_busy": temperature * job.load}
        day = self.failures_24h.aggregate(state, event.ts)
        if day.count:
            x["failure_rate_24h"] = day.sum / day.count
            x["jobs_24h_log"] = math.log1p(day.count)
        if "last_failure_ms" in state:
            x["since_failure_log_h"] = math.log1p((event.ts - state["last_failure_ms"]) / HOUR_MS)
        return x

    def label(self, event: Event) -> float | None:
        if event.type != FINISHED:
            return None
        job: JobFinished = event.data
        return 1.0 if job.failed else 0.0

    def update(self, event: Event, state: State) -> dict[str, float]:
        if event.type != FINISHED:
            return {}
        job: JobFinished = event.data
        update = dict(self.failures_24h.add(state, event.ts, 1.0 if job.failed else 0.0))
        if job.failed:
            update["last_failure_ms"] = float(event.ts)
        return update
