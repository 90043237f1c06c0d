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
from dataclasses import dataclass
from typing import Any

from millrace.artifacts import load_model
from millrace.learners.base import Learner
from millrace.registry_client import RegistryClient
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

SWAPS = Counter("millrace_predictor_swaps_total", "Model swaps")
FAILED_LOADS = Counter("millrace_predictor_failed_loads_total", "Versions that failed to load")
SERVING_VERSION = Gauge("millrace_predictor_serving_version", "Version being served")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    learner: Learner


class ModelHolder:
    def __init__(
        self, client: RegistryClient, model: str, alias: str = "production", keep: int = 3
    ) -> None:
        self.client = client
        self.model = model
        self.alias = alias
        self.keep = keep
        self.current: LoadedModel | None = None
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
            self.current = loaded
        SWAPS.inc()
        SERVING_VERSION.set(version)
        log.info(
            "serving version", extra={"model": self.model, "version": version, "previous": previous}
        )
        return True

    def _load(self, version: int) -> LoadedModel:
        learner = load_model(self.client.download(self.model, version))
        learner.predict_proba_one({})
        return LoadedModel(self.model, version, learner)

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
