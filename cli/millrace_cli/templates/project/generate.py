"""Synthetic events for the module ``millrace init`` wrote: ``python -m <name>.generate OUT
[--days N]``. Replace them with your own (``millrace produce`` publishes a file of them).

Machines run jobs; a job fails more often when the machine is hot and busy and when the machine
is worn, and halfway through the machines' wear changes (a drift an online model follows).
Deterministic: the same arguments write the same bytes.

>>> events = generate(days=1, machines=2)
>>> sorted({e["type"] for e in events}), events == generate(days=1, machines=2)
(['job.finished', 'job.started'], True)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE_MS = 60_000


def generate(days: int = 14, machines: int = 8, seed: int = 7) -> list[dict[str, Any]]:
    """Every job's two events, in event-time order."""
    rng = np.random.default_rng(seed)
    wear = rng.normal(0.0, 1.0, machines)
    later_wear = rng.normal(0.0, 1.0, machines)
    end_ms = START_MS + days * 24 * 60 * MINUTE_MS
    events: list[tuple[int, int, dict[str, Any]]] = []
    for m in range(machines):
        machine = f"machine-{m:02d}"
        ts, n = START_MS + int(rng.integers(0, 10)) * MINUTE_MS, 0
        while ts < end_ms:
            worn = float(wear[m] if ts < START_MS + (end_ms - START_MS) // 2 else later_wear[m])
            temperature = 70.0 + 8.0 * worn + float(rng.normal(0.0, 6.0))
            load = float(rng.uniform(0.0, 1.0))
            risk = -2.2 + 0.25 * (temperature - 70.0) + 1.5 * load + 0.8 * worn
            failed = bool(rng.uniform() < 1.0 / (1.0 + math.exp(-risk)))
            job_id = f"{machine}-{n:05d}"
            started = {
                "job_id": job_id,
                "temperature_c": round(temperature, 2),
                "load": round(load, 3),
            }
            took = int(rng.integers(5, 30)) * MINUTE_MS
            events.append((ts, len(events), _envelope("job.started", machine, ts, started)))
            finished = {"job_id": job_id, "failed": failed}
            events.append(
                (ts + took, len(events), _envelope("job.finished", machine, ts + took, finished))
            )
            ts += took + int(rng.integers(1, 20)) * MINUTE_MS
            n += 1
    events.sort(key=lambda e: (e[0], e[1]))
    return [e[2] for e in events]


def _envelope(event_type: str, key: str, ts: int, data: dict[str, Any]) -> dict[str, Any]:
    suffix = "started" if event_type == "job.started" else "finished"
    return {
        "schema": "millrace.event/v1",
        "id": f"{data['job_id']}/{suffix}",
        "type": event_type,
        "key": key,
        "ts": ts,
        "data": data,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="a .jsonl file")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--machines", type=int, default=8)
    args = parser.parse_args()
    events = generate(args.days, args.machines)
    args.out.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    print(f"{len(events)} events -> {args.out}")


if __name__ == "__main__":
    main()
