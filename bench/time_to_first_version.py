"""Seconds from `make up` until `/predict` answers with a version >= 2 equal to `production`.

Run from the repository root on a stopped stack: `python bench/time_to_first_version.py`.
It runs `make clean`, `make up`, polls once a second, and `make down` at the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from millrace.days import day_start_ms
from millrace_flights.events import SCHEDULED, flight_events, load_flights

PREDICT = "http://127.0.0.1:8701/predict"
ALIAS = "http://127.0.0.1:8700/models/flights-delay/aliases/production"


def version(method: str, url: str, **kwargs: object) -> int:
    try:
        response = httpx.request(method, url, timeout=5, **kwargs)  # type: ignore[arg-type]
        return int(response.json().get("version", 0)) if response.status_code == 200 else 0
    except httpx.HTTPError:
        return 0


def main(limit_s: float = 300.0) -> None:
    root = Path(__file__).resolve().parents[1]
    event = next(
        e
        for e in flight_events(
            load_flights(), day_start_ms("2013-06-01"), day_start_ms("2013-06-02")
        )
        if e["type"] == SCHEDULED
    )
    subprocess.run(["make", "clean"], cwd=root, capture_output=True)
    started = time.monotonic()
    try:
        subprocess.run(["make", "up"], cwd=root, check=True, capture_output=True)
        returned = time.monotonic() - started
        while time.monotonic() - started < limit_s:
            served = version("POST", PREDICT, content=orjson.dumps(event))
            if served >= 2 and served == version("GET", ALIAS):
                print(f"make up returned after {returned:.0f}s")
                print(
                    f"/predict served version {served} == production after "
                    f"{time.monotonic() - started:.0f}s"
                )
                return
            time.sleep(1)
        sys.exit(f"no version >= 2 served within {limit_s:.0f}s")
    finally:
        subprocess.run(["make", "down"], cwd=root, capture_output=True)


if __name__ == "__main__":
    main()
