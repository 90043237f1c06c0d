"""Serving: follow an alias, load versions off the request path, swap one reference atomically.

A version is downloaded, its sha256 and signature are verified, it is deserialized (JSON; a
pickle-based learner only with ``MILLRACE_ALLOW_PICKLE``, since River's state is code) and warmed
with one prediction before it replaces the current model. A failed load keeps the current model
and is counted. The last ``keep`` versions stay loaded, so switching back to one of them (a
rollback) costs nothing.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from millrace.artifacts import load_model
from millrace.envelope import Event, InvalidEvent
from millrace.errors import MillraceError
from millrace.features import FeatureModule, process_event
from millrace.learners.base import Classifier
from millrace.registry_client import RegistryClient
from millrace.registry_models import AliasMove

log = logging.getLogger(__name__)

SWAPS = Counter("millrace_predictor_swaps_total", "Model swaps")
FAILED_LOADS = Counter("millrace_predictor_failed_loads_total", "Versions that failed to load")
REFUSED = Counter(
    "millrace_predictor_refused_versions_total",
    "Versions refused: trained on features another feature module computes",
)


class VersionRefused(MillraceError):
    """A version this predictor must not serve (the reason says why)."""


SERVING_VERSION = Gauge("millrace_predictor_serving_version", "Version being served")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    learner: Classifier
    published_at: float = 0.0


@dataclass(frozen=True)
class Serving:
    """What serves, swapped as one reference: a request reads it once, so it never pairs a new
    model with a stale shadow."""

    current: LoadedModel
    #: The version that served before ``current`` took over (scored in shadow).
    previous: LoadedModel | None
    #: The alias's sequence number this state follows from (0: unknown).
    seq: int


class ModelHolder:
    """Follows one alias. Moves come from the model-events topic and from polling the
    registry; each carries the alias's sequence number, and a move not above the one held
    (a late or reordered announcement, an old history) is ignored."""

    def __init__(
        self,
        client: RegistryClient,
        model: str,
        alias: str = "production",
        keep: int = 3,
        allow_pickle: bool = False,
        feature_schema: str | None = None,
    ) -> None:
        self.client = client
        #: The feature schema hash of the module this predictor runs: a version trained on
        #: another's features is refused (its inputs would be silently wrong).
        self.feature_schema = feature_schema
        #: version -> why it was refused (kept, so a refused version is not fetched again).
        self.refused: dict[int, str] = {}
        self.allow_pickle = allow_pickle
        self.model = model
        self.alias = alias
        self.keep = keep
        self.serving: Serving | None = None
        self._loaded: OrderedDict[int, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    @property
    def current(self) -> LoadedModel | None:
        serving = self.serving
        return serving.current if serving else None

    def switch_to(self, version: int, seq: int = 0) -> bool:
        """Serve ``version`` from now on, unless the alias state ``seq`` is older than the one
        held; False (and the old model keeps serving) if it fails to load."""
        with self._lock:
            serving = self.serving
            if serving is not None:
                if seq and seq <= serving.seq:  # stale: the alias has moved on since
                    return serving.current.version == version
                if serving.current.version == version:
                    self.serving = Serving(serving.current, serving.previous, max(seq, serving.seq))
                    return True
            if version in self.refused:
                return False
            loaded = self._loaded.get(version)
            if loaded is None:
                try:
                    loaded = self._load(version)
                except VersionRefused as exc:
                    REFUSED.inc()
                    self.refused[version] = str(exc)
                    log.error(
                        "version refused; keeping the current one",
                        extra={"version": version, "reason": str(exc)},
                    )
                    return False
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
            previous = serving.current if serving else None
            self.serving = Serving(loaded, previous, seq)
        SWAPS.inc()
        SERVING_VERSION.set(version)
        log.info(
            "serving version",
            extra={
                "model": self.model,
                "version": version,
                "previous": previous.version if previous else None,
                "seq": seq,
            },
        )
        return True

    def _load(self, version: int) -> LoadedModel:
        info = self.client.get_version(self.model, version)
        trained_on = info["metadata"].get("lineage", {}).get("feature_schema")
        if self.feature_schema and trained_on and trained_on != self.feature_schema:
            raise VersionRefused(
                f"version {version} was trained on feature schema {trained_on}, but this "
                f"predictor's feature module computes {self.feature_schema}"
            )
        learner = load_model(self.client.download(self.model, version), self.allow_pickle)
        learner.predict_proba_many([{}])  # warm up before it serves
        return LoadedModel(self.model, version, learner, info["created_at"])

    def on_model_event(self, move: AliasMove) -> None:
        if move["model"] == self.model and move["alias"] == self.alias:
            self.switch_to(move["to_version"], move["seq"])

    def sync(self) -> None:
        """Ask the registry which version the alias names (the fallback to model events)."""
        try:
            state = self.client.alias_state(self.model, self.alias)
        except Exception as exc:
            log.warning("registry poll failed", extra={"error": str(exc)})
            return
        if state is not None:
            self.switch_to(state["version"], state["seq"])

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
