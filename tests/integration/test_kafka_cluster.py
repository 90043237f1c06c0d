"""The featurizer and the trainer's checkpoints on a three-node cluster when the node that
coordinates their transactions stops answering in the middle of a commit (SIGSTOP, longer than
a commit waits). The commit's outcome is unknown, so neither aborts (the abort could land on the
next transaction, KAFKA-17754) nor exits: each replaces its producer (``init_transactions``
fences the old epoch). The featurizer then reads the committed offsets and rebuilds the state of
its partitions: every record exactly once, the state equal to the backfill's, its topics
replicated 3 ways with ``min.insync.replicas=2``. The trainer's next checkpoint commits with its
offsets."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import ConfigResource
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from millrace.kafka import TopicSpec, admin, consumer_config, ensure_topics, pipeline_topics
from millrace.settings import CommonSettings
from millrace.signing import SigningKey
from millrace.state import RedisState
from millrace_cli.replay import replay
from millrace_featurizer.live import LiveFeaturizer
from millrace_stack.kafka_cluster import KafkaCluster
from millrace_stack.processes import ProcessTable
from millrace_trainer.checkpoints import CheckpointFailed, KafkaCheckpoints
from tests.helpers import (
    end_offsets,
    featurizer_settings,
    processed_offsets,
    read_topic,
    wait_until,
)
from tests.integration.test_featurizer_live import expected

pytestmark = pytest.mark.integration


# Where a pause lands is timing: a pause that also stalls the group coordinator can fence the
# static member by its own rejoin (fatal in-process; a supervisor restarts a service), so this
# one runs in `make cluster-chaos`, not in `make test`.
@pytest.mark.skipif(
    os.environ.get("MILLRACE_CLUSTER_FAULTS") != "1", reason="make cluster-chaos runs it"
)
def test_a_coordinator_paused_mid_commit_replaces_the_producer_and_loses_nothing(
    kafka_cluster: KafkaCluster, redis_url: str, prefix: str, tmp_path
) -> None:
    settings = CommonSettings(
        kafka_bootstrap=kafka_cluster.bootstrap, redis_url=redis_url, topic_prefix=prefix
    )
    ensure_topics(settings.kafka, pipeline_topics(settings))
    events, truth = expected("2013-01-01", "2013-01-09")
    replay(settings.kafka, settings.events_topic, events)
    runner = LiveFeaturizer.from_settings(
        featurizer_settings(settings, group="featurizer", batch_size=5, instance_id="replica-0")
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    procs = ProcessTable(kafka_cluster.data_dir.parent)
    try:
        wait_until(lambda: runner.batches >= 20, 120, "the featurizer to commit")
        # Where a pause lands differs from run to run (an abortable error if no commit was in
        # flight): it strikes again, while events remain, until one lands in a commit.
        for _ in range(4):
            node = kafka_cluster.transaction_coordinator(f"{prefix}featurizer-replica-0")
            kafka_cluster.pause(procs, node)
            time.sleep(12)
            kafka_cluster.resume(procs, node)
            kafka_cluster.wait_in_sync([settings.events_topic, "__transaction_state"])
            if runner.replaced:
                break
        ends = end_offsets(settings.kafka, settings.events_topic)
        group = f"{prefix}featurizer"
        wait_until(
            lambda: processed_offsets(settings.kafka, group, settings.events_topic) == ends,
            240,
            "every event committed",
        )
        features = read_topic(settings.kafka, settings.features_topic, len(truth.features))
        labels = read_topic(settings.kafka, settings.labels_topic, len(truth.labels))
        assert thread.is_alive() and runner.liveness.failure is None, runner.liveness.failure
    finally:
        runner.stopping.set()
        thread.join(60)
    assert runner.replaced, "the pause did not strike during a commit"
    assert Counter(m.value() for m in features) == Counter(truth.feature_bytes)
    assert Counter(m.value() for m in labels) == Counter(truth.label_bytes)
    assert RedisState.from_url(redis_url, prefix).read_many(truth.state) == truth.state

    described = admin(settings.kafka).describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, settings.features_topic)]
    )
    config = next(iter(described.values())).result()
    assert config["min.insync.replicas"].value == "2"
    topic = (
        admin(settings.kafka).list_topics(settings.features_topic).topics[settings.features_topic]
    )
    assert {len(p.replicas) for p in topic.partitions.values()} == {3}


def test_a_checkpoint_of_unknown_outcome_is_not_aborted_and_state_and_offsets_stay_together(
    kafka_cluster: KafkaCluster, prefix: str
) -> None:
    """The trainer's checkpoints while their transaction coordinator is paused for longer than
    a commit waits: the checkpoint fails (the trainer goes on learning), its producer is
    replaced rather than the transaction aborted, and once the node is back the checkpoints
    commit again, each with its offsets: the newest checkpoint names the committed offset."""
    brokers, source = kafka_cluster.bootstrap, f"{prefix}source"
    ensure_topics(brokers, [TopicSpec(source, 1, {})])
    transactional_id = f"{prefix}trainer-0"
    checkpoints = KafkaCheckpoints(
        brokers,
        f"{prefix}checkpoints",
        key="trainer/model",
        transactional_id=transactional_id,
        signer=SigningKey(Ed25519PrivateKey.generate()),
        # Shorter than the cluster's failover (a broker session of 9 s, then a new leader of
        # the coordinator's partition): a commit in flight when the node stops times out.
        commit_timeout_s=4.0,
    )
    group = f"{prefix}trainer"
    consumer = Consumer(consumer_config(brokers, group))
    consumer.assign([TopicPartition(source, 0, 0)])
    committed: list[int] = []
    failed: list[str] = []
    errors: list[BaseException] = []
    resumed = threading.Event()

    def checkpoint_every_200_ms() -> None:
        try:
            for i in range(1, 2000):
                try:
                    checkpoints.commit({"i": i}, [TopicPartition(source, 0, i)], consumer)
                    committed.append(i)
                    if resumed.is_set() and len(committed) >= 3 and committed[-3] > resumed_at:
                        return
                except CheckpointFailed as exc:
                    failed.append(str(exc))
                time.sleep(0.2)
        except BaseException as exc:  # the assertions below report it
            errors.append(exc)

    resumed_at = 10**9
    thread = threading.Thread(target=checkpoint_every_200_ms)
    thread.start()
    procs = ProcessTable(kafka_cluster.data_dir.parent)
    try:
        wait_until(lambda: len(committed) >= 5 or errors, 60, "checkpoints to commit")
        node = kafka_cluster.transaction_coordinator(transactional_id)
        kafka_cluster.pause(procs, node)
        time.sleep(20)  # past the session timeout: the coordinator moves
        resumed_at = committed[-1] + 1 if committed else 0
        kafka_cluster.resume(procs, node)
        resumed.set()
        kafka_cluster.wait_in_sync(["__transaction_state", "__consumer_offsets"])
        thread.join(240)
    finally:
        resumed.set()
        thread.join(10)
    assert not errors, errors
    assert failed, "no checkpoint failed while the coordinator was paused"
    assert checkpoints.replaced >= 1, failed
    assert committed[-1] > resumed_at
    consumer.close()
    # A commit returns once the coordinator decided it; the markers that make it visible to a
    # read_committed reader follow (moments later, or after a coordinator move). A new trainer
    # does not read early: its init_transactions waits for them first.
    wait_until(
        lambda: (
            newest_state(checkpoints) == {"i": committed[-1]}
            and processed_offsets(brokers, group, source) == {0: committed[-1]}
        ),
        30,
        f"checkpoint {committed[-1]} and its offsets to be visible",
    )


def newest_state(checkpoints: KafkaCheckpoints) -> dict[str, object] | None:
    newest = checkpoints.load()
    return None if newest is None else newest.state
