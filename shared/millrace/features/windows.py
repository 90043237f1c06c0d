"""Event-time windows over one entity's values, kept in the entity's flat state.

Windows are epoch-aligned ``[start, end)`` in integer milliseconds. A window of ``size_ms``
slides by ``step_ms`` (tumbling when ``step_ms`` is 0, i.e. equal to the size): values go into
buckets of ``step_ms``, and the aggregate at time ``t`` covers the ``size_ms // step_ms`` buckets
ending with the one that contains ``t`` — for a tumbling window, exactly the window containing
``t``. Only event time is used, never the wall clock, so every runner computes the same numbers.

State layout: ``<name>.<slot>.start|count|sum`` for each of the window's buckets (a ring).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from millrace.features.api import State


class Aggregate(msgspec.Struct, frozen=True, gc=False):
    count: float
    sum: float

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None


@dataclass(frozen=True)
class Window:
    """A tumbling (``step_ms=0``) or sliding window of ``size_ms``.

    >>> day = 86_400_000
    >>> week = Window("late", size_ms=7 * day, step_ms=day)
    >>> state = {}
    >>> state.update(week.add(state, ts=0, value=1.0))
    >>> state.update(week.add(state, ts=3 * day, value=0.0))
    >>> week.aggregate(state, ts=6 * day).mean
    0.5
    >>> week.aggregate(state, ts=7 * day).count   # the first day left the window
    1.0
    """

    name: str
    size_ms: int
    step_ms: int = 0
    #: The bucket width (the size, for a tumbling window) and the number of buckets.
    step: int = field(init=False, repr=False)
    slots: int = field(init=False, repr=False)
    #: (start, count, sum) field names of each slot, built once: this is the hot path.
    _slot_fields: tuple[tuple[str, str, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        step = self.step_ms or self.size_ms
        if self.size_ms <= 0 or self.step_ms < 0 or self.size_ms % step or "." in self.name:
            raise ValueError(f"window {self.name!r}: size must be a positive multiple of step")
        slots = self.size_ms // step
        names = tuple(
            (f"{self.name}.{slot}.start", f"{self.name}.{slot}.count", f"{self.name}.{slot}.sum")
            for slot in range(slots)
        )
        # A frozen dataclass sets its derived fields once, here.
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "_slot_fields", names)

    def add(self, state: State, ts: int, value: float) -> dict[str, float]:
        """State fields to set after adding ``value`` at event time ``ts``."""
        step = self.step
        bucket = ts // step
        start = bucket * step
        start_field, count_field, sum_field = self._slot_fields[bucket % self.slots]
        stored = state.get(start_field)
        if stored is not None and stored > start:
            return {}  # a newer bucket took this slot: the value's window has closed
        same = stored == start
        return {
            start_field: float(start),
            count_field: (state[count_field] if same else 0.0) + 1.0,
            sum_field: (state[sum_field] if same else 0.0) + value,
        }

    def aggregate(self, state: State, ts: int) -> Aggregate:
        step = self.step
        current = ts // step * step
        earliest = current - self.size_ms + step
        count = total = 0.0
        get = state.get
        for start_field, count_field, sum_field in self._slot_fields:
            start = get(start_field)
            if start is not None and earliest <= start <= current:
                count += state[count_field]
                total += state[sum_field]
        return Aggregate(count, total)
