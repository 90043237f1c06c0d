"""Predictor benchmark (issue 6): `python bench/bench_predictor.py`.

The predictor (real registry, Redis, Kafka; predictions logged) and a bare FastAPI endpoint
returning a constant run as separate uvicorn processes with the same settings; the same
asyncio load generator (concurrency 16) drives each for the same time. Reported: throughput
and p50/p99 latency of single calls as ratios of the bare endpoint's, and rows per second of
batches of 100 vs single calls.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from common import infrastructure, print_table, record

from millrace.artifacts import dump_model
from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.join import join_all
from millrace.kafka import ensure_topics, pipeline_topics
from millrace.learners import LogisticRegression
from millrace.registry_client import RegistryClient
from millrace.settings import CommonSettings
from millrace.state import RedisState
from millrace_flights.events import SCHEDULED, flight_events, load_flights
from millrace_stack.processes import ProcessTable, free_port
from millrace_stack.stack import wait_http

CONCURRENCY = 16
DURATION_S = 8.0
MODEL = "flights-delay"


async def drive(url: str, bodies: list[bytes], duration: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.post(url, content=bodies[i % len(bodies)])
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
                i += CONCURRENCY

        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
    return len(latencies), latencies


def measure(url: str, bodies: list[bytes]) -> dict[str, float]:
    asyncio.run(drive(url, bodies, 1.0))  # warm up
    count, latencies = asyncio.run(drive(url, bodies, DURATION_S))
    latencies.sort()
    return {
        "rps": count / DURATION_S,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def main() -> None:
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), day_start_ms("2013-01-04"))
    result = backfill(
        Featurizer(load_feature_module("millrace_flights.features:FlightsFeatures")),
        from_envelopes(events),
    )
    samples = join_all(result.features, result.labels)
    model = LogisticRegression()
    model.learn_many([s.features for s in samples], [s.label for s in samples])
    scheduled = [e for e in events if e["type"] == SCHEDULED]
    singles = [orjson.dumps(e) for e in scheduled]
    batches = [orjson.dumps({"events": scheduled[i : i + 100]}) for i in range(0, 1000, 100)]

    with infrastructure() as (bootstrap, redis_url), tempfile.TemporaryDirectory() as tmp:
        settings = CommonSettings(
            kafka_bootstrap=bootstrap, redis_url=redis_url, topic_prefix="bench."
        )
        ensure_topics(bootstrap, pipeline_topics(settings))
        # As a featurizer does once it has checked its partitions' state (none runs here).
        RedisState.from_url(redis_url, "bench.").declare_ready(range(3), total=3)
        procs = ProcessTable(Path(tmp))
        ports = {name: free_port() for name in ("registry", "predictor", "bare")}
        env = {
            "MILLRACE_KAFKA_BOOTSTRAP": bootstrap,
            "MILLRACE_REDIS_URL": redis_url,
            "MILLRACE_TOPIC_PREFIX": "bench.",
            "MILLRACE_REGISTRY_URL": f"http://127.0.0.1:{ports['registry']}",
            "MILLRACE_LOG_LEVEL": "WARNING",
        }
        here = Path(__file__).resolve().parent
        try:
            procs.start(
                "registry",
                [sys.executable, "-m", "millrace_registry"],
                {
                    **env,
                    "MILLRACE_PORT": str(ports["registry"]),
                    "MILLRACE_DATA_DIR": f"{tmp}/registry",
                    # As deployed: the console samples the predictor while it is measured.
                    "MILLRACE_METRICS_TARGETS": orjson.dumps(
                        {"predictor": [f"http://127.0.0.1:{ports['predictor']}"]}
                    ).decode(),
                },
            )
            wait_http(f"http://127.0.0.1:{ports['registry']}/health")
            client = RegistryClient.from_settings(
                settings, signs=True, url=env["MILLRACE_REGISTRY_URL"]
            )
            client.publish(MODEL, dump_model(model), {})
            client.move_alias(MODEL, "production", 1, None, "bench")
            procs.start(
                "predictor",
                [sys.executable, "-m", "millrace_predictor"],
                {**env, "MILLRACE_PORT": str(ports["predictor"])},
            )
            procs.start(
                "bare",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bare_app:app",
                    "--port",
                    str(ports["bare"]),
                    "--log-level",
                    "warning",
                ],
                {**env, "PYTHONPATH": f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
                cwd=here,
            )
            wait_http(f"http://127.0.0.1:{ports['predictor']}/ready")
            wait_http(f"http://127.0.0.1:{ports['bare']}/docs")
            bare = measure(f"http://127.0.0.1:{ports['bare']}/predict", singles)
            single = measure(f"http://127.0.0.1:{ports['predictor']}/predict", singles)
            batch = measure(f"http://127.0.0.1:{ports['predictor']}/predict/batch", batches)
        finally:
            for name in ("bare", "predictor", "registry"):
                procs.stop(name)

    throughput = single["rps"] / bare["rps"]
    p99 = single["p99"] / bare["p99"]
    batch_speedup = batch["rps"] * 100 / single["rps"]
    record(
        {
            "predictor_throughput_vs_bare": round(throughput, 3),
            "predictor_p99_vs_bare": round(p99, 2),
            "predictor_batch100_row_speedup": round(batch_speedup, 1),
        }
    )
    print_table(
        f"Predictor vs a bare FastAPI constant endpoint "
        f"(uvicorn, 1 worker, {CONCURRENCY} concurrent, {DURATION_S:g} s)",
        [
            (
                "single-call throughput",
                f"{single['rps']:,.0f} req/s",
                f"bare {bare['rps']:,.0f} req/s",
                f"{throughput:.2f} (aim >= 0.5)",
            ),
            (
                "p50 latency",
                f"{single['p50']:.1f} ms",
                f"bare {bare['p50']:.1f} ms",
                f"{single['p50'] / bare['p50']:.2f}x",
            ),
            (
                "p99 latency",
                f"{single['p99']:.1f} ms",
                f"bare {bare['p99']:.1f} ms",
                f"{p99:.2f}x (aim <= 2x)",
            ),
            (
                "batch of 100, rows/s",
                f"{batch['rps'] * 100:,.0f} rows/s",
                f"single calls {single['rps']:,.0f} rows/s",
                f"{batch_speedup:.1f}x (aim >= 10x)",
            ),
        ],
    )


if __name__ == "__main__":
    main()
