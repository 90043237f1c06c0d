"""The console's time series: derived from Prometheus text, kept across a registry restart."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from millrace_registry.console.derive import Point, combine, derive, parse, quantile
from millrace_registry.console.sampler import Sampler
from millrace_registry.console.series import SeriesStore, TargetStatus
from millrace_stack.processes import free_port
from tests.helpers import serve

PREDICTOR_BEFORE = """
millrace_predictor_requests_total{version="3",status="200"} 100
millrace_predictor_requests_total{version="3",status="422"} 10
millrace_predictor_latency_seconds_bucket{version="3",le="0.005"} 50
millrace_predictor_latency_seconds_bucket{version="3",le="0.01"} 100
millrace_predictor_latency_seconds_bucket{version="3",le="+Inf"} 110
millrace_predictor_live_log_loss{version="3"} 0.5
millrace_predictor_live_log_loss{version="2"} 0.6
millrace_predictor_live_labels{version="3"} 100
millrace_predictor_live_labels{version="2"} 300
"""
PREDICTOR_AFTER = """
millrace_predictor_requests_total{version="3",status="200"} 290
millrace_predictor_requests_total{version="3",status="422"} 20
millrace_predictor_latency_seconds_bucket{version="3",le="0.005"} 50
millrace_predictor_latency_seconds_bucket{version="3",le="0.01"} 300
millrace_predictor_latency_seconds_bucket{version="3",le="+Inf"} 310
millrace_predictor_live_log_loss{version="3"} 0.4
millrace_predictor_live_log_loss{version="2"} 0.6
millrace_predictor_live_labels{version="3"} 150
millrace_predictor_live_labels{version="2"} 300
"""


def values(points: list[Point]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(p.series, p.labels): p.value for p in points}


def test_predictor_rates_quantiles_and_quality_per_version():
    got = values(derive("predictor", parse(PREDICTOR_AFTER), parse(PREDICTOR_BEFORE), 10.0))
    v3 = (("version", "3"),)
    assert got[("predictor.requests_per_s", v3)] == pytest.approx(20.0)  # (190 + 10) / 10 s
    # 200 new requests: 0 under 5 ms, 200 under 10 ms; the 99th percentile is in (5, 10] ms.
    assert 5.0 < got[("predictor.p99_ms", v3)] <= 10.0
    assert got[("predictor.live_log_loss", v3)] == 0.4
    # Version 2 met no new label: its unchanged score is not a new point.
    assert ("predictor.live_log_loss", (("version", "2"),)) not in got
    first = values(derive("predictor", parse(PREDICTOR_BEFORE), None, 0.0))
    assert first[("predictor.live_log_loss", (("version", "2"),))] == 0.6


def test_no_rates_without_an_earlier_scrape_and_a_restarted_counter_counts_from_zero():
    first = derive("featurizer", parse("millrace_featurizer_events_total 500\n"), None, 0.0)
    assert first == []
    restarted = derive(
        "featurizer",
        parse("millrace_featurizer_events_total 40\n"),
        parse("millrace_featurizer_events_total 500\n"),
        2.0,
    )
    assert values(restarted) == {("featurizer.events_per_s", ()): 20.0}


def test_trainer_rolling_scores_and_dead_letters_by_reason():
    trainer = derive(
        "trainer",
        parse(
            'millrace_trainer_rolling_score{metric="log_loss"} 0.45\n'
            'millrace_trainer_rolling_score{metric="auc"} 0.71\n'
            "millrace_trainer_watermark_ms 1.7e12\n"
        ),
        None,
        0.0,
    )
    assert values(trainer) == {
        ("trainer.rolling_log_loss", ()): 0.45,
        ("trainer.rolling_auc", ()): 0.71,
        ("trainer.watermark_ms", ()): 1.7e12,
    }
    featurizer = derive(
        "featurizer",
        parse(
            'millrace_featurizer_dead_letters_total{kind="invalid"} 3\n'
            'millrace_featurizer_dead_letters_total{kind="undecodable"} 2\n'
        ),
        None,
        0.0,
    )
    assert values(featurizer) == {
        ("featurizer.dead_letters", (("kind", "invalid"),)): 3.0,
        ("featurizer.dead_letters", (("kind", "undecodable"),)): 2.0,
    }


def test_instances_of_a_role_combine():
    one = [Point("featurizer.events_per_s", (), 10.0), Point("featurizer.lag_s", (), 1.0)]
    two = [Point("featurizer.events_per_s", (), 5.0), Point("featurizer.lag_s", (), 3.0)]
    loss = [Point("predictor.live_log_loss", (), 0.2), Point("predictor.live_log_loss", (), 0.4)]
    got = values(combine([one, two]) + combine([[loss[0]], [loss[1]]]))
    assert got == {
        ("featurizer.events_per_s", ()): 15.0,
        ("featurizer.lag_s", ()): 3.0,
        ("predictor.live_log_loss", ()): pytest.approx(0.3),
    }


def test_quantile_edges():
    assert quantile(0.99, {}) is None
    assert quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None
    # Everything above the last finite bound: the bound is the answer, as in Prometheus.
    assert quantile(0.99, {0.1: 0.0, math.inf: 5.0}) == 0.1


def test_points_survive_a_reopen_and_expire_after_the_retention(tmp_path: Path):
    store = SeriesStore(tmp_path / "console.db")
    status = TargetStatus("predictor", "http://p:1", True, 100.0, detail={"refused": {"4": "x"}})
    store.record(100.0, [Point("trainer.rolling_auc", (), 0.6)], [status], keep_after=0)
    store.record(105.0, [Point("trainer.rolling_auc", (), 0.8)], [], keep_after=0)
    store.close()

    reopened = SeriesStore(tmp_path / "console.db")
    (series,) = reopened.series(since=0, step=10)
    assert series["name"] == "trainer.rolling_auc" and series["labels"] == {}
    assert series["points"] == [[102.5, pytest.approx(0.7)]], "two points in one 10 s bucket"
    assert reopened.targets()[0]["detail"] == {"refused": {"4": "x"}}

    reopened.record(200.0, [Point("trainer.rolling_auc", (), 0.9)], [], keep_after=150.0)
    assert reopened.series(since=0, step=1)[0]["points"] == [[200.0, 0.9]]


def test_sampler_scrapes_real_endpoints_and_marks_a_silent_one_down(tmp_path: Path):
    counter = {"events": 1000.0}

    def metrics(_request: Request) -> PlainTextResponse:
        counter["events"] += 300.0
        return PlainTextResponse(f"millrace_featurizer_events_total {counter['events']}\n")

    def ready(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready", "version": 2, "refused": {}})

    app = Starlette(routes=[Route("/metrics", metrics), Route("/ready", ready)])
    store = SeriesStore(tmp_path / "console.db")
    clock = iter([1000.0, 1010.0]).__next__
    silent = f"http://127.0.0.1:{free_port()}"
    with serve(app, free_port()) as url:
        sampler = Sampler(
            {"featurizer": [url], "predictor": [silent]}, store, 1.0, 3600.0, clock=clock
        )
        sampler.sample()
        sampler.sample()
    (rate,) = store.series(since=0, step=1)
    assert rate["name"] == "featurizer.events_per_s" and rate["points"] == [[1010.0, 30.0]]
    targets = {t["role"]: t for t in store.targets()}
    assert targets["featurizer"]["up"] and not targets["predictor"]["up"]
    assert targets["predictor"]["error"]
