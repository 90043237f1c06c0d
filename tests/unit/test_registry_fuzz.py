"""Property-based fuzzing of the registry's HTTP API from its own OpenAPI schema: no input,
authorised or not, may produce a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from millrace.artifacts import dump_model
from millrace.learners import LogisticRegression
from millrace.signing import SigningKey, generate_keypair
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import RegistryStore

TOKEN = "fuzz-token"
PRIVATE, PUBLIC = generate_keypair()
_root = Path(tempfile.mkdtemp(prefix="registry-fuzz-"))
_store = RegistryStore(_root)
_artifact = dump_model(LogisticRegression())
for _ in range(3):
    _store.publish(
        "m", _artifact, SigningKey.from_text(PRIVATE).sign(_artifact), {"tags": {"stage": "seed"}}
    )
_store.move_alias("m", "production", 2, None, "seed", "seed")
_store.close()

app = create_app(
    RegistrySettings(data_dir=_root, registry_token=TOKEN, verify_key=PUBLIC, announce=False)
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:300]}"
