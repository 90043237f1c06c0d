"""docker-compose.yml checked statically: against the Compose Specification's JSON Schema, and
against the settings the code reads (tests/e2e/test_compose_stack.py runs it under Docker)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic_settings import BaseSettings

from millrace.settings import CommonSettings
from millrace_featurizer.settings import FeaturizerSettings
from millrace_predictor.settings import PredictorSettings
from millrace_registry.settings import RegistrySettings
from millrace_trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "data" / "compose-spec.json"
SETTINGS: dict[str, type[BaseSettings]] = {
    "model-registry": RegistrySettings,
    "featurizer": FeaturizerSettings,
    "featurizer-1": FeaturizerSettings,
    "trainer": TrainerSettings,
    "predictor": PredictorSettings,
    "replay": CommonSettings,
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.mark.skipif(
    not SCHEMA.exists(), reason="the Compose JSON Schema is not beside the repository"
)
def test_compose_file_validates_against_the_compose_spec(compose):
    jsonschema.validate(compose, json.loads(SCHEMA.read_text()))


def test_every_service_has_build_command_env_and_health(compose):
    services = compose["services"]
    assert set(SETTINGS) <= set(services)
    for name in SETTINGS:
        service = services[name]
        assert service["build"]["context"] == "." and (ROOT / "Dockerfile").exists()
        assert service["build"]["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.11-slim}"
        module = service["command"][2]
        importlib.import_module(module)
        if name != "replay":
            assert "healthcheck" in service
            for dependency, dep in service["depends_on"].items():
                if dependency == "registry-migrate":  # a one-shot job, only in its profile
                    assert dep == {"condition": "service_completed_successfully", "required": False}
                else:
                    assert dep["condition"] == "service_healthy", (name, dependency)


def test_environment_matches_the_settings_the_code_reads(compose, monkeypatch):
    for name, settings_cls in SETTINGS.items():
        service = compose["services"][name]
        env = {k: str(v) for k, v in service["environment"].items()}
        # The settings file and the import path of a feature module of the user's own.
        fields = {f"MILLRACE_{f.upper()}" for f in settings_cls.model_fields}
        fields |= {"MILLRACE_CONFIG", "PYTHONPATH"}
        unknown = set(env) - fields
        assert not unknown, f"{name} sets variables its settings do not read: {unknown}"
        with monkeypatch.context() as patch:
            for variable, value in env.items():
                patch.setenv(variable, value)
            settings = settings_cls()
        if "port" in settings_cls.model_fields:
            inside = int(service["ports"][0].rsplit(":", 1)[1])
            assert inside == settings.port == settings_cls.model_fields["port"].default
        assert settings.kafka_bootstrap == "kafka:9092"


def test_the_project_folder_persists_kafka_and_reaches_the_host(compose):
    services = compose["services"]
    for name in SETTINGS:
        assert "${MILLRACE_PROJECT:-.}:/project:ro" in services[name]["volumes"], name
    assert compose["x-millrace-env"]["MILLRACE_CONFIG"] == "/project/millrace.toml"
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "kafka-data:/var/lib/kafka/data" in services["kafka"]["volumes"]
    assert "HOST://localhost:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert services["kafka"]["ports"] == ["127.0.0.1:9092:29092"]
    assert services["replay"]["profiles"] == ["demo"]


def test_service_urls_point_at_compose_services(compose):
    env = compose["x-millrace-env"]
    registry_port = RegistrySettings.model_fields["port"].default
    assert env["MILLRACE_REGISTRY_URL"] == f"http://model-registry:{registry_port}"
    assert env["MILLRACE_REDIS_URL"].startswith("redis://redis:")


def test_no_secret_in_the_file_ports_on_loopback_and_the_private_key_in_the_trainer_only(compose):
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for variable in ("MILLRACE_REGISTRY_TOKEN", "MILLRACE_SIGNING_KEY", "MILLRACE_VERIFY_KEY"):
            if variable in env:
                assert str(env[variable]).startswith("${"), f"{name} has a literal {variable}"
        assert ("MILLRACE_SIGNING_KEY" in env) == (name == "trainer"), name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_the_console_samples_each_service_and_prometheus_scrapes_each(compose):
    services = compose["services"]
    env = services["model-registry"]["environment"]
    targets = json.loads(env["MILLRACE_METRICS_TARGETS"])
    scraped = json.loads((ROOT / "infra/observability/targets/compose.json").read_text())
    for name, settings_cls in SETTINGS.items():
        if name in ("replay", "featurizer-1"):  # featurizer-1: only in the scale profile
            continue
        port = settings_cls.model_fields["port"].default
        assert {"targets": [f"{name}:{port}"], "labels": {"service": name}} in scraped
        if name != "model-registry":
            assert targets[name] == [f"http://{name}:{port}"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            assert source.endswith("-data") or (ROOT / source).exists(), volume


def test_the_postgres_profile_migrates_before_the_registry_and_keeps_sqlite_the_default(compose):
    services = compose["services"]
    for name in ("postgres", "registry-migrate"):
        assert services[name]["profiles"] == ["postgres"], name
    migrate = services["registry-migrate"]
    assert migrate["command"][-2:] == ["registry", "migrate"] and migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    url = "${MILLRACE_REGISTRY_DATABASE_URL:-}"
    assert services["model-registry"]["environment"]["MILLRACE_REGISTRY_DATABASE_URL"] == url
    assert migrate["environment"]["MILLRACE_REGISTRY_DATABASE_URL"] == url
    assert RegistrySettings(registry_database_url="").registry_database_url is None
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
