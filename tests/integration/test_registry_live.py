"""The registry served over real HTTP, announcing on a real broker, used through the client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from millrace.artifacts import ArtifactRejected, dump_model, load_model
from millrace.kafka import TopicSpec, ensure_topics
from millrace.learners import LogisticRegression
from millrace.model_events import ModelEventFollower
from millrace.registry_client import RegistryClient
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from tests.helpers import serve, wait_until

pytestmark = pytest.mark.integration


@contextmanager
def serving(settings: RegistrySettings) -> Iterator[RegistryClient]:
    with serve(create_app(settings), settings.port) as url:
        client = RegistryClient.from_settings(settings, signs=True, url=url)
        try:
            yield client
        finally:
            client.close()


def test_rollback_is_announced_tampering_refused_and_restart_keeps_state(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
):
    settings = RegistrySettings(
        data_dir=tmp_path, port=free_port(), kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix
    )
    ensure_topics(
        kafka_bootstrap, [TopicSpec(settings.model_events_topic, 1, {"cleanup.policy": "compact"})]
    )
    seen: list[dict] = []
    follower = ModelEventFollower(kafka_bootstrap, settings.model_events_topic, seen.append)
    follower.start()
    try:
        with serving(settings) as client:
            model = LogisticRegression()
            for _ in range(2):
                client.publish("m", dump_model(model), {"metrics": {}})
                model.learn_one({"x": 1.0}, 1.0)
            client.move_alias("m", "production", 1, None, "first")
            client.move_alias("m", "production", 2, 1, "second")
            moved = client.rollback("m", reason="worse live")
            assert moved["to_version"] == 1
            wait_until(lambda: len(seen) == 3, 30, "three model events")
            assert seen[-1]["kind"] == "rollback" and seen[-1]["to_version"] == 1

            assert load_model(client.download("m", 2)).n_seen == 1  # verified, then loaded
            artifact = next((tmp_path / "artifacts").rglob(client.get_version("m", 2)["sha256"]))
            artifact.write_bytes(artifact.read_bytes().replace(b'"bias":', b'"bias": '))
            with pytest.raises(ArtifactRejected):
                client.download("m", 2)
        with serving(settings) as client:
            assert client.get_alias("m") == 1
            assert client.list_versions("m")["total"] == 2
    finally:
        follower.stop()
