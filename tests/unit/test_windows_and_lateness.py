import orjson
import pytest

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.features.windows import Window
from millrace.featurize import MAX_TS, Featurizer, SourceEvent
from millrace_flights.events import DEPARTED, flight_events, load_flights

HOUR = 3_600_000


def _fill(window: Window, points: list[tuple[int, float]]) -> dict[str, float]:
    state: dict[str, float] = {}
    for ts, value in points:
        state.update(window.add(state, ts, value))
    return state


def test_tumbling_windows_are_epoch_aligned_half_open():
    window = Window("w", size_ms=HOUR)
    state = _fill(window, [(0, 1.0), (HOUR - 1, 2.0), (HOUR, 10.0)])
    assert window.aggregate(state, HOUR - 1).count == 0  # slot 0 now holds [HOUR, 2 HOUR)
    assert window.aggregate(state, HOUR).sum == 10.0
    state = _fill(window, [(0, 1.0), (HOUR - 1, 2.0)])
    agg = window.aggregate(state, HOUR // 2)
    assert (agg.count, agg.sum, agg.mean) == (2.0, 3.0, 1.5)
    assert window.aggregate(state, HOUR).count == 0  # [0, HOUR) excludes HOUR


def test_sliding_windows_drop_buckets_that_leave_and_ignore_closed_ones():
    window = Window("w", size_ms=3 * HOUR, step_ms=HOUR)
    state = _fill(window, [(0, 1.0), (HOUR, 1.0), (2 * HOUR, 1.0)])
    assert window.aggregate(state, 2 * HOUR).count == 3
    assert window.aggregate(state, 3 * HOUR).count == 2
    state.update(window.add(state, 3 * HOUR, 5.0))  # evicts bucket 0
    assert window.add(state, 10, 7.0) == {}  # its window closed: nothing changes
    assert window.aggregate(state, 3 * HOUR).sum == 7.0


@pytest.mark.parametrize(("size", "step"), [(0, 0), (10, 3), (-5, 0)])
def test_window_sizes_must_be_multiples_of_the_step(size, step):
    with pytest.raises(ValueError):
        Window("w", size_ms=size, step_ms=step)


def test_late_events_are_dead_lettered_and_change_nothing():
    featurizer = Featurizer(load_feature_module("millrace_flights.features:FlightsFeatures"))
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), day_start_ms("2013-01-04"))
    key = next(e["key"] for e in events if e["type"] == DEPARTED)
    own = [e for e in events if e["key"] == key]
    last = own[-1]
    late = {**own[0], "id": "late-copy", "ts": last["ts"] - 2 * 24 * HOUR}
    sources = [SourceEvent(orjson.dumps(e), key.encode(), 0, i) for i, e in enumerate([*own, late])]
    state: dict[str, dict[str, float]] = {}
    result = featurizer.run_batch(sources, lambda ks: {k: state.setdefault(k, {}) for k in ks})
    assert [d.kind for d in result.dead] == ["late"]
    assert state[key][MAX_TS] == float(last["ts"])
