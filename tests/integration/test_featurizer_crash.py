"""Exactly once through crashes: the featurizer process is SIGKILLed at random points and
restarted; the committed feature topic and the Redis state equal an uninterrupted run's."""

from __future__ import annotations

import random
import sys
import threading
import time

import pytest

from millrace.state import RedisState
from millrace_cli.replay import replay
from millrace_stack.processes import ProcessTable, free_port
from tests.helpers import (
    CommittedCount,
    end_offsets,
    processed_offsets,
    read_topic,
    wait_until,
)
from tests.integration.test_featurizer_live import canonical, expected, setup_topics

pytestmark = pytest.mark.integration


def test_sigkilled_featurizer_commits_each_feature_exactly_once(
    kafka_bootstrap, redis_url, prefix, tmp_path
):
    settings = setup_topics(kafka_bootstrap, redis_url, prefix)
    events, truth = expected("2013-01-01", "2013-01-08")
    procs = ProcessTable(tmp_path)
    env = {
        "MILLRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MILLRACE_REDIS_URL": redis_url,
        "MILLRACE_TOPIC_PREFIX": prefix,
        "MILLRACE_BATCH_SIZE": "100",
        "MILLRACE_PORT": str(free_port()),
        "MILLRACE_INSTANCE_ID": "featurizer-under-test",
        "MILLRACE_SESSION_TIMEOUT_MS": "6000",
    }
    command = [sys.executable, "-m", "millrace_featurizer"]
    rng = random.Random(2013)
    # A live run: the week streams in over ~75 s while the featurizer is killed and restarted.
    stream = threading.Thread(
        target=replay,
        args=(kafka_bootstrap, settings.events_topic, events),
        kwargs={"speed": 8_000},
    )
    stream.start()
    committed = CommittedCount(kafka_bootstrap, settings.features_topic)
    committed_at_kill: list[int] = []
    try:
        for _ in range(4):
            procs.start("featurizer", command, env)
            # Killed on progress, not on a timer: once this incarnation has committed, at a
            # random point of the batches after it (a cold start's first commit takes seconds).
            before = committed_at_kill[-1] if committed_at_kill else 0
            wait_until(lambda b=before: committed.read() > b, 90, "a commit after the restart")
            time.sleep(rng.uniform(0.0, 1.0))
            procs.kill("featurizer")
            assert stream.is_alive(), "the stream ended before the last kill: slow it down"
            committed_at_kill.append(committed.read(idle=0.5))
        stream.join()
        procs.start("featurizer", command, env)
        features = read_topic(
            kafka_bootstrap, settings.features_topic, expect=len(truth.features), timeout=300
        )
        # Every event processed for good, then a graceful stop: nothing more can be produced,
        # so anything beyond the expected count in the topic now is a duplicate.
        ends = {p: e for p, e in end_offsets(kafka_bootstrap, settings.events_topic).items() if e}
        group = f"{prefix}millrace-featurizer"
        done = lambda: processed_offsets(kafka_bootstrap, group, settings.events_topic) == ends  # noqa: E731
        wait_until(done, 60, "every event processed")
        procs.stop("featurizer")
        features = read_topic(kafka_bootstrap, settings.features_topic, idle=1.0)
    finally:
        committed.close()
        stream.join()
        procs.stop("featurizer")
        sys.stderr.write(procs.log_path("featurizer").read_text()[-4000:])

    assert 0 < committed_at_kill[-1] < len(truth.features), committed_at_kill
    assert len(features) == len(truth.features), committed_at_kill
    assert sorted(m.value() for m in features) == canonical(truth.features)
    live_state = RedisState.from_url(redis_url, prefix).read_many(truth.state)
    assert live_state == truth.state
