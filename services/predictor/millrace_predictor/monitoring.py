"""Live quality: predictions joined with labels, per version, and the guardrail.

Every predictor logs each prediction to the ``predictions`` topic — the version that answered
and, scored in shadow, the version it replaced. :class:`LiveQuality` joins those records with
the ``labels`` topic by subject and keeps, per version, log-loss and accuracy on live labels.
:class:`Guardrail` compares the serving version with its predecessor *on the same labelled
events*; when the new one is worse by more than ``margin`` in log-loss over at least
``min_labels`` labels, it moves the alias back by compare-and-set (expecting the bad version),
so however many replicas reach the verdict, one rollback happens.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Message
from prometheus_client import Counter, Gauge

from millrace.evaluation import Scores
from millrace.join import Pairs
from millrace.kafka import Brokers, consumer_config, has_data

log = logging.getLogger(__name__)

LIVE_LOG_LOSS = Gauge("millrace_predictor_live_log_loss", "Log-loss on live labels", ["version"])
LIVE_ACCURACY = Gauge("millrace_predictor_live_accuracy", "Accuracy on live labels", ["version"])
LIVE_LABELS = Gauge("millrace_predictor_live_labels", "Live labels scored", ["version"])
GUARDRAIL_ROLLBACKS = Counter("millrace_predictor_guardrail_rollbacks_total", "Guardrail rollbacks")


@dataclass
class Comparison:
    """A serving version against its predecessor on the same labelled events."""

    new: Scores = field(default_factory=Scores)
    old: Scores = field(default_factory=Scores)


class Guardrail:
    def __init__(
        self,
        rollback: Callable[[int, int, str], bool],
        margin: float = 0.05,
        min_labels: int = 200,
        enabled: bool = True,
    ) -> None:
        self.rollback = rollback
        self.margin = margin
        self.min_labels = min_labels
        self.enabled = enabled
        self._decided: set[tuple[int, int]] = set()

    def check(self, new: int, old: int, comparison: Comparison) -> None:
        if not self.enabled or (new, old) in self._decided:
            return
        new_loss, old_loss = comparison.new.log_loss, comparison.old.log_loss
        if comparison.new.samples < self.min_labels or new_loss is None or old_loss is None:
            return
        self._decided.add((new, old))
        worse = new_loss - old_loss
        if worse <= self.margin:
            log.info("guardrail: version passes", extra={"version": new, "vs": old, "delta": worse})
            return
        reason = (
            f"guardrail: version {new} log-loss {new_loss:.4f} vs {old_loss:.4f} for version "
            f"{old} over {comparison.new.samples} live labels (margin {self.margin})"
        )
        if self.rollback(new, old, reason):
            GUARDRAIL_ROLLBACKS.inc()
            log.warning(
                "guardrail rolled back", extra={"version": new, "to": old, "reason": reason}
            )


@dataclass
class Labelled:
    """Predictions of one poll batch that met their labels, grouped for vectorized scoring."""

    version: int
    shadow_version: int | None
    probabilities: list[float] = field(default_factory=list)
    shadows: list[float] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)


class LiveQuality(threading.Thread):
    """Follows the predictions and labels topics (from now on) and scores versions, once per
    poll batch."""

    def __init__(
        self,
        brokers: Brokers,
        predictions_topic: str,
        labels_topic: str,
        guardrail: Guardrail,
        max_pending: int = 200_000,
    ) -> None:
        super().__init__(name="live-quality", daemon=True)
        self.predictions_topic = predictions_topic
        self.guardrail = guardrail
        self.per_version: dict[int, Scores] = {}
        self.comparisons: dict[tuple[int, int], Comparison] = {}
        #: Predictions (left, by subject) waiting for labels (right, by id), and vice versa.
        self.pending: Pairs[dict[str, Any], float] = Pairs(limit=max_pending)
        self._stop_event = threading.Event()
        self._consumer = Consumer(
            consumer_config(
                brokers, f"live-quality-{uuid.uuid4().hex}", **{"auto.offset.reset": "latest"}
            )
        )
        self._consumer.subscribe([predictions_topic, labels_topic])

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.score_batch(self._consumer.consume(1000, timeout=0.5))
        self._consumer.close()

    def stop(self) -> None:
        self._stop_event.set()

    def score_batch(self, messages: list[Message]) -> None:
        groups: dict[tuple[int, int | None], Labelled] = {}
        for message in filter(has_data, messages):
            try:
                pair = self._pair(message.topic() == self.predictions_topic, message.value())
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("unusable record skipped", extra={"topic": message.topic()})
                continue
            if pair is not None:
                self._group(groups, *pair)
        for group in groups.values():
            self._score(group)

    def _pair(
        self, is_prediction: bool, value: bytes | None
    ) -> tuple[dict[str, Any], float] | None:
        record = orjson.loads(value or b"")
        if is_prediction:
            label = self.pending.add_left(record["subject"], record)
            return None if label is None else (record, label)
        label = float(record["label"])
        prediction = self.pending.add_right(record["id"], label)
        return None if prediction is None else (prediction, label)

    @staticmethod
    def _group(
        groups: dict[tuple[int, int | None], Labelled], prediction: dict[str, Any], label: float
    ) -> None:
        shadow = prediction.get("shadow") or None
        version = int(prediction["version"])
        shadow_version = int(shadow["version"]) if shadow else None
        group = groups.setdefault((version, shadow_version), Labelled(version, shadow_version))
        group.probabilities.append(float(prediction["probability"]))
        group.labels.append(label)
        if shadow:
            group.shadows.append(float(shadow["probability"]))

    def _score(self, group: Labelled) -> None:
        p, y = np.asarray(group.probabilities), np.asarray(group.labels)
        scores = self.per_version.setdefault(group.version, Scores())
        scores.add(p, y)
        version = str(group.version)
        LIVE_LOG_LOSS.labels(version).set(scores.log_loss or 0.0)
        LIVE_ACCURACY.labels(version).set(scores.accuracy or 0.0)
        LIVE_LABELS.labels(version).set(scores.samples)
        if group.shadow_version is not None:
            comparison = self.comparisons.setdefault(
                (group.version, group.shadow_version), Comparison()
            )
            comparison.new.add(p, y)
            comparison.old.add(np.asarray(group.shadows), y)
            self.guardrail.check(group.version, group.shadow_version, comparison)
