"""Redis loses the featurizer's state — flushed, restarted empty, with the events it was made
from deleted by retention — and the featurizer notices, rebuilds it from the state changelog
and goes on: every record and the final state equal the backfill's, and readers were told the
state was incomplete meanwhile."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from millrace.state import RedisState
from millrace_cli.replay import replay
from millrace_stack.brokers import RedisNode
from millrace_stack.processes import ProcessTable, free_port
from tests.helpers import delete_all_records, end_offsets, read_topic, wait_until
from tests.integration.test_featurizer_live import canonical, expected, running, setup_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[RedisNode, ProcessTable]]:
    """A Redis of this test's own, to flush and kill."""
    procs = ProcessTable(tmp_path / "procs")
    node = RedisNode(tmp_path / "redis", free_port())
    node.start(procs)
    try:
        yield node, procs
    finally:
        procs.stop("redis")


@pytest.mark.parametrize("blow", ["flushall", "restart_empty", "retention_then_flushall"])
def test_lost_state_is_rebuilt_from_the_changelog(kafka_bootstrap, prefix, own_redis, blow, caplog):
    node, procs = own_redis
    settings = setup_topics(kafka_bootstrap, node.url, prefix)
    events, truth = expected("2013-01-01", "2013-01-06")
    half = len(events) // 2
    state = RedisState.from_url(node.url, prefix)
    replay(kafka_bootstrap, settings.events_topic, events[:half])
    with caplog.at_level(logging.WARNING), running(settings, replicas=1, batch_size=500):
        ends = end_offsets(kafka_bootstrap, settings.events_topic)
        done = {p: end - 1 for p, end in ends.items() if end > 0}
        wait_until(lambda: state.fences() == done, 120, "the first half in Redis")
        wait_until(lambda: state.completeness() is None, 30, "the state marked complete")
        if blow == "restart_empty":
            procs.kill("redis")
            node.start(procs)
        else:
            if blow == "retention_then_flushall":
                delete_all_records(kafka_bootstrap, settings.events_topic)
            state.client.flushall()
        assert state.completeness() is not None  # readers are told at once
        replay(kafka_bootstrap, settings.events_topic, events[half:])
        features = read_topic(kafka_bootstrap, settings.features_topic, expect=len(truth.features))
        labels = read_topic(kafka_bootstrap, settings.labels_topic, expect=len(truth.labels))
        wait_until(lambda: state.completeness() is None, 60, "the rebuilt state marked complete")
        wait_until(
            lambda: state.read_many(truth.state) == truth.state,
            60,
            "the state equal the backfill's",
        )
    assert sorted(m.value() for m in features) == canonical(truth.features)
    assert sorted(m.value() for m in labels) == canonical(truth.labels)
    rebuilt = [r for r in caplog.records if r.getMessage() == "redis state of a partition rebuilt"]
    assert rebuilt, "no partition was rebuilt"
    assert {getattr(r, "from") for r in rebuilt} == {"changelog"}
