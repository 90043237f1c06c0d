"""The registry's sampler: every few seconds it reads each service instance's ``/metrics`` (and
a predictor's ``/ready``, which names the versions it refuses), derives the console's points
and records them with each instance's status."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx
from prometheus_client import Counter

from millrace_registry.console.derive import Point, Scrape, combine, derive, parse
from millrace_registry.console.series import SeriesStore, TargetStatus

log = logging.getLogger(__name__)

SCRAPE_FAILURES = Counter(
    "millrace_registry_scrape_failures_total", "Service scrapes that failed", ["role"]
)


class Sampler(threading.Thread):
    def __init__(
        self,
        targets: dict[str, list[str]],
        store: SeriesStore,
        interval_s: float,
        retention_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name="console-sampler", daemon=True)
        self.targets = targets
        self.store = store
        self.interval_s = interval_s
        self.retention_s = retention_s
        self.clock = clock
        # Redirects followed: a service behind a proxy, or an older one, may redirect.
        self._client = httpx.Client(timeout=min(5.0, interval_s), follow_redirects=True)
        self._last: dict[str, tuple[float, Scrape]] = {}
        self._was_up: dict[str, bool] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("console sampling round failed")
            if self._stop_event.wait(self.interval_s):
                break
        self._client.close()

    def stop(self) -> None:
        self._stop_event.set()

    def sample(self) -> None:
        """One round over every target."""
        now = self.clock()
        points: list[Point] = []
        statuses: list[TargetStatus] = []
        for role, urls in self.targets.items():
            instances = []
            for url in urls:
                status, instance = self._scrape(role, url.rstrip("/"), now)
                statuses.append(status)
                if instance is not None:
                    instances.append(instance)
            points.extend(combine(instances))
        self.store.record(now, points, statuses, keep_after=now - self.retention_s)

    def _scrape(self, role: str, url: str, now: float) -> tuple[TargetStatus, list[Point] | None]:
        try:
            response = self._client.get(f"{url}/metrics")
            response.raise_for_status()
            scrape = parse(response.text)
            detail = self._ready(url) if role == "predictor" else None
        except (httpx.HTTPError, ValueError) as exc:
            SCRAPE_FAILURES.labels(role).inc()
            self._note(role, url, up=False, error=str(exc))
            return TargetStatus(role, url, False, now, error=str(exc) or type(exc).__name__), None
        self._note(role, url, up=True)
        earlier = self._last.get(url)
        self._last[url] = (now, scrape)
        before, seconds = (earlier[1], now - earlier[0]) if earlier else (None, 0.0)
        return TargetStatus(role, url, True, now, detail=detail), derive(
            role, scrape, before, seconds
        )

    def _ready(self, url: str) -> dict[str, object] | None:
        response = self._client.get(f"{url}/ready")
        body = response.json() if response.status_code in (200, 503) else None
        return body if isinstance(body, dict) else None

    def _note(self, role: str, url: str, up: bool, error: str = "") -> None:
        """Log a target going down or coming back, once per change."""
        if self._was_up.get(url) != up:
            self._was_up[url] = up
            if up:
                log.info("console target answers", extra={"role": role, "url": url})
            else:
                log.warning(
                    "console target does not answer",
                    extra={"role": role, "url": url, "error": error},
                )
