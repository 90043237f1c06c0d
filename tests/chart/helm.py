"""Helm and the schemas the chart's tests validate rendered manifests with, without a cluster.

The tools are Helm and helm-unittest built by ``deploy/helm/tools.sh`` (``make chart-tools``,
which ``make test`` runs); the Kubernetes schemas are those ``kubernetes-validate`` ships, in
strict mode (an unknown field is an error); custom resources (KEDA, Strimzi, the Prometheus
Operator) are checked against the schemas in ``crd-schemas/``, the fields of their CRDs the
chart renders, strict as well.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "millrace"
TOOLS = ROOT / ".cache" / "tools" / "bin"
FIGURES = Path(os.environ.get("MILLRACE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "helm.json"
#: The value files CI renders: minimal, SQLite registry, PostgreSQL with KEDA and Strimzi,
#: every security option.
VALUE_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
#: The chart's oldest Kubernetes (Chart.yaml's kubeVersion) and a current one.
KUBE_VERSIONS = ("1.27.0", "1.34.0")
#: A cluster with the Prometheus Operator: ServiceMonitors render.
API_VERSIONS = ("monitoring.coreos.com/v1/ServiceMonitor",)
RELEASE = "ml"

_CUSTOM = {
    ("keda.sh", "ScaledObject"): "scaledobject",
    ("keda.sh", "TriggerAuthentication"): "triggerauthentication",
    ("kafka.strimzi.io", "KafkaTopic"): "kafkatopic",
    ("kafka.strimzi.io", "KafkaUser"): "kafkauser",
    ("monitoring.coreos.com", "ServiceMonitor"): "servicemonitor",
}

Manifest = dict[str, Any]


def tool(name: str) -> str:
    """A chart tool's path; the test fails (never skips) without it: CI must prove the chart."""
    built = TOOLS / name
    if built.exists():
        return str(built)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make chart-tools` builds it into {TOOLS}")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def template_args(
    value_files: Iterable[Path] = (), sets: Sequence[str] = (), kube_version: str = "1.34.0"
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", "ml", "--kube-version", kube_version]
    for api in API_VERSIONS:
        args += ["--api-versions", api]
    for values in value_files:
        args += ["-f", str(values)]
    for value in sets:
        args += ["--set", value]
    return args


def render(
    value_files: Iterable[Path] = (), sets: Sequence[str] = (), kube_version: str = "1.34.0"
) -> list[Manifest]:
    """The manifests ``helm template`` renders, hooks included."""
    out = helm(*template_args(value_files, sets, kube_version)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refusal(sets: Sequence[str], value_files: Iterable[Path] = ()) -> str:
    """What ``helm template`` says when it refuses the values (the test fails if it accepts)."""
    result = helm(*template_args(value_files, sets), check=False)
    if result.returncode == 0:
        pytest.fail(f"helm template accepted {list(sets)}")
    return result.stderr


def validate(manifest: Manifest, kube_version: str) -> None:
    """Raise if the manifest is not valid for that Kubernetes version (or its CRD), strictly."""
    group = manifest["apiVersion"].rpartition("/")[0]
    custom = _CUSTOM.get((group, manifest["kind"]))
    if custom is not None:
        schema = json.loads((Path(__file__).parent / "crd-schemas" / f"{custom}.json").read_text())
        jsonschema.Draft7Validator(schema).validate(manifest)
        return
    kubernetes_validate.validate(manifest, kube_version, strict=True)


def by_kind(manifests: Iterable[Manifest], *kinds: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in kinds]


def named(manifests: Iterable[Manifest], kind: str, name: str) -> Manifest:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    raise AssertionError(f"no {kind} {name} among {[m['metadata']['name'] for m in manifests]}")


WORKLOADS = ("Deployment", "StatefulSet", "Job")


def pod_specs(manifests: Iterable[Manifest]) -> list[tuple[Manifest, dict[str, Any]]]:
    return [(m, m["spec"]["template"]["spec"]) for m in by_kind(manifests, *WORKLOADS)]


def record(values: dict[str, int]) -> None:
    """Merge figures into test-artifacts/helm.json (`make test` puts them in bench/results.json)."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    current.update(values)
    FIGURES.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
