import math

import orjson
import pytest

from millrace.days import day_start_ms
from millrace.envelope import InvalidEvent, parse_event
from millrace.features import event_decoder, load_feature_module, process_event
from millrace.featurize import Featurizer, SourceEvent
from millrace_flights.events import (
    DEPARTED,
    PREDICTION_LEAD_MS,
    SCHEDULED,
    flight_events,
    load_flights,
)

MODULE = "millrace_flights.features:FlightsFeatures"


@pytest.fixture(scope="module")
def january_week() -> list[dict]:
    return flight_events(load_flights(), day_start_ms("2013-01-01"), day_start_ms("2013-01-08"))


def test_events_are_in_event_time_order_and_carry_labels(january_week):
    ts = [e["ts"] for e in january_week]
    assert ts == sorted(ts)
    departed = [e for e in january_week if e["type"] == DEPARTED]
    assert departed and all(e["data"]["delayed"] == (e["data"]["dep_delay"] > 15) for e in departed)
    assert len({e["id"] for e in january_week}) == len(january_week)


def test_a_flights_own_departure_comes_after_its_prediction(january_week):
    scheduled_at = {e["data"]["flight_id"]: e["ts"] for e in january_week if e["type"] == SCHEDULED}
    for e in january_week:
        if e["type"] == DEPARTED and e["data"]["flight_id"] in scheduled_at:
            assert e["ts"] > scheduled_at[e["data"]["flight_id"]]
            assert (
                e["data"]["sched_dep_ms"] - PREDICTION_LEAD_MS
                == scheduled_at[e["data"]["flight_id"]]
            )


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "invalid_envelope"),
        (b'{"id": "a", "type": "t", "key": "k", "ts": "soon", "data": {}}', "invalid_envelope"),
        (
            b'{"id": "a", "type": "t", "key": "k", "ts": 1, "data": {}, "extra": 1}',
            "invalid_envelope",
        ),
        (b'{"id": "a", "type": "t", "key": "k", "ts": NaN, "data": {}}', "malformed_json"),
        (b"x" * 70_000, "too_large"),
    ],
)
def test_bad_envelopes_are_rejected_with_a_reason(raw, kind):
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    assert info.value.kind == kind
    assert info.value.reason


def test_feature_module_rejects_bad_payloads(january_week):
    module = load_feature_module(MODULE)
    event = next(e for e in january_week if e["type"] == SCHEDULED)
    for bad in (
        {"distance": "far"},
        {"distance": "HUGE"},
        {"hour": 99},
        {"carrier": ""},
        {"month": None},
    ):
        raw = orjson.dumps({**event, "data": {**event["data"], **bad}})
        # JSON has no infinity; a number too large for a double decodes as one.
        raw = raw.replace(b'"HUGE"', b"1e999")
        with pytest.raises(InvalidEvent) as info:
            event_decoder(module).decode(raw)
        assert info.value.kind in ("invalid_data", "malformed_json")
        assert next(iter(bad)) in info.value.reason or info.value.kind == "malformed_json"
    with pytest.raises(InvalidEvent) as info:
        event_decoder(module).decode(orjson.dumps({**event, "type": "flight.boarded"}))
    assert info.value.kind == "unknown_type"
    assert info.value.reason == "unknown event type 'flight.boarded'"


def test_numbers_are_read_as_json_schema_defines_them(january_week):
    """12.0 is an integer (the published schema says ``integer``); true and "12" are not."""
    decoder = event_decoder(load_feature_module(MODULE))
    event = next(e for e in january_week if e["type"] == SCHEDULED)
    as_float = {**event, "ts": float(event["ts"]), "data": {**event["data"], "hour": 12.0}}
    decoded = decoder.decode(orjson.dumps(as_float))
    assert decoded.ts == event["ts"] and decoded.data.hour == 12
    assert type(decoded.data.hour) is int
    for bad in ({"hour": 12.5}, {"hour": "12"}, {"hour": True}, {"distance": "1"}):
        with pytest.raises(InvalidEvent) as info:
            decoder.decode(orjson.dumps({**event, "data": {**event["data"], **bad}}))
        assert info.value.kind == "invalid_data"
        assert info.value.reason.startswith(f"invalid {SCHEDULED}: data.{next(iter(bad))}: ")


def test_stateful_features_use_the_aircrafts_previous_departure(january_week):
    module = load_feature_module(MODULE)
    event = event_decoder(module).decode(
        orjson.dumps(next(e for e in january_week if e["type"] == SCHEDULED))
    )
    fresh = process_event(module, event, {}).features
    assert fresh is not None and "has_prev" not in fresh
    state = {"prev_dep_delay": 45.0, "last_dep_ms": float(event.ts - 2 * 3_600_000)}
    seen = process_event(module, event, state).features
    assert seen is not None
    assert seen["prev_late"] == 1.0 and seen["prev_delay_h"] == 0.75
    assert seen["since_prev_log_h"] == pytest.approx(math.log1p(2.0))


def test_batches_equal_one_event_at_a_time(january_week):
    """Carrying state inside a batch gives what sequential processing gives."""
    featurizer = Featurizer(load_feature_module(MODULE))
    sources = [
        SourceEvent(orjson.dumps(e), e["key"].encode(), 0, i)
        for i, e in enumerate(january_week[:3000])
    ]

    def run(batch_size: int) -> list[bytes]:
        state: dict[str, dict[str, float]] = {}
        out: list[bytes] = []
        for start in range(0, len(sources), batch_size):
            result = featurizer.run_batch(
                sources[start : start + batch_size],
                lambda ks: {k: state.setdefault(k, {}) for k in ks},
            )
            out += [v for _, v in result.features] + [v for _, v in result.labels]
        return sorted(out)

    assert run(1) == run(1000)


def test_message_key_must_match_the_envelope(january_week):
    featurizer = Featurizer(load_feature_module(MODULE))
    event = january_week[0]
    result = featurizer.run_batch(
        [SourceEvent(orjson.dumps(event), b"someone-else", 0, 0)], lambda ks: {}
    )
    assert [d.kind for d in result.dead] == ["key_mismatch"]
