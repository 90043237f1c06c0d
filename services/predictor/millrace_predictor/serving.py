"""Serving: follow an alias, load versions off the request path, swap one reference atomically.

A version is downloaded, its sha256 and signature are verified, it is deserialized (JSON, never
pickle) and warmed with one prediction before it replaces the current model. A failed load keeps
the current model and is counted. The last ``keep`` versions stay loaded, so switching back to
one of them (a rollback) costs nothing.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from millrace.artifacts import load_model
from millrace.envelope import Event, InvalidEvent
from millrace.features import FeatureModule, process_event
from millrace.learners.base import Classifier
from millrace.registry_client import RegistryClient

log = logging.getLogger(__name__)

SWAPS = Counter("millrace_predictor_swaps_total", "Model swaps")
FAILED_LOADS = Counter("millrace_predictor_failed_loads_total", "Versions that failed to load")
SERVING_VERSION = Gauge("millrace_predictor_serving_version", "Version being served")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    learner: Classifier
    published_at: float = 0.0


class ModelHolder:
    def __init__(
        self, client: RegistryClient, model: str, alias: str = "production", keep: int = 3
    ) -> None:
        self.client = client
        self.model = model
        self.alias = alias
        self.keep = keep
        self.current: LoadedModel | None = None
        #: The version that served before ``current`` took over (scored in shadow).
        self.previous: LoadedModel | None = None
        self._loaded: OrderedDict[int, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def switch_to(self, version: int) -> bool:
        """Serve ``version`` from now on; False (and the old model keeps serving) on failure."""
        with self._lock:
            if self.current is not None and self.current.version == version:
                return True
            loaded = self._loaded.get(version)
            if loaded is None:
                try:
                    loaded = self._load(version)
                except Exception as exc:
                    FAILED_LOADS.inc()
                    log.error(
                        "version failed to load; keeping the current one",
                        extra={"version": version, "error": str(exc)},
                    )
                    return False
                self._loaded[version] = loaded
                while len(self._loaded) > self.keep:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(version)
            previous = self.current.version if self.current else None
            self.previous = self.current
            self.current = loaded
        SWAPS.inc()
        SERVING_VERSION.set(version)
        log.info(
            "serving version", extra={"model": self.model, "version": version, "previous": previous}
        )
        return True

    def _load(self, version: int) -> LoadedModel:
        info = self.client.get_version(self.model, version)
        learner = load_model(self.client.download(self.model, version), signed=True)
        learner.predict_proba_many([{}])  # warm up before it serves
        return LoadedModel(self.model, version, learner, float(info.get("created_at", 0.0)))

    def on_model_event(self, event: dict[str, Any]) -> None:
        if event.get("model") == self.model and event.get("alias") == self.alias:
            self.switch_to(int(event["to_version"]))

    def sync(self) -> None:
        """Ask the registry which version the alias names (the fallback to model events)."""
        try:
            version = self.client.get_alias(self.model, self.alias)
        except Exception as exc:
            log.warning("registry poll failed", extra={"error": str(exc)})
            return
        if version is not None and (self.current is None or self.current.version != version):
            self.switch_to(version)

    def poll_forever(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sync()

    def start_polling(self, interval: float) -> None:
        threading.Thread(
            target=self.poll_forever, args=(interval,), name="registry-poll", daemon=True
        ).start()

    def stop(self) -> None:
        self._stop.set()


@dataclass(frozen=True)
class Scored:
    event: Event
    subject: str
    probability: float
    shadow: float | None


def score(
    module: FeatureModule,
    read_states: Callable[[Iterable[str]], dict[str, dict[str, float]]],
    model: LoadedModel,
    shadow: LoadedModel | None,
    events: Sequence[Event],
) -> list[Scored]:
    """Features by the shared module from the online state (one read for the whole batch), then
    one vectorized prediction by ``model`` and, in shadow, by its predecessor.

    Raises :class:`InvalidEvent` (with the event's index) for an event the module rejects or that
    yields no features."""
    states = read_states(e.key for e in events)
    rows: list[dict[str, float]] = []
    subjects: list[str] = []
    for index, event in enumerate(events):
        try:
            outcome = process_event(module, event, states.get(event.key, {}))
        except InvalidEvent as exc:
            raise InvalidEvent(f"event {index}: {exc.reason}", exc.kind) from None
        if outcome.features is None:
            raise InvalidEvent(
                f"event {index}: type {event.type!r} yields no features", "no_features"
            )
        rows.append(outcome.features)
        subjects.append(outcome.subject)
    probabilities = model.learner.predict_proba_many(rows)
    shadows = shadow.learner.predict_proba_many(rows) if shadow is not None else None
    return [
        Scored(
            event,
            subject,
            float(probabilities[i]),
            float(shadows[i]) if shadows is not None else None,
        )
        for i, (event, subject) in enumerate(zip(events, subjects, strict=True))
    ]
