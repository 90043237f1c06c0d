"""``millrace models``: list, show, history, promote and rollback against a real registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from millrace.artifacts import dump_model
from millrace.learners import LogisticRegression
from millrace.registry_client import RegistryClient
from millrace_cli.app import app
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from tests.integration.test_registry_live import serving

runner = CliRunner()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryClient]:
    """A registry with three versions of ``m``; version 3 in production."""
    settings = RegistrySettings(
        data_dir=tmp_path / "registry", port=free_port(), announce=False, metrics_targets={}
    )
    with serving(settings) as client:
        model = LogisticRegression()
        for i in range(3):
            model.learn_one({"x": float(i)}, float(i % 2))
            metadata = {
                "lineage": {"parent": i or None, "feature_schema": "ab" * 32},
                "metrics": {"prequential": {"log_loss": 0.6 - i / 10, "auc": 0.7, "samples": 9}},
            }
            if i == 0:  # the baseline, with its own fit
                metadata["metrics"]["baseline_fit"] = {
                    "what": "the baseline's fit on its own bounded data (not prequential)",
                    "training": {"log_loss": 0.3125, "auc": 0.875, "samples": 90},
                    "held_out": {"fraction": 0.1, "samples": 10, "log_loss": 0.4375, "auc": 0.8},
                }
            client.publish("m", dump_model(model), metadata)
            client.promote("m", i + 1, reason=f"step {i + 1}")
        monkeypatch.setenv("MILLRACE_REGISTRY_URL", f"http://127.0.0.1:{settings.port}")
        monkeypatch.setenv("MILLRACE_MODEL_NAME", "m")
        monkeypatch.setenv("COLUMNS", "200")
        monkeypatch.setenv("MILLRACE_RUN_DIR", str(tmp_path / "run"))
        yield client


def run(*args: str) -> str:
    result = runner.invoke(app, ["models", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_list_show_and_history(registry: RegistryClient):
    listed = run("list")
    assert "m" in listed and "production→v3" in listed
    shown = run("show")
    assert all(f"{s:.4f}" in shown for s in (0.5, 0.4)) and "production" in shown
    # The baseline's row gives its fit, labelled, and a note the held-out slice's scores.
    assert "0.3125 (fit)" in shown and "0.6000" not in shown
    assert "version 1: (fit) is the baseline's fit" in shown and "log-loss 0.4375" in shown
    assert "abababababab" in shown, "the feature schema's hash, shortened"
    assert '"parent": 2' in run("show", "3")
    history = run("history")
    assert "step 3" in history and "step 1" in history


def test_promote_compare_and_set_and_rollback_move_the_alias(registry: RegistryClient):
    assert "v3 → v1" in run("promote", "1", "--reason", "back to one")
    assert registry.get_alias("m") == 1

    refused = runner.invoke(app, ["models", "promote", "2", "--expect", "3"])
    assert refused.exit_code == 1 and "409" in refused.output
    assert registry.get_alias("m") == 1, "a failed compare-and-set moves nothing"
    assert "v1 → v2" in run("promote", "2", "--expect", "1")

    assert "v2 → v1" in run("rollback", "--reason", "from the test")
    assert registry.get_alias("m") == 1
    assert registry.history("m", limit=1)[0]["reason"] == "from the test"


def test_changes_need_the_token(registry: RegistryClient, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MILLRACE_DEV_MODE", "0")
    monkeypatch.delenv("MILLRACE_REGISTRY_TOKEN", raising=False)
    refused = runner.invoke(app, ["models", "rollback"])
    assert refused.exit_code != 0
    assert "MILLRACE_REGISTRY_TOKEN" in str(refused.exception or refused.output)
    monkeypatch.setenv("MILLRACE_REGISTRY_TOKEN", "not-the-token")
    wrong = runner.invoke(app, ["models", "rollback"])
    assert wrong.exit_code == 1 and "403" in wrong.output
    assert registry.get_alias("m") == 3


def test_an_unreachable_registry_is_named(monkeypatch: pytest.MonkeyPatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MILLRACE_REGISTRY_URL", url)
    monkeypatch.setenv("COLUMNS", "300")
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 1
    assert f"cannot reach the registry at {url}" in result.output
