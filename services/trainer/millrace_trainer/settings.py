from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from millrace.learners import Classifier, make_learner
from millrace.settings import LOCAL_PORTS, HttpSettings

#: After each publish: move `production` to the new version, or leave promotion to others.
Promotion = Literal["always", "none"]

#: What the deprecated ``demo_baseline = true`` stands for.
DEMO_BASELINE_EVENTS = "millrace_flights.events:baseline_events"


class TrainerSettings(HttpSettings):
    port: int = LOCAL_PORTS["trainer"]
    group: str = "millrace-trainer"
    # Mini-batches: event-time tumbling windows of the feature time; a window is learned once
    # every partition has moved `label_wait_ms` past its end. Five minutes measured best on the
    # flights year (`make bench`): a smaller batch keeps the model closer to the stream.
    window_ms: int = Field(default=300_000, ge=1)
    # Or batches by count: the complete windows' samples in event-time order, this many a batch.
    batch_samples: int | None = Field(default=None, ge=1)
    label_wait_ms: int = Field(default=24 * 3_600_000, ge=0)
    # When a version is published (any rule that is set; unset one with "null"). By the records
    # alone, so a replay publishes at the same positions: after every N-th batch of the stream
    # (288 five-minute batches: a day of flights), and/or before the first batch of each new
    # interval of event time (aligned on the epoch: 86400000 is a version per calendar day).
    publish_every: int | None = Field(
        default=288, ge=1, description="publish a version every N batches"
    )
    publish_interval_ms: int | None = Field(default=None, ge=1)
    # By the wall clock, for streams that go quiet or trickle: what was learned is published
    # once no batch has come for `publish_idle_s`, and at the latest `publish_within_s` after
    # the first unpublished batch was learned. These versions depend on timing, not only on the
    # records: a replay after a crash need not publish them again (it still publishes the same
    # bytes at the positions above), and each says in its lineage why it was published.
    publish_idle_s: float | None = Field(default=30.0, gt=0)
    publish_within_s: float | None = Field(default=600.0, gt=0)
    # Checkpoints hold no buffered records, so they are small; they come every interval and/or
    # every N batches, whichever is first (unset: not by that rule). A crash replays from the
    # last one; publishing is idempotent.
    checkpoint_interval_s: float | None = Field(default=10.0, gt=0)
    checkpoint_every: int | None = Field(
        default=None, ge=1, description="checkpoint every N batches"
    )
    # A partition at its end offset for this long (wall clock) leaves the watermark until it has
    # data again, so a stream that uses only some partitions trains (unset: never).
    idle_partition_ms: int | None = Field(default=60_000, ge=0)
    # Records waiting for their partner, per side, at most (the oldest leave first, counted).
    max_waiting: int = Field(default=1_000_000, ge=1)
    # Records per poll at most: every window a poll makes ready is learned in one call.
    poll_size: int = Field(default=10_000, ge=1)
    # Bytes fetched per partition per request at most (librdkafka's max.partition.fetch.bytes,
    # 1 MiB by default): the compiled join keeps up with more than 1 MiB fetches deliver.
    fetch_partition_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # No completed poll for this long (a hung registry call, say): /health turns 503 and the
    # process exits non-zero, so that its supervisor restarts it from the last checkpoint.
    stall_timeout_s: float = Field(default=300.0, gt=0)
    promotion: Promotion = "always"
    # The validation gate (off when unset): a version is published only if the learning model's
    # prequential log-loss since its parent is at most the parent's own on the same batches plus
    # this margin; otherwise it keeps learning and tries again at the next publish.
    gate_margin: float | None = Field(default=None, ge=0)
    # Rolling prequential scores (metrics, version metadata) cover this many batches.
    rolling_batches: int = Field(default=288, ge=1)
    # The baseline: a backfill Parquet file of your events (`millrace backfill ... --out`);
    # or `baseline_events`, a function ("package.module:function") that returns the event
    # envelopes of the days [baseline_start, baseline_end) (as epoch ms), which the trainer
    # backfills with the feature module (the demo's settings file names the flights'). With
    # neither, the trainer refuses to start, saying so.
    baseline_parquet: Path | None = None
    baseline_events: str | None = None
    baseline_start: date = date(2013, 1, 1)
    baseline_end: date = date(2013, 1, 15)
    # Deprecated (for one release): `baseline_events = "millrace_flights.events:baseline_events"`.
    demo_baseline: bool = False

    @model_validator(mode="after")
    def _some_publish_rule(self) -> TrainerSettings:
        rules = ("publish_every", "publish_interval_ms", "publish_idle_s", "publish_within_s")
        if all(getattr(self, rule) is None for rule in rules):
            raise ValueError(f"no version would ever be published: set one of {', '.join(rules)}")
        return self

    @model_validator(mode="after")
    def _demo_baseline_is_baseline_events(self) -> TrainerSettings:
        if self.demo_baseline and self.baseline_events is None:
            warnings.warn(
                f"demo_baseline is deprecated: set baseline_events = {DEMO_BASELINE_EVENTS!r}",
                DeprecationWarning,
                stacklevel=2,
            )
            self.baseline_events = DEMO_BASELINE_EVENTS
        return self

    # The learner: "logistic_regression" or the dotted path of a River classifier (e.g.
    # "river.linear_model.LogisticRegression"), and its constructor's arguments as JSON, e.g.
    # MILLRACE_LEARNER_PARAMS='{"optimizer": "ftrl", "alpha": 0.1}'. Unset ones keep the
    # learner's defaults, which for logistic regression are the trainer's (SGD, lr 0.01, one
    # round per stream batch).
    learner: str = "logistic_regression"
    learner_params: dict[str, Any] = Field(default_factory=dict)
    # Rounds for the baseline, which is one large batch iterated until the learner's `tol`.
    baseline_rounds: int = Field(default=50, ge=1)
    partitions: int = 3
    # Stable across restarts: the transactional id that commits checkpoints with offsets.
    instance_id: str = "trainer"
    # How soon the group notices a dead trainer.
    session_timeout_ms: int = 10_000

    def build_learner(self) -> Classifier:
        """A fresh learner as configured (the service and `make bench` both build it here)."""
        return make_learner(self.learner, self.learner_params)
