"""The trainer: a baseline from a bounded backfill, then event-time mini-batches from the stream.

Both go through :meth:`StreamTrainer.learn_batches` — a bounded data set is one mini-batch, each
batch is iterated in rounds until ``max_rounds`` or ``tol``, and the model state carries from
batch to batch; all the batches a poll makes ready are learned in one call to the learner.
Batches come from :class:`~millrace_trainer.batching.WindowedJoin`, so the same records make the
same batches whatever the consumption order. A version is published (idempotently: tagged with
its position in the stream) after every ``publish_every``-th batch and at each new
``publish_interval_ms`` of event time, rules that depend on the records alone; the poll loop
(:mod:`millrace_trainer.stream`, with the checkpoints) adds the wall-clock ones for quiet
streams. Under the ``always`` policy, ``production`` moves to each by compare-and-set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge

import millrace
from millrace.artifacts import dump_model
from millrace.errors import ServiceFailed
from millrace.evaluation import RollingScores, Scores
from millrace.join import Labelled, Sample
from millrace.kafka import SourcePartition
from millrace.learners import kernels
from millrace.learners.base import Classifier, WindowStats, learner_from_state
from millrace.registry_client import RegistryClient
from millrace_trainer.baseline_fit import baseline_fit
from millrace_trainer.batch_sizes import BatchSizeWatch
from millrace_trainer.batching import Batch, WindowedJoin, encode_batches
from millrace_trainer.checkpoints import VerifiedCheckpoint
from millrace_trainer.lineage import Lineage
from millrace_trainer.publishing import PendingVersion, Publisher
from millrace_trainer.settings import Promotion

log = logging.getLogger(__name__)


class EmptyBaseline(ServiceFailed):
    """The baseline has nothing to learn from: publishing it would serve an untrained model."""


SAMPLES = Counter("millrace_trainer_samples_total", "Joined samples learned")
BATCHES = Counter("millrace_trainer_batches_total", "Mini-batches learned")
ROUNDS = Counter("millrace_trainer_rounds_total", "Rounds run over mini-batches")
GATE_REFUSED = Counter(
    "millrace_trainer_gate_refused_total", "Versions not published: worse than their parent"
)
BATCH_LOSS = Gauge("millrace_trainer_batch_log_loss", "Prequential log-loss of the last batch")
BATCH_ACCURACY = Gauge("millrace_trainer_batch_accuracy", "Prequential accuracy of the last batch")
ROLLING = Gauge(
    "millrace_trainer_rolling_score", "Prequential score over the last batches", ["metric"]
)
LAST_ROUND_LOSS = Gauge("millrace_trainer_last_round_loss", "Training loss after the last round")
SAMPLES_PER_BATCH = Gauge(
    "millrace_trainer_samples_per_batch", "Mean samples per mini-batch over the recent batches"
)


def learn_windows(
    learner: Classifier, batches: Sequence[Sequence[Labelled]], max_rounds: int | None = None
) -> tuple[Any, np.ndarray, np.ndarray, WindowStats] | None:
    """The one training step (the trainer's, and a rebuild's): consecutive batches encoded
    once and learned in one call, each scored before it is learned. Returns the encoded
    features, the labels, the batches' row offsets and the learner's statistics (None when
    there is nothing to learn)."""
    sizes = [len(batch) for batch in batches]
    if not sum(sizes):
        return None
    offsets = np.zeros(len(batches) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    X, y = encode_batches(learner, batches)
    return X, y, offsets, learner.learn_windows(X, y, offsets, max_rounds)


class StreamTrainer:
    def __init__(
        self,
        learner: Classifier,
        client: RegistryClient,
        model_name: str,
        feature_schema: str,
        *,
        join: WindowedJoin,
        publish_every: int | None,
        publish_interval_ms: int | None = None,
        promotion: Promotion,
        run_key: str,
        baseline_rounds: int | None,
        gate_margin: float | None,
        rolling_batches: int,
    ) -> None:
        """Every tunable from the trainer's settings (``service.make_trainer``), where the
        defaults are written."""
        self.learner = learner
        self.publisher = Publisher(client, model_name, run_key, promotion)
        self.feature_schema = feature_schema
        self.join = join
        self.publish_every = publish_every
        self.publish_interval_ms = publish_interval_ms
        self.baseline_rounds = baseline_rounds
        # The validation gate: publish only if the learning model's prequential log-loss since
        # the parent is at most the parent's own on the same batches plus this margin.
        self.gate_margin = gate_margin
        self.parent_learner: Classifier | None = None
        self.rolling = RollingScores(rolling_batches)
        #: Prequential scores of every stream batch since this process started.
        self.stream_scores = Scores()
        self.version: int | None = None
        self.batches_total = 0
        self.lineage = Lineage(parent=None)
        self.stopping = threading.Event()
        self.batch_sizes = BatchSizeWatch()

    # -- the one training path -----------------------------------------------------------

    def learn_batch(self, samples: Sequence[Labelled], max_rounds: int | None = None) -> None:
        """Score one batch with the current model, then learn it in rounds (``max_rounds``
        overrides the learner's own limit for this batch, e.g. for the baseline)."""
        self.learn_batches([samples], max_rounds)

    def learn_batches(
        self, batches: Sequence[Sequence[Labelled]], max_rounds: int | None = None
    ) -> None:
        """Learn consecutive batches in one call to the learner, each scored before it is
        learned; scores, lineage and metrics are updated once for the lot."""
        learned = learn_windows(self.learner, batches, max_rounds)
        if learned is None:
            return
        X, y, offsets, stats = learned
        p = stats.probabilities
        if self.gate_margin is not None and self.parent_learner is not None:
            parent_p = self.parent_learner.predict_proba_many(X)
            parent_sums = kernels.segment_log_loss_sums(parent_p, y, offsets)
            self.lineage.parent_scores.add_windows(parent_p, y, offsets, parent_sums)
        self.lineage.scores.add_windows(p, y, offsets, stats.loss_sums)
        self.rolling.add_windows(p, y, offsets, stats.loss_sums)
        self.stream_scores.add_windows(p, y, offsets, stats.loss_sums)
        self.lineage.rounds += stats.rounds.tolist()
        self.batches_total += len(batches)
        self._report(batches, offsets, p, y, stats)

    def _report(
        self,
        batches: Sequence[Sequence[Labelled]],
        offsets: np.ndarray,
        p: np.ndarray,
        y: np.ndarray,
        stats: WindowStats,
    ) -> None:
        """Metrics once per call; a debug line per batch when asked for."""
        SAMPLES.inc(len(p))
        BATCHES.inc(len(batches))
        ROUNDS.inc(int(stats.rounds.sum()))
        last = slice(int(offsets[-2]), int(offsets[-1]))
        BATCH_LOSS.set(float(stats.loss_sums[-1]) / max(last.stop - last.start, 1))
        BATCH_ACCURACY.set(float(np.mean((p[last] >= 0.5) == (y[last] >= 0.5))))
        rounds = int(stats.rounds[-1])
        if rounds:
            LAST_ROUND_LOSS.set(float(stats.round_losses[-1, rounds - 1]))
        if self.batch_sizes.add(len(batch) for batch in batches):
            log.warning(
                "mini-batches hold about one sample: several rounds per batch is then plain "
                "one-sample SGD; batch by count (MILLRACE_BATCH_SAMPLES) or widen the windows "
                "(MILLRACE_WINDOW_MS)",
                extra={"samples_per_batch": round(self.batch_sizes.mean, 2)},
            )
        SAMPLES_PER_BATCH.set(self.batch_sizes.mean)
        if log.isEnabledFor(logging.DEBUG):
            first = self.batches_total - len(batches)
            for w, batch in enumerate(batches):
                log.debug(
                    "batch learned",
                    extra={
                        "batch": first + w + 1,
                        "samples": len(batch),
                        "prequential_log_loss": float(stats.loss_sums[w]) / len(batch),
                        "rounds": int(stats.rounds[w]),
                    },
                )

    def learn_stream(self, batches: Sequence[Batch], source: dict[str, Any]) -> None:
        """Learn ready batches from the stream, publishing on the rules that depend on the
        records alone (so a replay publishes at the same positions): after every
        ``publish_every``-th batch of the stream, and before the first batch of each new
        ``publish_interval_ms`` of event time. A candidate the gate refuses keeps learning."""
        done = 0
        while done < len(batches):
            if self._starts_new_interval(batches[done]):
                self.publish_if_due(source, "publish_interval")
            run = batches[done : done + self._run_length(batches, done)]
            self.learn_batches([b.samples for b in run])
            self.lineage.learned(run)
            done += len(run)
            if self.publish_every is not None and self.batches_total % self.publish_every == 0:
                self.publish_if_due(source, "publish_every")
        rolling = self.rolling.total()
        for metric in ("log_loss", "accuracy", "auc"):
            value = getattr(rolling, metric)
            if value is not None:
                ROLLING.labels(metric).set(value)

    def _starts_new_interval(self, batch: Batch) -> bool:
        """Whether ``batch`` begins in a later event-time interval (aligned on the epoch:
        whole days for a day) than the last sample learned since the parent."""
        last_end, interval = self.lineage.last_end, self.publish_interval_ms
        return interval is not None and last_end is not None and _later(batch, last_end, interval)

    def _run_length(self, batches: Sequence[Batch], done: int) -> int:
        """How many batches from ``done`` on can be learned in one call: up to the next
        publish by count, and none that begins a new event-time interval."""
        length = len(batches) - done
        if self.publish_every is not None:
            length = min(length, self.publish_every - self.batches_total % self.publish_every)
        if self.publish_interval_ms is not None:
            for n in range(1, length):
                if _later(batches[done + n], batches[done + n - 1].end, self.publish_interval_ms):
                    return n
        return length

    def publish_if_due(self, source: dict[str, Any], reason: str) -> PendingVersion | None:
        """Publish what was learned since the parent, if anything and the gate passes it;
        ``reason`` (the rule that called) goes into the lineage."""
        if not self.lineage.batches or not self.gate_passes():
            return None
        return self.publish(source, reason=reason)

    def gate_passes(self) -> bool:
        """True without a gate or a parent to compare with; else whether the learning model
        did at least as well as its parent (within the margin) on the batches since it."""
        if self.gate_margin is None or self.parent_learner is None:
            return True
        ours, theirs = self.lineage.scores.log_loss, self.lineage.parent_scores.log_loss
        if ours is None or theirs is None or ours <= theirs + self.gate_margin:
            return True
        GATE_REFUSED.inc()
        log.warning(
            "validation gate: not published",
            extra={"log_loss": ours, "parent_log_loss": theirs, "margin": self.gate_margin},
        )
        return False

    def publish(
        self, source: dict[str, Any], metrics: dict[str, Any] | None = None, reason: str = ""
    ) -> PendingVersion:
        """Publish the current model once per stream position (a replay finds it again), with
        ``metrics`` beside the scores (the baseline's own fit), by the publishing worker."""
        metadata = {
            "lineage": {
                "parent": self.lineage.parent,
                **self.lineage.describe(),
                "published_because": reason,
                "position": self.batches_total,
                "source": source,
                "feature_schema": self.feature_schema,
                "learner": {"kind": self.learner.kind, **self.learner.config},
                "code_version": millrace.__version__,
            },
            "metrics": {
                **self.lineage.metrics(),
                "rolling": self.rolling.total().as_dict(),
                "gate": self._gate_report(),
                **(metrics or {}),
            },
        }
        # The bytes at this position, now; the registry's calls in the publishing worker.
        pending = self.publisher.submit(
            dump_model(self.learner), self.batches_total, metadata, self.lineage.parent
        )
        self.lineage = Lineage(parent=pending)
        self._remember_parent()
        return pending

    def settle(self) -> None:
        """Wait for every version handed to the publisher: the trainer's version and its
        lineage's parent are numbers again (a checkpoint holds numbers)."""
        self.publisher.flush()
        self.note_published()

    def close(self) -> None:
        """Stop the publishing worker (after :meth:`settle`, nothing is left to publish)."""
        self.publisher.close()

    def note_published(self) -> None:
        """The newest version the publisher has published, as the trainer's version."""
        self.publisher.note_published()
        parent = self.lineage.parent
        if isinstance(parent, PendingVersion) and parent.version is not None:
            self.version = self.lineage.parent = parent.version

    def _remember_parent(self) -> None:
        """A frozen copy of the model just published, for the gate to score batches with."""
        if self.gate_margin is not None:
            self.parent_learner = learner_from_state(self.learner.state(), allow_pickle=True)

    def _gate_report(self) -> dict[str, Any] | None:
        if self.gate_margin is None or self.parent_learner is None:
            return None
        return {
            "margin": self.gate_margin,
            "parent_on_the_same_batches": self.lineage.parent_scores.as_dict(),
        }

    # -- checkpoints -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The model, the learner and lineage state, and the join's cursor with the oldest
        offset still needed per partition (where a restart resumes): no buffered records.
        Every version handed to the publisher is published first."""
        self.settle()
        return {
            "learner": self.learner.state(),
            "join": self.join.cursor(),
            "needed": {str(p): offset for p, offset in self.join.needed_offsets().items()},
            "version": self.version,
            "batches_total": self.batches_total,
            "lineage": self.lineage.state(),
            "rolling": self.rolling.state(),
            "parent_learner": self.parent_learner.state() if self.parent_learner else None,
        }

    def restore(self, checkpoint: VerifiedCheckpoint) -> None:
        """Back to a checkpoint's state; a pickled (River) learner state in it is loaded only
        if its signature was verified."""
        snapshot, trusted = checkpoint.state, checkpoint.signed
        self.learner = learner_from_state(snapshot["learner"], allow_pickle=trusted)
        needed = {SourcePartition(name): int(o) for name, o in snapshot["needed"].items()}
        self.join.restore(snapshot["join"], needed)
        self.version = snapshot["version"]
        self.batches_total = int(snapshot["batches_total"])
        self.lineage = Lineage.from_state(snapshot["lineage"])
        self.rolling.restore(snapshot["rolling"])
        parent = snapshot["parent_learner"]
        self.parent_learner = (
            learner_from_state(parent, allow_pickle=trusted) if parent is not None else None
        )

    # -- start-up ------------------------------------------------------------------------

    def start(
        self,
        checkpoint: VerifiedCheckpoint | None,
        baseline: Callable[[], Sequence[Sample]],
        source: dict[str, Any],
    ) -> None:
        """Restore the checkpoint; else start again from this run's published baseline (the
        consumer group has no offsets either: the stream is replayed, and versions already
        published at a position are found again, not duplicated); else train the baseline."""
        if checkpoint is not None:
            self.restore(checkpoint)
            self.publisher.start()
            log.info(
                "restored checkpoint",
                extra={"batches": self.batches_total, "version": self.version},
            )
            return
        baseline_version = self.publisher.published_at(0)
        if baseline_version is not None:
            self.learner = self.publisher.download(baseline_version)
            self._remember_parent()
            self.version = baseline_version
            self.lineage = Lineage(parent=baseline_version)
            self.publisher.start()
            log.info(
                "no checkpoint: from the published baseline", extra={"version": baseline_version}
            )
            return
        samples = baseline()
        if not samples:
            raise EmptyBaseline(
                f"the baseline ({', '.join(f'{k} {v}' for k, v in source.items())}) has no "
                "labelled samples: the feature module found no events it reads there, or none "
                "with a label. Point MILLRACE_BASELINE_PARQUET at a backfill of your own events "
                "(`millrace backfill events.jsonl --out baseline.parquet`)."
            )
        self.publisher.start()  # ready by the time the baseline is
        log.info("training the baseline", extra={"samples": len(samples)})
        untrained = learner_from_state(self.learner.state(), allow_pickle=True)
        self.learn_batch(samples, self.baseline_rounds)
        fit = baseline_fit(self.learner, untrained, samples, self.baseline_rounds)
        log.info("baseline trained", extra=fit)
        self.batches_total = 0  # stream positions count from the end of the baseline
        self.rolling.restore([])  # rolling scores are the stream's
        self.stream_scores = Scores()
        self.publish(source, {"baseline_fit": fit}, reason="baseline")
        self.settle()


def _later(batch: Batch, end: int, interval: int) -> bool:
    """Whether ``batch`` starts in a later interval than the time just before ``end``."""
    return batch.start // interval > (end - 1) // interval
