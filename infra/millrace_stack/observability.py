"""Prometheus for the local stack: the shipped scrape config, with the local ports as targets."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

#: The scrape config, the Compose targets and the Grafana dashboard shipped with the repository.
SHIPPED = Path(__file__).resolve().parents[1] / "observability"


def write_prometheus_config(folder: Path, ports: dict[str, int], host: str = "127.0.0.1") -> Path:
    """Copy the shipped ``prometheus.yml`` into ``folder`` with ``targets/local.json`` naming
    each service's local port; returns the config's path."""
    (folder / "targets").mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    shutil.copyfile(SHIPPED / "prometheus.yml", config)
    targets = [
        {"targets": [f"{host}:{port}"], "labels": {"service": name}}
        for name, port in sorted(ports.items())
    ]
    (folder / "targets" / "local.json").write_bytes(
        orjson.dumps(targets, option=orjson.OPT_INDENT_2)
    )
    return config
