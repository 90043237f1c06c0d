"""The featurizer and the predictor on Redis behind Sentinel (one master, two replicas, three
sentinels, all real servers): live = backfill and state = backfill, across a failover in which
the master is SIGKILLed mid-stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.sentinel import MasterNotFoundError

from millrace.settings import CommonSettings
from millrace.state import RedisState
from millrace_cli.replay import replay
from millrace_stack.brokers import SentinelGroup
from millrace_stack.processes import ProcessTable, free_port
from tests.helpers import end_offsets, read_topic, wait_until
from tests.integration.test_featurizer_live import canonical, expected, running, setup_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[tuple[SentinelGroup, ProcessTable]]:
    procs = ProcessTable(tmp_path / "procs")
    group = SentinelGroup(
        tmp_path / "redis", [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    )
    try:
        group.start(procs)
        yield group, procs
    finally:
        for name in [*(f"sentinel-{i}" for i in range(3)), *(f"redis-{i}" for i in range(3))]:
            procs.stop(name)


def test_a_failover_mid_stream_loses_nothing(kafka_bootstrap, prefix, sentinels):
    group, procs = sentinels
    settings = CommonSettings(
        kafka_bootstrap=kafka_bootstrap,
        redis_sentinels=group.sentinels,
        redis_master_name=group.master_name,
        topic_prefix=prefix,
    )
    setup_topics(kafka_bootstrap, settings.redis_url, prefix)
    state = RedisState.from_settings(settings)
    events, truth = expected("2013-01-01", "2013-01-06")
    half = len(events) // 2
    replay(kafka_bootstrap, settings.events_topic, events[:half])
    with running(settings, replicas=1, batch_size=200):
        ends = end_offsets(kafka_bootstrap, settings.events_topic)
        done = {p: end - 1 for p, end in ends.items() if end > 0}
        wait_until(lambda: state.fences() == done, 120, "the first half in Redis")
        first = group.master()
        replay(kafka_bootstrap, settings.events_topic, events[half:])
        procs.kill(f"redis-{group.redis_ports.index(first or 0)}")  # mid-stream
        wait_until(lambda: group.master() not in (None, first), 60, "the sentinels' failover")
        features = read_topic(kafka_bootstrap, settings.features_topic, expect=len(truth.features))
        labels = read_topic(kafka_bootstrap, settings.labels_topic, expect=len(truth.labels))
        wait_until(lambda: state.completeness() is None, 60, "the new master's state complete")
        same = lambda: state.read_many(truth.state) == truth.state  # noqa: E731
        wait_until(same, 60, "the state on the new master equal to the backfill's")
    assert sorted(m.value() for m in features) == canonical(truth.features)
    assert sorted(m.value() for m in labels) == canonical(truth.labels)


def test_sentinels_and_nodes_behind_passwords(tmp_path, prefix):
    """Passwords on the nodes and on the sentinels (as a production Sentinel setup has them):
    the state is written and read with MILLRACE_REDIS_PASSWORD and _SENTINEL_PASSWORD, and
    refused without them."""
    procs = ProcessTable(tmp_path / "procs")
    group = SentinelGroup(
        tmp_path / "redis",
        [free_port() for _ in range(2)],
        [free_port() for _ in range(3)],
        password="node-secret",
        sentinel_password="sentinel-secret",
    )
    try:
        group.start(procs)
        settings = CommonSettings(
            redis_sentinels=group.sentinels,
            redis_master_name=group.master_name,
            topic_prefix=prefix,
            redis_password="node-secret",
            redis_sentinel_password="sentinel-secret",
        )
        state = RedisState.from_settings(settings)
        state.set_fence(0, 41)
        assert state.fences() == {0: 41}
        no_node_password = settings.model_copy(update={"redis_password": None})
        with pytest.raises(redis.AuthenticationError):
            RedisState.from_settings(no_node_password).fences()
        no_sentinel_password = settings.model_copy(update={"redis_sentinel_password": None})
        with pytest.raises(MasterNotFoundError, match="AuthenticationError"):
            RedisState.from_settings(no_sentinel_password).fences()
    finally:
        for name in [*(f"sentinel-{i}" for i in range(3)), *(f"redis-{i}" for i in range(2))]:
            procs.stop(name)
