"""The backfill runner: the live runner's loop body over a bounded set of events.

It calls the same :class:`~millrace.featurize.Featurizer` on batches of events, keeping the
online state in memory, and returns the feature and label records exactly as the live runner
would have produced them (as decoded dicts, in the same order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from millrace.featurize import Featurizer, SourceEvent, StateLoader

log = logging.getLogger(__name__)


@dataclass
class BackfillResult:
    features: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    dead: list[tuple[bytes, str]] = field(default_factory=list)
    state: dict[str, dict[str, float]] = field(default_factory=dict)


def backfill(
    featurizer: Featurizer, events: Iterable[Mapping[str, Any]], batch_size: int = 10_000
) -> BackfillResult:
    result = BackfillResult()

    def load(entities: Iterable[str]) -> dict[str, dict[str, float]]:
        # The batch mutates what it is handed, so the in-memory store is the state itself.
        return {e: result.state.setdefault(e, {}) for e in entities}

    batch: list[SourceEvent] = []
    offset = 0
    for event in events:
        key = event.get("key")
        batch.append(
            SourceEvent(
                orjson.dumps(event), key.encode() if isinstance(key, str) else None, 0, offset
            )
        )
        offset += 1
        if len(batch) >= batch_size:
            _run(featurizer, batch, load, result)
            batch = []
    if batch:
        _run(featurizer, batch, load, result)
    log.info(
        "backfill done",
        extra={"events": offset, "features": len(result.features), "labels": len(result.labels)},
    )
    return result


def _run(
    featurizer: Featurizer, batch: list[SourceEvent], load: StateLoader, result: BackfillResult
) -> None:
    out = featurizer.run_batch(batch, load)
    result.features.extend(orjson.loads(v) for _, v in out.features)
    result.labels.extend(orjson.loads(v) for _, v in out.labels)
    result.dead.extend((d.source.value, d.reason) for d in out.dead)
