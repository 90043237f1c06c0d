"""The four services as processes against a real broker and Redis, for the end-to-end tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

from millrace.settings import CommonSettings
from millrace_stack.processes import ProcessTable, free_port
from millrace_stack.stack import MODULES
from tests.helpers import wait_until


class Stack:
    def __init__(
        self, procs: ProcessTable, settings: CommonSettings, ports: dict[str, int], model: str
    ) -> None:
        self.procs = procs
        self.settings = settings
        self.ports = ports
        self.model = model
        self.registry = httpx.Client(
            base_url=f"http://127.0.0.1:{ports['model-registry']}", timeout=10
        )
        self.predictor = httpx.Client(base_url=f"http://127.0.0.1:{ports['predictor']}", timeout=10)
        #: Each service's environment, to restart it as it was.
        self.envs: dict[str, dict[str, str]] = {}

    def start(self, name: str) -> None:
        self.procs.start(name, [sys.executable, "-m", MODULES[name]], self.envs[name])

    def restart_registry(self) -> None:
        self.procs.stop("model-registry")
        self.start("model-registry")
        wait_until(lambda: _answers(self.registry, "/health"), 60, "the registry to restart")

    def alias(self) -> int | None:
        response = self.registry.get(f"/models/{self.model}/aliases/production")
        return response.json()["version"] if response.status_code == 200 else None

    def versions(self) -> int:
        return int(self.registry.get(f"/models/{self.model}/versions").json()["total"])


@contextmanager
def running_stack(
    tmp_path: Path,
    kafka_bootstrap: str,
    redis_url: str,
    prefix: str,
    model: str,
    extra: dict[str, dict[str, str]],
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """The registry, featurizer, trainer and predictor, each its own process; ``extra`` adds
    environment variables per service, ``env`` to all."""
    procs = ProcessTable(tmp_path)
    ports = {name: free_port() for name in MODULES}
    common = {
        **(env or {}),
        "MILLRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MILLRACE_REDIS_URL": redis_url,
        "MILLRACE_TOPIC_PREFIX": prefix,
        "MILLRACE_REGISTRY_URL": f"http://127.0.0.1:{ports['model-registry']}",
    }
    extra = {
        **extra,
        "model-registry": {
            "MILLRACE_DATA_DIR": str(tmp_path / "registry"),
            "MILLRACE_METRICS_TARGETS": orjson.dumps(
                {
                    role: [f"http://127.0.0.1:{ports[role]}"]
                    for role in ("featurizer", "trainer", "predictor")
                }
            ).decode(),
            **extra.get("model-registry", {}),
        },
        "predictor": {"MILLRACE_POLL_INTERVAL_S": "30", **extra.get("predictor", {})},
    }
    s = Stack(
        procs,
        CommonSettings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=prefix),
        ports,
        model,
    )
    try:
        for name in MODULES:
            s.envs[name] = {**common, **extra.get(name, {}), "MILLRACE_PORT": str(ports[name])}
            s.start(name)
            if name == "model-registry":
                wait_until(lambda: _answers(s.registry, "/health"), 60, "the registry")
        for name in ("featurizer", "trainer"):
            wait_until(
                lambda n=name: _answers(
                    httpx.Client(base_url=f"http://127.0.0.1:{ports[n]}"), "/health"
                ),
                180,
                name,
            )
        wait_until(
            lambda: _answers(s.predictor, "/ready"), 120, "the predictor to load the baseline"
        )
        yield s
    finally:
        for name in reversed(MODULES):
            procs.stop(name)
        for name in MODULES:
            sys.stderr.write(
                f"--- {name} log (tail) ---\n{procs.log_path(name).read_text()[-3000:]}\n"
            )


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False
