"""The featurizer and the predictor's read on a Redis Cluster (three primaries, three replicas,
all real servers): live = backfill and state = backfill with two featurizer replicas, also when
a primary is SIGKILLed mid-stream (its replica takes over, possibly without the last writes) or
flushed, and readers are refused meanwhile rather than served from the hole."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from millrace.settings import CommonSettings
from millrace.state import RedisRefused, RedisState, StateIncomplete
from millrace_cli.replay import replay
from millrace_stack.brokers import RedisClusterGroup
from millrace_stack.processes import ProcessTable, free_port
from tests.helpers import end_offsets, read_topic, wait_until
from tests.integration.test_featurizer_live import canonical, expected, running, setup_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RedisClusterGroup, ProcessTable]]:
    procs = ProcessTable(tmp_path / "procs")
    group = RedisClusterGroup(tmp_path / "redis", [free_port() for _ in range(6)])
    try:
        group.start(procs)
        yield group, procs
    finally:
        for i in range(len(group.ports)):
            procs.stop(f"cluster-{i}")


@pytest.mark.parametrize("blow", ["none", "primary_killed", "primary_flushed"])
def test_parity_on_a_redis_cluster(kafka_bootstrap, prefix, cluster, blow, caplog):
    group, procs = cluster
    settings = CommonSettings(
        kafka_bootstrap=kafka_bootstrap, redis_cluster_nodes=group.nodes[:2], topic_prefix=prefix
    )
    setup_topics(kafka_bootstrap, settings.redis_url, prefix)
    state = RedisState.from_settings(settings)
    events, truth = expected("2013-01-01", "2013-01-06")
    half = len(events) // 2
    replay(kafka_bootstrap, settings.events_topic, events[:half])
    with caplog.at_level(logging.WARNING), running(settings, replicas=2, batch_size=200):
        ends = end_offsets(kafka_bootstrap, settings.events_topic)
        done = {p: end - 1 for p, end in ends.items() if end > 0}
        wait_until(lambda: state.fences() == done, 120, "the first half in Redis")
        wait_until(lambda: state.completeness() is None, 30, "the state marked complete")
        # The entities spread over every primary.
        held = {state.nodes.node_of(state.key(e)).name for e in truth.state}
        assert len(held) == 3
        victim = group.primaries()[0]
        replay(kafka_bootstrap, settings.events_topic, events[half:])
        if blow == "primary_killed":
            procs.kill(f"cluster-{group.ports.index(victim)}")
            wait_until(lambda: victim not in group.primaries(), 60, "the replica's takeover")
        elif blow == "primary_flushed":
            redis.Redis(port=victim).flushall()
            lost = next(e for e in truth.state if _held_by(state, e) == victim)
            with pytest.raises(StateIncomplete):  # nobody reads from the hole
                state.read_complete([lost])
        features = read_topic(kafka_bootstrap, settings.features_topic, expect=len(truth.features))
        labels = read_topic(kafka_bootstrap, settings.labels_topic, expect=len(truth.labels))
        wait_until(lambda: state.completeness() is None, 90, "the state complete again")
        wait_until(
            lambda: state.read_complete(truth.state) == truth.state,
            60,
            "the state on the cluster equal to the backfill's",
        )
    assert sorted(m.value() for m in features) == canonical(truth.features)
    assert sorted(m.value() for m in labels) == canonical(truth.labels)
    rebuilt = [r for r in caplog.records if r.getMessage() == "redis state of a partition rebuilt"]
    if blow != "none":
        assert rebuilt and {getattr(r, "from") for r in rebuilt} == {"changelog"}


def _held_by(state: RedisState, entity: str) -> int:
    return int(state.nodes.node_of(state.key(entity)).name.rsplit(":", 1)[1])


def test_a_cluster_behind_a_password(tmp_path, prefix, caplog):
    """Every node asks a password (MILLRACE_REDIS_PASSWORD): the state is written and read
    with it, and not without it."""
    procs = ProcessTable(tmp_path / "procs")
    group = RedisClusterGroup(
        tmp_path / "redis", [free_port() for _ in range(3)], replicas=0, password="cluster-secret"
    )
    try:
        group.start(procs)
        settings = CommonSettings(
            redis_cluster_nodes=group.nodes, topic_prefix=prefix, redis_password="cluster-secret"
        )
        state = RedisState.from_settings(settings)
        state.set_fence(2, 7)
        assert state.fences() == {2: 7}
        # Without it, no wait: the refusal at once (never a "waiting for" retry), naming its cause.
        caplog.clear()
        with pytest.raises(RedisRefused, match=r"refused the connection .*MILLRACE_REDIS_PASSWORD"):
            RedisState.from_settings(settings.model_copy(update={"redis_password": None}))
        assert not [r for r in caplog.records if "waiting for" in r.getMessage()]
    finally:
        for i in range(len(group.ports)):
            procs.stop(f"cluster-{i}")
