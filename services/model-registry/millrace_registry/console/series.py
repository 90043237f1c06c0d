"""The console's time series, kept in the registry's data folder (SQLite, its own file).

Why here: the registry is the process the console is served from and already keeps its state
on disk, so the curves survive its restart with no extra process, topic or database; the
services keep only their live counters, which the sampler turns into points every few seconds.
Points older than the retention are deleted as new ones arrive.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from millrace_registry.console.derive import Point

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    at REAL NOT NULL, series TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS points_by_time ON points (at);
CREATE TABLE IF NOT EXISTS targets (
    url TEXT PRIMARY KEY, role TEXT NOT NULL, up INTEGER NOT NULL, at REAL NOT NULL,
    error TEXT NOT NULL, detail TEXT NOT NULL);
"""


@dataclass(frozen=True)
class TargetStatus:
    """The last scrape of one service instance."""

    role: str
    url: str
    up: bool
    at: float
    error: str = ""
    #: What the instance says of itself besides its metrics (a predictor's /ready).
    detail: dict[str, Any] | None = None


class SeriesStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(
        self, at: float, points: list[Point], statuses: list[TargetStatus], keep_after: float
    ) -> None:
        """One sampling round: its points, each target's status, and the expiry of old points."""
        rows = [(at, p.series, _labels_text(p.labels), p.value) for p in points]
        targets = [
            (s.url, s.role, int(s.up), s.at, s.error, orjson.dumps(s.detail).decode())
            for s in statuses
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO points VALUES (?, ?, ?, ?)", rows)
                self._db.executemany("INSERT OR REPLACE INTO targets VALUES (?,?,?,?,?,?)", targets)
                self._db.execute("DELETE FROM points WHERE at < ?", (keep_after,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def first_at(self, since: float) -> float | None:
        """When the oldest point since ``since`` was taken (None without one)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(at) FROM points WHERE at >= ?", (since,)).fetchone()
        return None if row[0] is None else float(row[0])

    def series(self, since: float, step: float) -> list[dict[str, Any]]:
        """Every series since ``since``, averaged over buckets of ``step`` seconds."""
        with self._lock:
            rows = self._db.execute(
                "SELECT series, labels, AVG(at), AVG(value) FROM points WHERE at >= ? "
                "GROUP BY series, labels, CAST(at / ? AS INTEGER) ORDER BY series, labels, 3",
                (since, step),
            ).fetchall()
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for series, labels, at, value in rows:
            entry = out.setdefault(
                (series, labels), {"name": series, "labels": orjson.loads(labels), "points": []}
            )
            entry["points"].append([round(at, 3), value])
        return list(out.values())

    def targets(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT url, role, up, at, error, detail FROM targets ORDER BY role, url"
            ).fetchall()
        return [
            {
                "role": role,
                "url": url,
                "up": bool(up),
                "at": at,
                "error": error,
                "detail": orjson.loads(detail),
            }
            for url, role, up, at, error, detail in rows
        ]


def _labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    return orjson.dumps(dict(labels), option=orjson.OPT_SORT_KEYS).decode()
