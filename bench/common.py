"""Shared pieces of the benchmarks: infrastructure, the results file, the table."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from millrace.registry_client import RegistryClient
from millrace.settings import CommonSettings
from millrace_stack.brokers import KafkaNode, RedisNode
from millrace_stack.processes import ProcessTable, free_port

# Benchmarks run throwaway local stacks: the public development secrets are fine here (and the
# services they start inherit the setting).
os.environ.setdefault("MILLRACE_DEV_MODE", "1")
# The demo's settings (the flights module and model), wherever a benchmark is started from.
os.environ.setdefault("MILLRACE_CONFIG", str(Path(__file__).resolve().parents[1] / "millrace.toml"))

RESULTS = Path(__file__).resolve().parent / "results.json"


@contextmanager
def infrastructure() -> Iterator[tuple[str, str]]:
    """(kafka bootstrap, redis url): from the environment, or started here for the run."""
    if os.environ.get("KAFKA_BOOTSTRAP") and os.environ.get("REDIS_URL"):
        yield os.environ["KAFKA_BOOTSTRAP"], os.environ["REDIS_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="millrace-bench-") as tmp:
        procs = ProcessTable(Path(tmp))
        kafka = KafkaNode(Path(tmp) / "kafka", free_port(), free_port(), heap="1g")
        redis = RedisNode(Path(tmp) / "redis", free_port())
        kafka.start(procs)
        redis.start(procs)
        try:
            yield kafka.bootstrap, redis.url
        finally:
            kafka.stop(procs)
            procs.stop("redis")


@contextmanager
def registry_process(bootstrap: str) -> Iterator[RegistryClient]:
    """A registry as it is deployed, a process of its own (``python -m millrace_registry``, its
    embedded SQLite store in a fresh folder, no announcements), and a client that signs."""
    with tempfile.TemporaryDirectory(prefix="millrace-bench-registry-") as tmp:
        procs = ProcessTable(Path(tmp) / "procs")
        port = free_port()
        env = {
            **os.environ,
            "MILLRACE_PORT": str(port),
            "MILLRACE_DATA_DIR": str(Path(tmp) / "data"),
            "MILLRACE_ANNOUNCE": "false",
            "MILLRACE_KAFKA_BOOTSTRAP": bootstrap,
            "MILLRACE_METRICS_TARGETS": "{}",
        }
        procs.start("registry", [sys.executable, "-m", "millrace_registry"], env=env)
        client = RegistryClient.from_settings(
            CommonSettings(), signs=True, url=f"http://127.0.0.1:{port}"
        )
        try:
            client.wait_ready(60)
            yield client
        finally:
            client.close()
            procs.stop("registry")


def record(values: dict[str, Any]) -> None:
    """Merge ``values`` into bench/results.json (other benchmarks write their own keys)."""
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current.update(values)
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def print_table(
    title: str,
    rows: list[tuple[str, str, str, str]],
    columns: tuple[str, ...] = ("measure", "value", "limit it is compared with", "ratio (aim)"),
) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
