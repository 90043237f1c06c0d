"""Registry benchmark (issues 5 and 26): `python bench/bench_registry.py`.

Median latency of publish, list (a page of 10) and alias move (compare-and-set) through the HTTP
API, with 10 and with 10,000 versions already stored, on the embedded SQLite store and on
PostgreSQL (Debian's server, started here). The aim: nothing slower at 10,000 than 2x at 10.
Then publish throughput on PostgreSQL through one registry process and through two on the same
database (8 publishers over HTTP, three repetitions, min/median/max): the aim is >= 1.3x with
two (2 cores, shared with the database and the load). The peer a team would run instead, the
MLflow registry, is not installed here; the races it has and we avoid are in the README.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from common import print_table, record
from fastapi.testclient import TestClient

from millrace.artifacts import dump_model
from millrace.learners import LogisticRegression
from millrace.signing import SigningKey, generate_keypair
from millrace_registry.app import create_app
from millrace_registry.schema import make_engine, migrate
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import RegistryStore
from millrace_stack.postgres import PostgresServer
from millrace_stack.processes import ProcessTable, free_port

TOKEN = "bench"
PRIVATE, PUBLIC = generate_keypair()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACT = dump_model(LogisticRegression(dim_log2=8))
SIGNATURE = SigningKey.from_text(PRIVATE).sign(ARTIFACT)
PUBLISHES, PUBLISHERS, REPEATS = 400, 8, 3


def median_ms(call: Callable[[int], object], repeat: int) -> float:
    samples = []
    for i in range(repeat):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def fresh_database(server: PostgresServer | None, name: str) -> str | None:
    if server is None:
        return None
    url = server.create_database(name)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


def measure(stored: int, database: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = RegistryStore(Path(tmp), database)
        for i in range(stored):
            store.publish("m", ARTIFACT + str(i).encode(), "0" * 128, {"metrics": {"i": i}})
        store.move_alias("m", "production", 1, None, "bench", "seed")
        store.close()
        # No console sampling: the measured requests are the only work.
        settings = RegistrySettings(
            data_dir=Path(tmp),
            registry_database_url=database,
            registry_token=TOKEN,
            verify_key=PUBLIC,
            announce=False,
            metrics_targets={},
        )
        with TestClient(create_app(settings)) as http:
            current = [1]

            def publish(i: int) -> None:
                response = http.post(
                    "/models/m/versions",
                    files={"artifact": ("a", ARTIFACT)},
                    data={"signature": SIGNATURE, "metadata": "{}"},
                    headers=AUTH,
                )
                assert response.status_code == 201, response.text

            def list_page(i: int) -> None:
                assert http.get("/models/m/versions", params={"limit": 10}).status_code == 200

            def move(i: int) -> None:
                target = 2 if current[0] == 1 else 1
                body = {"version": target, "expected_version": current[0]}
                answer = http.put("/models/m/aliases/production", json=body, headers=AUTH)
                assert answer.status_code == 200, answer.text
                current[0] = target

            return {
                "publish": median_ms(publish, 100),
                "list": median_ms(list_page, 200),
                "alias move": median_ms(move, 200),
            }


@contextmanager
def replicas(count: int, database: str, tmp: Path) -> Iterator[list[str]]:
    procs, urls = ProcessTable(tmp / f"procs-{count}"), []
    try:
        for i in range(count):
            port = free_port()
            env = {
                "MILLRACE_DATA_DIR": str(tmp / f"replica-{i}"),
                "MILLRACE_PORT": str(port),
                "MILLRACE_REGISTRY_DATABASE_URL": database,
                "MILLRACE_REGISTRY_TOKEN": TOKEN,
                "MILLRACE_VERIFY_KEY": PUBLIC,
                "MILLRACE_ANNOUNCE": "false",
                "MILLRACE_METRICS_TARGETS": "{}",
                "MILLRACE_LOG_LEVEL": "WARNING",
            }
            procs.start(f"replica-{i}", [sys.executable, "-m", "millrace_registry"], env)
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/health", timeout=2).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        yield urls
    finally:
        for i in range(count):
            procs.stop(f"replica-{i}")


def publishes_per_s(urls: list[str], model: str) -> tuple[float, bool]:
    """(publishes/s, whether the numbers handed out were 1..N, each once) for PUBLISHES
    publishes by PUBLISHERS threads, spread over the replicas round-robin."""
    signer = SigningKey.from_text(PRIVATE)
    # Distinct bytes, as a trainer's versions are (identical ones would share one artifact row).
    artifacts = [ARTIFACT + f"{model}.{n}".encode() for n in range(PUBLISHES)]
    signed = [(a, signer.sign(a)) for a in artifacts]

    def publisher(worker: int) -> list[int]:
        made = []
        with httpx.Client(base_url=urls[worker % len(urls)], timeout=60) as http:
            for artifact, signature in signed[worker::PUBLISHERS]:
                answer = http.post(
                    f"/models/{model}/versions",
                    files={"artifact": ("a", artifact)},
                    data={"signature": signature, "metadata": "{}"},
                    headers=AUTH,
                )
                assert answer.status_code == 201, answer.text
                made.append(int(answer.json()["version"]))
        return made

    started = time.perf_counter()
    with ThreadPoolExecutor(PUBLISHERS) as pool:
        numbers = sorted(v for made in pool.map(publisher, range(PUBLISHERS)) for v in made)
    rate = PUBLISHES / (time.perf_counter() - started)
    return rate, numbers == list(range(1, PUBLISHES + 1))


def spread(values: list[float]) -> str:
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="millrace-bench-pg-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # the server runs as the postgres user when this is root
        procs = ProcessTable(root / "procs")
        server = PostgresServer(root / "pg", free_port())
        server.start(procs)
        try:
            latency(server)
            throughput(server, root)
        finally:
            procs.stop("postgres")


def latency(server: PostgresServer) -> None:
    rows, worst = [], {}
    for backend, pg in (("SQLite", None), ("PostgreSQL", server)):
        small = measure(10, fresh_database(pg, "latency_10"))
        large = measure(10_000, fresh_database(pg, "latency_10k"))
        ratios = {op: large[op] / small[op] for op in small}
        worst[backend] = max(ratios.values())
        rows += [
            (
                f"{backend}: {op}",
                f"{large[op]:.2f} ms at 10,000 versions",
                f"{small[op]:.2f} ms at 10 versions",
                f"{ratios[op]:.2f}x (aim <= 2x)",
            )
            for op in small
        ]
    record(
        {
            "registry_slowdown_10k_vs_10": round(worst["SQLite"], 2),
            "registry_pg_slowdown_10k_vs_10": round(worst["PostgreSQL"], 2),
        }
    )
    print_table("Registry: median latency through the HTTP API", rows)


def throughput(server: PostgresServer, root: Path) -> None:
    database = fresh_database(server, "throughput")
    assert database is not None
    rates: dict[int, list[float]] = {1: [], 2: []}
    gapless = True
    for repeat in range(REPEATS):
        for count in (1, 2):
            with replicas(count, database, root / f"r{repeat}") as urls:
                rate, numbered_right = publishes_per_s(urls, f"m{repeat}-{count}")
                rates[count].append(rate)
                gapless &= numbered_right
    speedup = statistics.median(rates[2]) / statistics.median(rates[1])
    record(
        {
            "registry_pg_two_replica_publish_speedup": round(speedup, 2),
            # The concurrency test (tests/integration/test_registry_replicas.py) checks more:
            # alias moves too, and a SIGKILL in the middle of a publish.
            "registry_pg_concurrency_gapless": gapless,
        }
    )
    print_table(
        f"Registry on PostgreSQL: {PUBLISHES} publishes by {PUBLISHERS} clients, "
        f"publishes/s (min / median / max of {REPEATS})",
        [
            (
                "two replicas",
                spread(rates[2]),
                f"one replica: {spread(rates[1])}",
                f"{speedup:.2f}x (aim >= 1.3x)",
            ),
            ("versions 1..N, each once, every run", str(gapless), "True", "-"),
        ],
    )


if __name__ == "__main__":
    main()
