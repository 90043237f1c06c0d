"""The feature-module API a user writes once.

A feature module names the event types it reads and, for each event, may

- emit a **feature record** for a *subject* (the thing a prediction is about, e.g. a flight),
  computed from the event and the entity's online state *before* the event;
- emit a **label** for a subject, which the trainer joins with the feature record by subject id;
- **update** the entity's state (a flat mapping of field -> float).

State belongs to the entity named by the event's key (the Kafka message key). Per-key order is
offset order, so any number of partitions or replicas computes the same features as a backfill
over the same events. A feature over another entity (say, an airport's delay rate in a module
keyed by aircraft) needs a stream keyed by that entity, with its own module: a module only ever
sees the state of the key of the event in hand.

Lateness is decided by event time only: an event older than the newest event time seen for its
key minus ``allowed_lateness_ms`` is late. Both runners apply the one policy: a late event is
counted and sent to the dead-letter topic (kind ``late``) and changes nothing. State field names
starting with ``__`` are reserved for the runners (``__max_ts`` holds the newest event time).

The runners (live, backfill, the predictor) all call :func:`process_event`; nothing else
computes features.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import msgspec

from millrace.dotted import load_object
from millrace.envelope import Event, EventDecoder, InvalidEvent

State = Mapping[str, float]


class Outcome(msgspec.Struct, frozen=True, gc=False):
    subject: str
    features: dict[str, float] | None = None
    label: float | None = None
    state_update: dict[str, float] = {}


class FeatureModule(ABC):
    """Subclass this, list ``event_types``, declare their ``payload_schemas``, and implement
    :meth:`subject` and whichever of :meth:`features`, :meth:`label` and :meth:`update` the
    module needs."""

    name: ClassVar[str]
    version: ClassVar[int]
    event_types: ClassVar[frozenset[str]]
    #: Names of the features :meth:`features` may emit (prefix match for one-hot families such
    #: as ``carrier=``); part of the feature schema hash.
    feature_names: ClassVar[tuple[str, ...]]
    #: How far behind its key's newest event time an event may be (None: never late).
    allowed_lateness_ms: ClassVar[int | None] = None
    #: The payload (``data``) schema of each event type: a ``msgspec.Struct`` with its types and
    #: ranges (``Annotated[int, msgspec.Meta(ge=0)]``). Every runner and the predictor decode
    #: ``data`` into it (an event that does not fit is rejected with the reason), and the
    #: predictor's OpenAPI document shows it. A type without a schema keeps ``data`` a dict.
    payload_schemas: ClassVar[Mapping[str, type[msgspec.Struct]]] = {}
    #: The event types that yield features, i.e. what ``POST /predict`` takes (None: all).
    feature_event_types: ClassVar[frozenset[str] | None] = None

    @abstractmethod
    def subject(self, event: Event) -> str:
        """The id that joins this event's features with its label."""

    def validate(self, event: Event) -> None:
        """Raise :class:`InvalidEvent` when ``event.data`` is not usable beyond what its schema
        says (a rule across fields, say)."""
        return None

    def features(self, event: Event, state: State) -> dict[str, float] | None:
        """Features for the event's subject, from the event and the state before it."""
        return None

    def label(self, event: Event) -> float | None:
        """The label this event reveals for its subject, if any."""
        return None

    def update(self, event: Event, state: State) -> dict[str, float]:
        """State fields to set after this event."""
        return {}


def process_event(module: FeatureModule, event: Event, state: State) -> Outcome:
    """Run one validated-envelope event through ``module``; raises :class:`InvalidEvent`.

    Whatever the module's own code raises for one event is that event's fault as far as the
    pipeline can tell (a value the validation let through, say a timestamp ``datetime`` cannot
    hold): it becomes an :class:`InvalidEvent` of kind ``module_error``, so the runners
    dead-letter the event and the predictor answers 422, instead of one event stopping the
    stream on every restart."""
    if event.type not in module.event_types:
        raise InvalidEvent(f"unknown event type {event.type!r}", "unknown_type")
    try:
        module.validate(event)
        update = module.update(event, state)
        if update and not all(map(math.isfinite, update.values())):
            raise ValueError(f"state update has a value that is not a finite number: {update}")
        return Outcome(
            module.subject(event), module.features(event, state), module.label(event), update
        )
    except InvalidEvent:
        raise
    except Exception as exc:
        reason = f"feature module failed: {type(exc).__name__}: {exc}"
        raise InvalidEvent(reason[:500], "module_error") from exc


def event_decoder(module: FeatureModule) -> EventDecoder:
    """The decoder of ``module``'s envelopes: its event types, their payload schemas."""
    return EventDecoder(module.payload_schemas, module.event_types)


def feature_schema_hash(module: FeatureModule) -> str:
    spec = f"{module.name}/v{module.version}:" + ",".join(module.feature_names)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def load_feature_module(path: str) -> FeatureModule:
    """Instantiate a module from ``package.module:ClassName`` (or a dotted path)."""
    if not path:
        raise ValueError(
            "no feature module: set feature_module in the settings file (millrace.toml, or "
            "the file MILLRACE_CONFIG names) or MILLRACE_FEATURE_MODULE"
        )
    instance = load_object(path, "feature module")()
    if not isinstance(instance, FeatureModule):
        raise ValueError(f"{path!r} is not a FeatureModule subclass")
    return instance
