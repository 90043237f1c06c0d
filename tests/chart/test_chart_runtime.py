"""The rendered chart against the code it runs: every container's environment and settings file
are accepted by that service's own settings class, and the image runs under the pods' security
context (non-root, read-only root filesystem, no capabilities)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from pydantic_settings import BaseSettings

from millrace.settings import check_config_keys
from millrace.signing import generate_keypair
from millrace_cli.app import SETTINGS
from millrace_featurizer.settings import FeaturizerSettings
from millrace_predictor.settings import PredictorSettings
from millrace_registry.settings import RegistrySettings
from millrace_trainer.settings import TrainerSettings
from tests.chart.helm import CHART, VALUE_FILES, Manifest, by_kind, pod_specs, render

#: What each container's command runs, and the settings it reads.
SETTINGS_OF: dict[str, type[BaseSettings]] = {
    "millrace_featurizer": FeaturizerSettings,
    "millrace_trainer": TrainerSettings,
    "millrace_predictor": PredictorSettings,
    "millrace_registry": RegistrySettings,
    "millrace_cli": RegistrySettings,  # the migration Job: `millrace registry migrate`
}
PRIVATE, PUBLIC = generate_keypair()
#: Stand-ins for what the pods read from Secrets and the downward API.
FROM_SECRETS = {"MILLRACE_SIGNING_KEY": PRIVATE, "MILLRACE_VERIFY_KEY": PUBLIC}
FROM_SECRET_DEFAULT = "from-a-secret"
ids = [path.name.removesuffix("-values.yaml") for path in VALUE_FILES]


def container_environment(container: dict[str, Any], settings_file: Path) -> dict[str, str]:
    env = {}
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            env[name] = variable["value"]
        elif "configMapKeyRef" in variable["valueFrom"]:
            continue  # a user's extraEnv from a ConfigMap of theirs: its value is unknown here
        elif name == "MILLRACE_REGISTRY_DATABASE_URL":
            env[name] = "postgresql://millrace@postgres/millrace"
        elif name == "MILLRACE_REDIS_URL":
            env[name] = "redis://redis:6379/0"
        else:
            env[name] = FROM_SECRETS.get(name, FROM_SECRET_DEFAULT)
    if "MILLRACE_CONFIG" in env:
        env["MILLRACE_CONFIG"] = str(settings_file)
    return env


def settings_file(manifests: list[Manifest], folder: Path) -> Path:
    config = next(m for m in by_kind(manifests, "ConfigMap") if "millrace.toml" in m["data"])
    path = folder / "millrace.toml"
    path.write_text(config["data"]["millrace.toml"])
    return path


@pytest.mark.parametrize("values", VALUE_FILES, ids=ids)
def test_every_service_accepts_the_environment_the_chart_gives_it(
    values: Path, tmp_path: Path
) -> None:
    manifests = render([values])
    toml = settings_file(manifests, tmp_path)
    check_config_keys(toml, (name for s in SETTINGS for name in s.model_fields))
    for workload, pod in pod_specs(manifests):
        for container in pod["containers"]:
            module = container["command"][container["command"].index("-m") + 1]
            settings_class = SETTINGS_OF[module]
            env = container_environment(container, toml)
            unknown = {
                name
                for name in env
                if name.startswith("MILLRACE_")
                and name.removeprefix("MILLRACE_").lower() not in settings_class.model_fields
                and name != "MILLRACE_CONFIG"
            }
            assert not unknown, f"{workload['metadata']['name']}: {module} reads no {unknown}"
            with mock.patch.dict(os.environ, env, clear=True):
                settings = settings_class()
            if settings_class is not RegistrySettings or module == "millrace_registry":
                assert settings.kafka["bootstrap.servers"] == env["MILLRACE_KAFKA_BOOTSTRAP"]
            if module == "millrace_trainer":
                assert settings.instance_id == FROM_SECRET_DEFAULT  # the pod's name (fieldRef)
                settings.signer()  # the private key is the trainer's


def test_the_settings_file_is_the_pipelines(tmp_path: Path) -> None:
    manifests = render([CHART / "ci" / "all-options-values.yaml"])
    with mock.patch.dict(
        os.environ, {"MILLRACE_CONFIG": str(settings_file(manifests, tmp_path))}, clear=True
    ):
        settings = FeaturizerSettings()
    assert settings.topic_prefix == "acme.ml."
    assert settings.log_level == "WARNING"
    assert (settings.replication_factor, settings.min_insync) == (3, 2)


def docker(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def _image(version: str) -> str | None:
    if shutil.which("docker") is None:
        return None
    image = f"millrace:{version}"
    return image if docker("image", "inspect", image).returncode == 0 else None


#: The registry as the chart runs it, SQLite on the writable /data, no Kafka.
REGISTRY_ENV = {
    "HOME": "/tmp",
    "MILLRACE_HOST": "127.0.0.1",
    "MILLRACE_DATA_DIR": "/data",
    "MILLRACE_ANNOUNCE": "false",
    "MILLRACE_REGISTRY_TOKEN": "chart-test",
    "MILLRACE_VERIFY_KEY": PUBLIC,
}
SERVICES = (
    "import millrace_featurizer.__main__, millrace_trainer.__main__, millrace_predictor.__main__"
)
HEALTH = "import urllib.request as u; u.urlopen('http://127.0.0.1:8700/health', timeout=3)"


def test_the_image_runs_under_the_pods_security_context() -> None:
    """The registry serves from the image as the chart runs it: uid 10001, a read-only root,
    every capability dropped, /tmp and /data the only writable paths."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = _image(chart["appVersion"])
    if image is None:
        pytest.skip("no Docker engine with the image `make images` builds (make test has both)")
    pod = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    uid = str(pod["runAsUser"])
    name = f"millrace-chart-{os.getpid()}"
    run = ["run", "-d", "--rm", "--name", name, "--user", f"{uid}:{pod['runAsGroup']}"]
    run += ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    run += ["--tmpfs", "/tmp", "--tmpfs", f"/data:uid={uid}"]
    for variable, value in REGISTRY_ENV.items():
        run += ["-e", f"{variable}={value}"]
    docker(*run, image, "python", "-m", "millrace_registry", check=True)
    try:
        deadline = time.monotonic() + 60
        while (answer := docker("exec", name, "python", "-c", HEALTH)).returncode != 0:
            if time.monotonic() > deadline:
                logs = docker("logs", name)
                pytest.fail(f"the registry did not serve: {logs.stdout}{logs.stderr}")
            time.sleep(1)
        assert answer.returncode == 0
        imported = docker("exec", name, "python", "-c", SERVICES)
        assert imported.returncode == 0, imported.stderr
        assert docker("exec", name, "id", "-u", check=True).stdout.strip() == uid
    finally:
        docker("rm", "-f", name)
