"""The trainer: a baseline from a bounded backfill, then mini-batches from the stream.

Both go through :meth:`StreamTrainer.learn_batch` — a bounded data set is one mini-batch. Every
``publish_every`` batches the model is published with its lineage and, under the ``always``
promotion policy, the ``production`` alias moves to it (compare-and-set). The consumed offsets
are committed right after a publish, so a restarted trainer resumes from its newest published
version and the offsets that follow it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import millrace
import orjson
from confluent_kafka import Consumer, TopicPartition
from millrace.artifacts import dump_model, load_model
from millrace.evaluation import Scores
from millrace.join import LabelJoin, Sample
from millrace.kafka import has_data
from millrace.learners.base import Learner
from millrace.registry_client import RegistryClient, RegistryError
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

SAMPLES = Counter("millrace_trainer_samples_total", "Joined samples learned")
BATCHES = Counter("millrace_trainer_batches_total", "Mini-batches learned")
PUBLISHED = Counter("millrace_trainer_versions_published_total", "Versions published")
BATCH_LOSS = Gauge("millrace_trainer_batch_log_loss", "Prequential log-loss of the last batch")
EXPIRED = Gauge("millrace_trainer_join_expired", "Records that expired waiting for a partner")

Promotion = Literal["always", "none"]


@dataclass
class Lineage:
    """What the next version is built from since its parent."""

    parent: int | None
    offsets: dict[str, list[int]] = field(default_factory=dict)
    scores: Scores = field(default_factory=Scores)
    batches: int = 0
    rounds: list[int] = field(default_factory=list)

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        span = self.offsets.setdefault(f"{topic}/{partition}", [offset, offset])
        span[0] = min(span[0], offset)
        span[1] = max(span[1], offset)


class StreamTrainer:
    def __init__(
        self,
        learner: Learner,
        client: RegistryClient,
        model_name: str,
        feature_schema: str,
        batch_size: int = 500,
        publish_every: int = 2,
        promotion: Promotion = "always",
        join: LabelJoin | None = None,
    ) -> None:
        self.learner = learner
        self.client = client
        self.model_name = model_name
        self.feature_schema = feature_schema
        self.batch_size = batch_size
        self.publish_every = publish_every
        self.promotion = promotion
        self.join = join or LabelJoin()
        self.version: int | None = None
        self.lineage = Lineage(parent=None)
        self.stopping = threading.Event()

    # -- the one training path -----------------------------------------------------------

    def learn_batch(self, samples: Sequence[Sample]) -> None:
        X = [s.features for s in samples]
        y = [s.label for s in samples]
        before = Scores()
        before.add(self.learner.predict_proba_many(X), y)
        self.lineage.scores.merge(before)
        rounds = self.learner.learn_many(X, y)
        self.lineage.batches += 1
        self.lineage.rounds.append(len(rounds))
        SAMPLES.inc(len(samples))
        BATCHES.inc()
        BATCH_LOSS.set(before.log_loss or 0.0)
        log.info(
            "batch learned",
            extra={
                "batch": self.lineage.batches,
                "samples": len(samples),
                "prequential_log_loss": before.log_loss,
                "rounds": len(rounds),
                "loss_first_round": rounds[0].loss if rounds else None,
                "loss_last_round": rounds[-1].loss if rounds else None,
            },
        )

    def publish(self, source: dict[str, Any]) -> int:
        artifact = dump_model(self.learner)
        metadata = {
            "lineage": {
                "parent": self.lineage.parent,
                "input_offsets": self.lineage.offsets,
                "source": source,
                "feature_schema": self.feature_schema,
                "learner": {"kind": self.learner.kind, **getattr(self.learner, "config", {})},
                "code_version": millrace.__version__,
            },
            "metrics": {
                "prequential": self.lineage.scores.as_dict(),
                "batches": self.lineage.batches,
                "rounds_per_batch": self.lineage.rounds,
            },
        }
        version = int(self.client.publish(self.model_name, artifact, metadata)["version"])
        PUBLISHED.inc()
        log.info("published version", extra={"model": self.model_name, "version": version})
        if self.promotion == "always":
            self._promote(version)
        self.version = version
        self.lineage = Lineage(parent=version)
        return version

    def _promote(self, version: int) -> None:
        current = self.client.get_alias(self.model_name, "production")
        try:
            self.client.move_alias(
                self.model_name,
                "production",
                version,
                current,
                reason="trainer: promotion policy always",
            )
        except RegistryError as exc:
            if exc.status != 409:
                raise
            log.warning("production moved meanwhile; not promoted", extra={"version": version})

    # -- start-up ------------------------------------------------------------------------

    def resume_or_train_baseline(
        self, baseline: Callable[[], Sequence[Sample]], source: dict[str, Any]
    ) -> None:
        """Continue from the newest published version, or train and publish the baseline."""
        items = self.client.list_versions(self.model_name, limit=1)["items"]
        if items:
            newest = int(items[0]["version"])
            self.learner = load_model(self.client.download(self.model_name, newest))
            self.version = newest
            self.lineage = Lineage(parent=newest)
            log.info("resumed from published version", extra={"version": newest})
            return
        samples = baseline()
        log.info("training the baseline", extra={"samples": len(samples)})
        self.learn_batch(samples)
        self.publish(source)

    # -- the stream ----------------------------------------------------------------------

    def run(self, consumer: Consumer, features_topic: str, labels_topic: str) -> None:
        consumer.subscribe([features_topic, labels_topic])
        pending: list[Sample] = []
        next_offsets: dict[tuple[str, int], int] = {}
        try:
            while not self.stopping.is_set():
                for message in consumer.consume(1000, timeout=0.5):
                    if not has_data(message):
                        continue
                    topic, partition = str(message.topic()), int(message.partition() or 0)
                    offset = int(message.offset() or 0)
                    self.lineage.consumed(topic, partition, offset)
                    next_offsets[(topic, partition)] = offset + 1
                    sample = self._join(topic == features_topic, message.value())
                    if sample is not None:
                        pending.append(sample)
                    if len(pending) >= self.batch_size:
                        self.learn_batch(pending)
                        pending = []
                        if self.lineage.batches >= self.publish_every:
                            self.publish({"stream": [features_topic, labels_topic]})
                            consumer.commit(
                                offsets=[
                                    TopicPartition(t, p, o) for (t, p), o in next_offsets.items()
                                ],
                                asynchronous=False,
                            )
                EXPIRED.set(self.join.expired)
        finally:
            consumer.close()

    def _join(self, is_features: bool, value: bytes | None) -> Sample | None:
        try:
            record = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            log.warning("undecodable record skipped")
            return None
        return self.join.add_features(record) if is_features else self.join.add_label(record)


def samples_from_backfill(
    features: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]]
) -> list[Sample]:
    """Join a backfill's records exactly as the stream join would, without expiry."""
    join = LabelJoin(wait_ms=2**62)
    samples = [s for s in (join.add_features(r) for r in features) if s is not None]
    samples += [s for s in (join.add_label(r) for r in labels) if s is not None]
    return samples
