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
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer
from prometheus_client import Counter, Gauge

from millrace.kafka import consumer_config, has_data

log = logging.getLogger(__name__)

LIVE_LOG_LOSS = Gauge("millrace_predictor_live_log_loss", "Log-loss on live labels", ["version"])
LIVE_ACCURACY = Gauge("millrace_predictor_live_accuracy", "Accuracy on live labels", ["version"])
LIVE_LABELS = Gauge("millrace_predictor_live_labels", "Live labels scored", ["version"])
GUARDRAIL_ROLLBACKS = Counter("millrace_predictor_guardrail_rollbacks_total", "Guardrail rollbacks")


def log_loss(p: float, y: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


@dataclass
class Tally:
    labels: int = 0
    loss: float = 0.0
    correct: int = 0

    def add(self, p: float, y: float) -> None:
        self.labels += 1
        self.loss += log_loss(p, y)
        self.correct += int((p >= 0.5) == (y >= 0.5))

    @property
    def mean_loss(self) -> float:
        return self.loss / self.labels if self.labels else float("nan")


@dataclass
class Comparison:
    """A serving version against its predecessor on the same labelled events."""

    new: Tally = field(default_factory=Tally)
    old: Tally = field(default_factory=Tally)


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
        if comparison.new.labels < self.min_labels:
            return
        self._decided.add((new, old))
        worse = comparison.new.mean_loss - comparison.old.mean_loss
        if worse <= self.margin:
            log.info("guardrail: version passes", extra={"version": new, "vs": old, "delta": worse})
            return
        reason = (
            f"guardrail: version {new} log-loss {comparison.new.mean_loss:.4f} vs "
            f"{comparison.old.mean_loss:.4f} for version {old} over {comparison.new.labels} live "
            f"labels (margin {self.margin})"
        )
        if self.rollback(new, old, reason):
            GUARDRAIL_ROLLBACKS.inc()
            log.warning(
                "guardrail rolled back", extra={"version": new, "to": old, "reason": reason}
            )


class LiveQuality(threading.Thread):
    """Follows the predictions and labels topics (from now on) and scores versions."""

    def __init__(
        self,
        bootstrap: str,
        predictions_topic: str,
        labels_topic: str,
        guardrail: Guardrail,
        max_pending: int = 200_000,
    ) -> None:
        super().__init__(name="live-quality", daemon=True)
        self.predictions_topic = predictions_topic
        self.guardrail = guardrail
        self.max_pending = max_pending
        self.per_version: dict[int, Tally] = {}
        self.comparisons: dict[tuple[int, int], Comparison] = {}
        self._predictions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._labels: OrderedDict[str, float] = OrderedDict()
        self._stop_event = threading.Event()
        self._consumer = Consumer(
            consumer_config(
                bootstrap, f"live-quality-{uuid.uuid4().hex}", **{"auto.offset.reset": "latest"}
            )
        )
        self._consumer.subscribe([predictions_topic, labels_topic])

    def run(self) -> None:
        while not self._stop_event.is_set():
            for message in self._consumer.consume(1000, timeout=0.5):
                if not has_data(message):
                    continue
                try:
                    record = orjson.loads(message.value() or b"")
                    if message.topic() == self.predictions_topic:
                        self.add_prediction(record)
                    else:
                        self.add_label(record)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.warning("unusable record skipped", extra={"topic": message.topic()})
        self._consumer.close()

    def stop(self) -> None:
        self._stop_event.set()

    def add_prediction(self, record: dict[str, Any]) -> None:
        label = self._labels.pop(record["subject"], None)
        if label is None:
            _bounded_put(self._predictions, record["subject"], record, self.max_pending)
        else:
            self._score(record, label)

    def add_label(self, record: dict[str, Any]) -> None:
        prediction = self._predictions.pop(record["id"], None)
        if prediction is None:
            _bounded_put(self._labels, record["id"], float(record["label"]), self.max_pending)
        else:
            self._score(prediction, float(record["label"]))

    def _score(self, prediction: dict[str, Any], label: float) -> None:
        version = int(prediction["version"])
        tally = self.per_version.setdefault(version, Tally())
        tally.add(float(prediction["probability"]), label)
        LIVE_LOG_LOSS.labels(str(version)).set(tally.mean_loss)
        LIVE_ACCURACY.labels(str(version)).set(tally.correct / tally.labels)
        LIVE_LABELS.labels(str(version)).set(tally.labels)
        shadow = prediction.get("shadow")
        if shadow:
            old = int(shadow["version"])
            comparison = self.comparisons.setdefault((version, old), Comparison())
            comparison.new.add(float(prediction["probability"]), label)
            comparison.old.add(float(shadow["probability"]), label)
            self.guardrail.check(version, old, comparison)


def _bounded_put(buffer: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    buffer[key] = value
    while len(buffer) > limit:
        buffer.popitem(last=False)
