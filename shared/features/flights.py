"""The default feature module: will a New York flight leave more than 15 minutes late?

Entity: the aircraft (tail number). Stateless features describe the flight; stateful ones
describe the same aircraft's previous departure, which is known before this flight's prediction
is asked for (see :mod:`millrace.flights` for the event timeline and the cancelled-flight rule).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import ClassVar

from millrace.envelope import Event, InvalidEvent, describe_validation_error
from millrace.features.api import FeatureModule, State
from millrace.flights import DEPARTED, SCHEDULED
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Code = Field(min_length=1, max_length=8)


class ScheduledFlight(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    flight_id: str = Field(min_length=1, max_length=64)
    carrier: str = Code
    flight: int = Field(ge=0, le=100_000)
    tailnum: str | None = Field(default=None, max_length=16)
    origin: str = Code
    dest: str = Code
    distance: float = Field(ge=0, le=20_000)
    month: int = Field(ge=1, le=12)
    hour: int = Field(ge=0, le=23)
    sched_dep_ms: int = Field(ge=0, le=2**53)


class DepartedFlight(ScheduledFlight):
    dep_delay: float = Field(ge=-24 * 60, le=7 * 24 * 60)
    delayed: bool


class FlightsFeatures(FeatureModule):
    name = "flights"
    version = 1
    event_types = frozenset({SCHEDULED, DEPARTED})
    feature_names: ClassVar[tuple[str, ...]] = (
        "carrier=",
        "origin=",
        "dest=",
        "hour=",
        "month=",
        "dow=",
        "distance_k",
        "has_prev",
        "prev_delay_h",
        "prev_late",
        "since_prev_log_h",
    )
    _schemas: ClassVar[dict[str, type[BaseModel]]] = {
        SCHEDULED: ScheduledFlight,
        DEPARTED: DepartedFlight,
    }

    def subject(self, event: Event) -> str:
        return str(event.data.get("flight_id"))

    def validate(self, event: Event) -> None:
        try:
            self._schemas[event.type].model_validate(event.data)
        except ValidationError as exc:
            raise InvalidEvent(f"invalid {event.type}: {describe_validation_error(exc)}") from None

    def features(self, event: Event, state: State) -> dict[str, float] | None:
        if event.type != SCHEDULED:
            return None
        d = event.data
        sched = datetime.fromtimestamp(d["sched_dep_ms"] / 1000, tz=UTC)
        x = {
            f"carrier={d['carrier']}": 1.0,
            f"origin={d['origin']}": 1.0,
            f"dest={d['dest']}": 1.0,
            f"hour={d['hour']}": 1.0,
            f"month={d['month']}": 1.0,
            f"dow={sched.weekday()}": 1.0,
            "distance_k": float(d["distance"]) / 1000.0,
        }
        if "last_dep_ms" in state:
            prev = state["prev_dep_delay"]
            hours_since = max(event.ts - state["last_dep_ms"], 0) / 3_600_000
            x["has_prev"] = 1.0
            x["prev_delay_h"] = min(max(prev, -60.0), 300.0) / 60.0
            x["prev_late"] = 1.0 if prev > 15.0 else 0.0
            x["since_prev_log_h"] = math.log1p(hours_since)
        return x

    def label(self, event: Event) -> float | None:
        if event.type != DEPARTED:
            return None
        return 1.0 if event.data["delayed"] else 0.0

    def update(self, event: Event, state: State) -> dict[str, float]:
        if event.type != DEPARTED:
            return {}
        return {"prev_dep_delay": float(event.data["dep_delay"]), "last_dep_ms": float(event.ts)}
