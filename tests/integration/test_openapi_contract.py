"""The OpenAPI documents say what the services do: ``schemathesis run --checks all`` (schema
conformance, undocumented statuses, accepted invalid input, rejected valid input, Allow headers,
auth) over the registry and the predictor, served over real HTTP with a real broker and Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from millrace.settings import CommonSettings
from millrace.state import RedisState
from millrace_predictor.app import create_app as predictor_app
from millrace_predictor.settings import PredictorSettings
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from tests.helpers import serve
from tests.integration.test_predictor_live import MODEL, trained_models
from tests.integration.test_registry_live import serving

pytestmark = pytest.mark.integration

#: Bounded for `make test`: about 1,500 requests per service.
EXAMPLES = 25


def schemathesis(url: str, token: str, seed: int = 2013) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            str(seed),
            "-H",
            f"Authorization: Bearer {token}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_registry_behaves_as_its_schema_says(tmp_path: Path, registry_database: str | None):
    settings = RegistrySettings(
        data_dir=tmp_path,
        port=free_port(),
        announce=False,
        registry_database_url=registry_database,
    )
    with serving(settings) as client:
        for artifact in trained_models(2):
            client.publish(MODEL, artifact, {"tags": {"stage": "seed"}})
        client.move_alias(MODEL, "production", 1, None, "seed")
        run = schemathesis(f"http://127.0.0.1:{settings.port}", settings.token())
    assert run.returncode == 0, run.stdout[-6000:]


def test_the_predictor_behaves_as_its_schema_says(
    kafka_bootstrap: str, redis_url: str, prefix: str, tmp_path: Path
):
    common = {"kafka_bootstrap": kafka_bootstrap, "redis_url": redis_url, "topic_prefix": prefix}
    registry = RegistrySettings(data_dir=tmp_path, port=free_port(), announce=False, **common)
    RedisState.from_url(redis_url, prefix).declare_ready(range(3), total=3)
    with serving(registry) as client:
        client.publish(MODEL, trained_models(1)[0], {})
        client.move_alias(MODEL, "production", 1, None, "seed")
        settings = PredictorSettings(
            registry_url=f"http://127.0.0.1:{registry.port}",
            follow_model_events=False,
            log_predictions=False,
            **common,
        )
        with serve(predictor_app(settings), free_port()) as url:
            run = schemathesis(url, CommonSettings().token())
    assert run.returncode == 0, run.stdout[-6000:]
