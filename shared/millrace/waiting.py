"""Waiting for something to become ready: one policy, on tenacity.

>>> calls = iter([None, None, "up"])
>>> wait_until(lambda: next(calls), timeout=5, what="the service", interval=0.01)
'up'
>>> wait_until(lambda: False, timeout=0.05, what="nothing", interval=0.01)
Traceback (most recent call last):
...
TimeoutError: nothing not ready after 0.05 s
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How often a long wait says again that it is still waiting.
ANNOUNCE_EVERY_S = 30.0


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.5,
    errors: tuple[type[BaseException], ...] = (),
    announce: str | None = None,
    fatal: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``probe`` every ``interval`` seconds until it returns something truthy, and return
    that. An exception of a type in ``errors`` counts as "not yet", unless it is also of a type
    in ``fatal`` (a refused password is no reason to wait); any other propagates. After
    ``timeout`` seconds raise :class:`TimeoutError` naming ``what`` and the last such error.
    With ``announce``, a wait that is not over at once logs it, and again every 30 s."""
    last_said = float("-inf")

    def say_still_waiting(_: object) -> None:
        nonlocal last_said
        if announce is not None and time.monotonic() - last_said >= ANNOUNCE_EVERY_S:
            last_said = time.monotonic()
            log.warning(announce)

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_exception(lambda exc: isinstance(exc, errors) and not isinstance(exc, fatal))
        | retry_if_result(lambda value: not value),
        before_sleep=say_still_waiting,
    )
    try:
        return retrying(probe)
    except RetryError as exc:
        last = exc.last_attempt
        cause = last.exception() if last.failed else None
        detail = f": {cause}" if cause is not None else ""
        raise TimeoutError(f"{what} not ready after {timeout:g} s{detail}") from cause
