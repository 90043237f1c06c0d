"""Registry benchmark (issue 5): `python bench/bench_registry.py`.

Median latency of publish, list (a page of 10, the same size on both sides) and alias move
(compare-and-set) through the HTTP API, with 10 and with 10,000 versions already stored.
The aim: nothing slower at 10,000 than 2x at 10.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import print_table, record
from fastapi.testclient import TestClient

from millrace.artifacts import dump_model
from millrace.learners import LogisticRegression
from millrace.signing import SigningKey, generate_keypair
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import RegistryStore

TOKEN = "bench"
PRIVATE, PUBLIC = generate_keypair()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def median_ms(call: Callable[[int], object], repeat: int) -> float:
    samples = []
    for i in range(repeat):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(stored: int) -> dict[str, float]:
    artifact = dump_model(LogisticRegression(dim_log2=8))
    signature = SigningKey.from_text(PRIVATE).sign(artifact)
    with tempfile.TemporaryDirectory() as tmp:
        store = RegistryStore(Path(tmp))
        for i in range(stored):
            store.publish("m", artifact + str(i).encode(), "0" * 128, {"metrics": {"i": i}})
        store.move_alias("m", "production", 1, None, "bench", "seed")
        store.close()
        # No console sampling: the measured requests are the only work.
        settings = RegistrySettings(
            data_dir=Path(tmp),
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
                    files={"artifact": ("a", artifact)},
                    data={"signature": signature, "metadata": "{}"},
                    headers=AUTH,
                )
                assert response.status_code == 201

            def list_page(i: int) -> None:
                assert http.get("/models/m/versions", params={"limit": 10}).status_code == 200

            def move(i: int) -> None:
                target = 2 if current[0] == 1 else 1
                body = {"version": target, "expected_version": current[0]}
                assert (
                    http.put("/models/m/aliases/production", json=body, headers=AUTH).status_code
                    == 200
                )
                current[0] = target

            return {
                "publish": median_ms(publish, 100),
                "list": median_ms(list_page, 200),
                "alias move": median_ms(move, 200),
            }


def main() -> None:
    small, large = measure(10), measure(10_000)
    ratios = {op: large[op] / small[op] for op in small}
    worst = max(ratios.values())
    record({"registry_slowdown_10k_vs_10": round(worst, 2)})
    print_table(
        "Registry: median latency through the HTTP API",
        [
            (
                op,
                f"{large[op]:.2f} ms at 10,000 versions",
                f"{small[op]:.2f} ms at 10 versions",
                f"{ratios[op]:.2f}x (aim <= 2x)",
            )
            for op in small
        ],
    )


if __name__ == "__main__":
    main()
