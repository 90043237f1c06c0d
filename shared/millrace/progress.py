"""Progress for long work: a bar with rate and ETA on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def progress(total: int | None, label: str, every_s: float = 5.0) -> Progress:
    """A callback taking the number of items done so far."""
    if sys.stderr.isatty():
        return _bar(total, label)
    started = time.monotonic()
    last = [0.0]

    def log_line(done: int) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if now - last[0] < every_s and not finished:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        if total:
            eta = (total - done) / rate if rate > 0 else float("inf")
            log.info(f"{label}: {done}/{total} events, {rate:,.0f}/s, eta {eta:,.0f}s")
        else:
            log.info(f"{label}: {done} events, {rate:,.0f}/s")

    return log_line


def _bar(total: int | None, label: str) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "{task.fields[rate]}",
        TimeRemainingColumn(),
    )
    task = bar.add_task(label, total=total, rate="")
    bar.start()

    def update(done: int) -> None:
        speed = bar.tasks[0].speed
        bar.update(task, completed=done, rate=f"{speed:,.0f} events/s" if speed else "")
        if total is not None and done >= total:
            bar.stop()

    return update
