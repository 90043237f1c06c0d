"""Days as the epoch milliseconds events carry."""

from __future__ import annotations

from datetime import UTC, date, datetime


def day_start_ms(day: date | str) -> int:
    """The first millisecond of ``day`` (UTC), a date or an ISO ``YYYY-MM-DD``.

    >>> day_start_ms("2013-01-02")
    1357084800000
    """
    d = date.fromisoformat(day) if isinstance(day, str) else day
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
