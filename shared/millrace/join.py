"""The label join: feature records meet their labels by subject id, within a bounded wait.

Records may arrive in either order. A record whose partner has not arrived after ``wait_ms`` of
event time (measured by the newest event time seen, never the wall clock) expires and is
counted, so the buffer stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    id: str
    ts: int
    features: dict[str, float]
    label: float


class LabelJoin:
    def __init__(self, wait_ms: int = 6 * 3_600_000) -> None:
        self.wait_ms = wait_ms
        self._features: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._labels: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._watermark = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._features) + len(self._labels)

    def add_features(self, record: dict[str, Any]) -> Sample | None:
        return self._add(record, self._features, self._labels)

    def add_label(self, record: dict[str, Any]) -> Sample | None:
        return self._add(record, self._labels, self._features)

    def _add(
        self,
        record: dict[str, Any],
        mine: OrderedDict[str, dict[str, Any]],
        theirs: OrderedDict[str, dict[str, Any]],
    ) -> Sample | None:
        self._watermark = max(self._watermark, int(record["ts"]))
        partner = theirs.pop(record["id"], None)
        if partner is None:
            mine[record["id"]] = record
            self._expire()
            return None
        features, label = (record, partner) if "features" in record else (partner, record)
        return Sample(features["id"], int(features["ts"]), features["features"], label["label"])

    def _expire(self) -> None:
        horizon = self._watermark - self.wait_ms
        for buffer in (self._features, self._labels):
            while buffer:
                oldest = next(iter(buffer.values()))
                if int(oldest["ts"]) >= horizon:
                    break
                buffer.popitem(last=False)
                self.expired += 1
