"""The registry's protocol under retries, races and reordered announcements, over real HTTP."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from millrace.registry_client import RegistryError
from millrace_predictor.serving import ModelHolder
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import RegistryStore
from millrace_stack.processes import free_port
from tests.helpers import artifacts
from tests.integration.test_registry_live import serving

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path, registry_database: str | None) -> RegistrySettings:
    return RegistrySettings(
        data_dir=tmp_path,
        port=free_port(),
        announce=False,
        registry_database_url=registry_database,
    )


def test_a_retried_publish_returns_the_first_version(settings: RegistrySettings):
    artifact = artifacts(1)[0]
    with serving(settings) as client:
        form = {
            "files": {"artifact": ("model.json", artifact)},
            "data": {"signature": client.signature(artifact), "metadata": "{}"},
        }

        def post(key: str) -> httpx.Response:
            return client._request(
                "POST", "/models/m/versions", headers={"Idempotency-Key": key}, **form
            )

        first, again = post("k1"), post("k1")
        assert first.status_code == 201 and again.status_code == 200
        assert again.json()["version"] == first.json()["version"] == 1
        assert post("k2").json()["version"] == 2
        different = artifacts(2)[1]
        with pytest.raises(RegistryError) as refused:
            client._request(
                "POST",
                "/models/m/versions",
                headers={"Idempotency-Key": "k1"},
                files={"artifact": ("model.json", different)},
                data={"signature": client.signature(different), "metadata": "{}"},
            )
        assert refused.value.status == 409
        assert client.list_versions("m")["total"] == 2


def test_a_publish_can_promote_in_the_same_call_and_its_replay_moves_nothing(
    settings: RegistrySettings,
):
    first, second = artifacts(2)
    with serving(settings) as client:
        version, created = client.publish_keyed("m", first, {}, "k1", promote="production")
        assert created and client.get_alias("m", "production") == version["version"] == 1
        client.publish("m", second, {})
        client.promote("m", 2, reason="someone else")
        again, created = client.publish_keyed("m", first, {}, "k1", promote="production")
        assert not created and again["version"] == 1
        assert client.get_alias("m", "production") == 2  # the replay moved nothing back
        with pytest.raises(RegistryError) as refused:  # an alias name is checked as everywhere
            client.publish_keyed("m", second, {}, "k2", promote="no such/alias")
        assert refused.value.status == 422
        assert client.list_versions("m")["total"] == 2


def test_a_compare_and_set_whose_answer_was_lost_is_recognised(settings: RegistrySettings):
    with serving(settings) as client:
        for artifact in artifacts(2):
            client.publish("m", artifact, {})
        client.move_alias("m", "production", 1, None, "start")
        applied = client.move_alias("m", "production", 2, 1, "ship")
        # The same call again, as a retry after a lost answer: the move it finds is its own.
        again = client.move_alias("m", "production", 2, 1, "ship")
        assert again["id"] == applied["id"] and again["seq"] == applied["seq"] == 2
        with pytest.raises(RegistryError) as stale:  # a move that is not the newest one: 409
            client.move_alias("m", "production", 1, None, "start")
        assert stale.value.status == 409


def test_followers_ignore_moves_older_than_what_they_hold(settings: RegistrySettings):
    with serving(settings) as client:
        for artifact in artifacts(3):
            client.publish("m", artifact, {})
        moves = [
            client.move_alias("m", "production", 1, None, "start"),
            client.move_alias("m", "production", 2, 1, "forward"),
            client.move_alias("m", "production", 3, 2, "forward"),
        ]
        assert [m["seq"] for m in moves] == [1, 2, 3]
        holder = ModelHolder(client, "m")
        holder.sync()
        serving_now = holder.serving
        assert serving_now is not None and serving_now.current.version == 3
        assert serving_now.seq == 3
        for late in reversed(moves[:2]):  # announcements arriving late and out of order
            holder.on_model_event(late)
        assert holder.serving is serving_now
        back = client.rollback("m", reason="worse")
        holder.on_model_event(back)
        swapped = holder.serving
        assert swapped is not None and swapped.current.version == 2 and swapped.seq == 4
        assert swapped.previous is not None and swapped.previous.version == 3


def test_publishing_the_bytes_of_a_version_being_pruned_keeps_the_artifact(
    tmp_path: Path, registry_database: str | None
):
    store = RegistryStore(tmp_path, registry_database)
    artifact = b'{"same": "bytes"}'
    stop = threading.Event()

    def prune_forever() -> None:
        while not stop.is_set():
            store.prune("m", keep_last=1)

    pruner = threading.Thread(target=prune_forever)
    pruner.start()
    try:
        for _ in range(300):
            published, _ = store.publish("m", artifact, "s", {})
            # The newest version always survives pruning: its artifact must be readable.
            assert store.read_artifact("m", published["version"])[0] == artifact
    finally:
        stop.set()
        pruner.join()
