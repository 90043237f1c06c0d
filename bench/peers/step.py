"""What every peer app runs per event: the Millrace feature module's own per-event step, with
the peer's per-key state, so that the peers compute byte-identical records. Only the runtime
around it (consuming, state storage, delivery guarantees) is the peer's."""

from __future__ import annotations

import json
import time

from millrace.features import load_feature_module
from millrace.featurize import Featurizer, SourceEvent

MODULE = "millrace_flights.features:FlightsFeatures"


class Step:
    """``step(value, key, state)`` -> the feature and label records of one event, in bytes;
    ``state`` (the entity's) is changed in place."""

    def __init__(self) -> None:
        self.featurizer = Featurizer(load_feature_module(MODULE))

    def __call__(self, value: bytes, key: bytes, state: dict[str, float]) -> list[bytes]:
        result = self.featurizer.run_batch(
            [SourceEvent(value, key, 0, 0)], lambda entities: dict.fromkeys(entities, state)
        )
        return [v for _, v in result.features] + [v for _, v in result.labels]


class Clock:
    """Events per second from the first event (start-up and the group join not counted) until
    the app returns after the last one: its final commit or flush included, as the live
    featurizer's count includes each batch's commit."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = 0.0

    def tick(self) -> bool:
        """Count one event; True when it was the last."""
        self.done += 1
        if self.done == 1:
            self.started = time.perf_counter()
        return self.done >= self.total

    def report(self) -> None:
        """One JSON line with the rate, once the app has returned."""
        if self.done < self.total:
            raise SystemExit(f"only {self.done} of {self.total} events were processed")
        rate = (self.total - 1) / (time.perf_counter() - self.started)
        print(json.dumps({"events_per_s": rate}), flush=True)
