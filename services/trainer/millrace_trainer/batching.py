"""Deterministic mini-batches from a stream: the label join and event-time windows.

A sample (a feature record joined with its label by subject id) belongs to the tumbling window
``[start, start + window_ms)`` that contains its *feature* time, provided its label's event time
is at most ``window end + label_wait_ms``; otherwise it is late and counted, never learned. A
window is ready once the watermark — the smallest, over every partition being read, of the newest
event time seen there — is past ``end + label_wait_ms``: every record that can belong to it has
then arrived, because each partition carries its records in event-time order. Ready windows are
handed out oldest first with their samples sorted by (time, id), so however the consumer
interleaves partitions and topics, the same records make the same batches, and the same model.

The whole buffer is plain data (:meth:`WindowedJoin.snapshot` / :meth:`restore`), so a checkpoint
can carry it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from millrace.join import Pairs, Sample, sample


@dataclass(frozen=True)
class Batch:
    start: int
    end: int
    samples: list[Sample]


class WindowedJoin:
    """Batches by event-time window or, with ``batch_samples``, by count: the complete windows'
    samples, in order, cut into batches of exactly that many (the rest waits for the next
    window)."""

    def __init__(
        self,
        window_ms: int = 3_600_000,
        label_wait_ms: int = 24 * 3_600_000,
        batch_samples: int | None = None,
    ) -> None:
        if batch_samples is not None and batch_samples < 1:
            raise ValueError("batch_samples must be positive")
        self.window_ms = window_ms
        self.label_wait_ms = label_wait_ms
        self.batch_samples = batch_samples
        self.pending: list[Sample] = []  # count batches: complete samples not yet batched
        #: Feature records (left) and labels (right) waiting for their partner.
        self.pairs: Pairs[dict[str, Any], dict[str, Any]] = Pairs()
        self.windows: dict[int, list[Sample]] = {}
        self.newest: dict[str, int] = {}  # "topic/partition" -> newest event time seen
        self.partitions: set[str] = set()
        self.late = 0
        self.expired = 0
        # (event time, 0 = features | 1 = label, id) of every buffered record, oldest first, so
        # expiry looks only at what expires (entries of records paired meanwhile are skipped).
        self._expiry: list[tuple[int, int, str]] = []

    def assign(self, partitions: set[str]) -> None:
        """The partitions whose progress the watermark waits for."""
        self.partitions = set(partitions)

    def watermark(self) -> int | None:
        if not self.partitions or any(p not in self.newest for p in self.partitions):
            return None
        return min(self.newest[p] for p in self.partitions)

    def add(self, partition: str, record: dict[str, Any]) -> None:
        ts = int(record["ts"])
        self.newest[partition] = max(self.newest.get(partition, ts), ts)
        is_label = "features" not in record
        features: dict[str, Any] | None
        label: dict[str, Any] | None
        if is_label:
            features, label = self.pairs.add_right(record["id"], record), record
        else:
            features, label = record, self.pairs.add_left(record["id"], record)
        if features is None or label is None:
            heapq.heappush(self._expiry, (ts, int(is_label), record["id"]))
        else:
            self._window(features, label)

    def _window(self, features: dict[str, Any], label: dict[str, Any]) -> None:
        start = int(features["ts"]) // self.window_ms * self.window_ms
        if int(label["ts"]) > start + self.window_ms + self.label_wait_ms:
            self.late += 1
            return
        self.windows.setdefault(start, []).append(sample(features, label))

    def ready(self) -> list[Batch]:
        """Windows complete under the watermark, oldest first; they leave the buffer."""
        watermark = self.watermark()
        if watermark is None:
            return []
        horizon = watermark - self.label_wait_ms
        batches = []
        for start in sorted(s for s in self.windows if s + self.window_ms < horizon):
            samples = sorted(self.windows.pop(start), key=lambda s: (s.ts, s.id))
            batches.append(Batch(start, start + self.window_ms, samples))
        if self.batch_samples is not None:
            batches = self._by_count(batches, self.batch_samples)
        # Records that can no longer meet a partner within the wait.
        while self._expiry and self._expiry[0][0] + self.window_ms < horizon:
            ts, kind, key = heapq.heappop(self._expiry)
            buffer = self.pairs.right if kind else self.pairs.left
            record = buffer.get(key)
            if record is not None and int(record["ts"]) == ts:
                del buffer[key]
                self.expired += 1
        return batches

    def _by_count(self, windows: list[Batch], size: int) -> list[Batch]:
        for window in windows:
            self.pending += window.samples
        full = len(self.pending) // size * size
        cuts = [self.pending[i : i + size] for i in range(0, full, size)]
        self.pending = self.pending[full:]
        return [Batch(s[0].ts, s[-1].ts + 1, s) for s in cuts]

    def snapshot(self) -> dict[str, Any]:
        return {
            "features": self.pairs.left,
            "labels": self.pairs.right,
            "windows": {
                str(k): [[s.id, s.ts, s.features, s.label] for s in v]
                for k, v in self.windows.items()
            },
            "pending": [[s.id, s.ts, s.features, s.label] for s in self.pending],
            "newest": self.newest,
            "late": self.late,
            "expired": self.expired,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.pairs.left = snapshot["features"]
        self.pairs.right = snapshot["labels"]
        self.windows = {
            int(k): [Sample(i, t, f, y) for i, t, f, y in v] for k, v in snapshot["windows"].items()
        }
        self.pending = [Sample(i, t, f, y) for i, t, f, y in snapshot.get("pending", [])]
        self.newest = {k: int(v) for k, v in snapshot["newest"].items()}
        self.late = int(snapshot["late"])
        self.expired = int(snapshot["expired"])
        self._expiry = [(int(r["ts"]), 0, k) for k, r in self.pairs.left.items()]
        self._expiry += [(int(r["ts"]), 1, k) for k, r in self.pairs.right.items()]
        heapq.heapify(self._expiry)
