"""The registry's store and HTTP API (model events off: no Kafka in these tests)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from millrace.artifacts import dump_model, sha256_hex
from millrace.learners import LogisticRegression
from millrace.signing import SigningKey, generate_keypair
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import Conflict, RegistryStore

TOKEN = "t0ken"
PRIVATE, PUBLIC = generate_keypair()
SIGNER = SigningKey.from_text(PRIVATE)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path, registry_database):
    settings = RegistrySettings(
        data_dir=tmp_path,
        registry_database_url=registry_database,
        registry_token=TOKEN,
        verify_key=PUBLIC,
        announce=False,
        max_body_bytes=2**20,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _publish(client, data: bytes | None = None, signature: str | None = None, headers=AUTH):
    data = data if data is not None else dump_model(LogisticRegression())
    return client.post(
        "/models/m/versions",
        files={"artifact": ("a", data)},
        data={
            "signature": signature or SIGNER.sign(data),
            "metadata": '{"metrics": {"log_loss": 0.5}}',
        },
        headers=headers,
    )


def test_concurrent_publishers_get_unique_gapless_versions(tmp_path, registry_database):
    store = RegistryStore(tmp_path, registry_database)

    def publisher(worker: int) -> list[int]:
        return [
            store.publish("m", f"a{worker}-{i % 5}".encode(), "s", {})[0]["version"]
            for i in range(50)
        ]

    with ThreadPoolExecutor(8) as pool:
        versions = [v for batch in pool.map(publisher, range(8)) for v in batch]
    assert sorted(versions) == list(range(1, 401))


def test_alias_compare_and_set_rollback_and_history(tmp_path, registry_database):
    store = RegistryStore(tmp_path, registry_database)
    for i in range(3):
        store.publish("m", f"a{i}".encode(), "s", {})
    store.move_alias("m", "production", 1, None, "t", "first")
    store.move_alias("m", "production", 2, 1, "t", "second")
    moves_before = len(store.history("m", "production", 100))
    with pytest.raises(Conflict):
        store.move_alias("m", "production", 3, 1, "t", "stale expectation")
    assert store.get_alias("m", "production")["version"] == 2
    assert len(store.history("m", "production", 100)) == moves_before
    store.move_alias("m", "production", 3, 2, "t", "third")
    assert store.rollback("m", "production", None, "t", "bad")["to_version"] == 2
    assert store.rollback("m", "production", None, "t", "worse")["to_version"] == 1
    history = store.history("m", "production", 10)
    assert [(h["from_version"], h["to_version"], h["kind"]) for h in history][:2] == [
        (2, 1, "rollback"),
        (3, 2, "rollback"),
    ]
    store.close()
    reopened = RegistryStore(tmp_path, registry_database)
    assert reopened.get_alias("m", "production")["version"] == 1
    assert len(reopened.history("m", "production", 10)) == 5


def test_http_publish_list_download_and_alias(client):
    created = _publish(client)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    listed = client.get("/models/m/versions").json()
    assert listed["total"] == 1 and listed["items"][0]["metadata"]["metrics"]["log_loss"] == 0.5
    artifact = client.get("/models/m/versions/1/artifact")
    assert artifact.headers["X-Millrace-Sha256"] == created.json()["sha256"]
    moved = client.put(
        "/models/m/aliases/production", json={"version": 1, "expected_version": None}, headers=AUTH
    )
    assert moved.status_code == 200
    conflict = client.put(
        "/models/m/aliases/production", json={"version": 1, "expected_version": 7}, headers=AUTH
    )
    assert conflict.status_code == 409
    assert client.get("/models/m/aliases/production").json()["version"] == 1


def test_http_security_and_bad_input(client):
    assert _publish(client, headers={}).status_code == 401
    assert _publish(client, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert _publish(client, signature="0" * 128).status_code == 403  # not the trainer's key
    assert client.get("/models/..%2Fetc/versions").status_code in (404, 422)
    assert client.get("/models/m/versions/999").status_code == 404
    assert client.post("/models/m/rollback", json={}, headers=AUTH).status_code == 404
    too_big = client.post(
        "/models/m/versions", content=b"x", headers={**AUTH, "Content-Length": str(2**40)}
    )
    assert too_big.status_code == 413
    # 2 MiB streamed without a Content-Length, over this fixture's 1 MiB limit.
    multipart = {**AUTH, "Content-Type": "multipart/form-data; boundary=b"}
    chunk = b'--b\r\nContent-Disposition: form-data; name="artifact"; filename="a"\r\n\r\n'
    chunked = client.post(
        "/models/m/versions", content=iter([chunk] + [b"x" * 1024] * 2048), headers=multipart
    )
    assert chunked.status_code == 413


def test_archive_filters_promote_and_retention(tmp_path, registry_database):
    store = RegistryStore(tmp_path, registry_database)
    for i in range(1, 11):
        stage = "even" if i % 2 == 0 else "odd"
        store.publish("m", f"artifact-{i}".encode(), "s", {"tags": {"stage": stage}})
    assert store.list_versions("m", 100, 0, tag=("stage", "even"))[1] == 5
    store.promote("m", "production", 3, "t", "pin an old one")
    with pytest.raises(Conflict):
        store.archive("m", 3)
    store.archive("m", 4)
    assert 4 not in [v["version"] for v in store.list_versions("m", 100, 0)[0]]
    assert 4 in [v["version"] for v in store.list_versions("m", 100, 0, include_archived=True)[0]]

    deleted = store.prune("m", keep_last=2, keep_history_moves=5)
    assert 3 not in deleted and {9, 10}.isdisjoint(deleted) and 1 in deleted
    survivors = {v["version"] for v in store.list_versions("m", 100, 0, include_archived=True)[0]}
    assert survivors == {3, 9, 10}
    assert not store.has_artifact(sha256_hex(b"artifact-1"))
    # Numbers are never handed out twice, even after old versions were pruned.
    assert store.publish("m", b"new", "s", {})[0]["version"] == 11


def test_http_archive_promote_prune_and_tag_filter(client):
    for _ in range(3):
        assert _publish(client).status_code == 201
    promoted = client.post("/models/m/versions/2/promote", json={"reason": "manual"}, headers=AUTH)
    assert promoted.status_code == 200 and promoted.json()["kind"] == "promote"
    assert client.delete("/models/m/versions/2", headers=AUTH).status_code == 409
    assert client.delete("/models/m/versions/3", headers=AUTH).json()["archived"] is True
    assert client.delete("/models/m/versions/3").status_code == 401
    assert client.get("/models/m/versions", params={"tag": "stage:none"}).json()["total"] == 0
    pruned = client.post(
        "/models/m/prune", json={"keep_last": 1, "keep_history_moves": 0}, headers=AUTH
    )
    assert pruned.status_code == 200 and 2 not in pruned.json()["deleted"]
