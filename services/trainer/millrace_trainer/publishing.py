"""Publishing and promotion, apart from learning: a version per stream position at most (a
replay after a crash finds the one it published before), and `production` moved to it when the
promotion policy says so.

The registry's calls run in a process of their own (a worker the trainer starts, fed over a
pipe), so the poll loop goes on learning while a version is uploaded, and the HTTP client's
Python does not take turns with the loop for the interpreter lock: the loop hands over the
model's bytes and metadata at the position (:meth:`Publisher.submit`), the worker publishes them
in the order given (a version's parent is the one before, whose number it has by then), and a
checkpoint first waits for every version handed over (:meth:`Publisher.flush`), so no committed
offset lies past a version not yet published. A failed publish stops publishing; the loop
raises it at its next call, and the restarted trainer replays from its checkpoint and publishes
it again (a version the worker finished after its trainer was killed is found again by its
idempotency key). The worker watches its trainer and ends with it, killed or not."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from millrace.artifacts import load_model
from millrace.errors import MillraceError
from millrace.learners.base import Classifier
from millrace.logs import configure_logging
from millrace.registry_client import RegistryClient, RegistryError
from millrace_trainer.settings import Promotion

log = logging.getLogger(__name__)

PROMOTED_BECAUSE = "trainer: promotion policy always"
PUBLISHED = Counter("millrace_trainer_versions_published_total", "Versions published")
#: Versions handed over and not yet published, at most (then submit waits, and a registry that
#: stops answering stalls the loop as it would without a worker); a poll can make several.
MAX_WAITING = 64


@dataclass
class PendingVersion:
    """A version handed to the publishing worker: its number once the registry gave it."""

    position: int
    version: int | None = None


class PublishFailed(MillraceError, RuntimeError):
    """A version handed over could not be published (the cause is chained)."""


class Registrar:
    """The registry's calls for this model's versions, in whichever process makes them."""

    def __init__(
        self, client: RegistryClient, model_name: str, run_key: str, promotion: Promotion
    ) -> None:
        self.client = client
        self.model_name = model_name
        #: Positions are this run's: ``run_key/batches``, a version's ``position`` tag.
        self.run_key = run_key
        self.promotion = promotion
        #: Until a publish finds no version at its position (see _published_before).
        self.replaying = True

    def position(self, batches: int) -> str:
        return f"{self.run_key}/{batches}"

    def published_at(self, batches: int) -> int | None:
        """The version published at this stream position, if any."""
        found = self.client.list_versions(
            self.model_name, limit=1, tag=("position", self.position(batches))
        )
        return int(found["items"][0]["version"]) if found["items"] else None

    def download(self, version: int) -> Classifier:
        """A published version's model (verified by the client before it is loaded)."""
        return load_model(self.client.download(self.model_name, version), allow_pickle=True)

    def publish_bytes(
        self, artifact: bytes, batches: int, metadata: dict[str, Any]
    ) -> tuple[int, bool]:
        """``artifact`` as the version of stream position ``batches`` (once: the position is the
        publish's idempotency key, so a replay gets the version it published before), promoted
        if the policy says so; returns (the version, True if this call made it). One registry
        call for a new version."""
        version = self._published_before(batches)
        created = version is None
        if version is None:
            tags = {"tags": {"position": self.position(batches)}}
            answer, created = self.client.publish_keyed(
                self.model_name,
                artifact,
                tags | metadata,
                self.idempotency_key(batches),
                promote="production" if self.promotion == "always" else None,
                reason=PROMOTED_BECAUSE,
            )
            version = int(answer["version"])
        if created:  # and promoted with it, under the policy "always"
            log.info("published version", extra={"model": self.model_name, "version": version})
            return version, True
        log.info(
            "version already published",
            extra={"version": version, "position": self.position(batches)},
        )
        if self.promotion == "always":  # unless someone moved production meanwhile
            self.promote(version)
        return version, False

    def _published_before(self, batches: int) -> int | None:
        """The version at this position by its tag, looked up only while this process replays
        what an earlier one published (versions of releases before the position was the
        idempotency key have none): from the first position not found on, none follows."""
        if not self.replaying:
            return None
        version = self.published_at(batches)
        self.replaying = version is not None
        return version

    def idempotency_key(self, batches: int) -> str:
        """The registry's key of this model's version at this position (its allowed
        characters and length, whatever the model's and the run's names)."""
        digest = hashlib.sha256(f"{self.model_name}\0{self.position(batches)}".encode())
        return f"position-{digest.hexdigest()[:40]}"

    def promote(self, version: int) -> None:
        """Move production to ``version`` by compare-and-set, unless it names it already or
        someone moved it between the read and the move."""
        current = self.client.get_alias(self.model_name, "production")
        if current == version:
            return
        try:
            self.client.move_alias(
                self.model_name,
                "production",
                version,
                current,
                reason=PROMOTED_BECAUSE,
            )
        except RegistryError as exc:
            if exc.status != 409:
                raise
            log.warning("production moved meanwhile; not promoted", extra={"version": version})


class Publisher:
    """Hands versions to the publishing worker, in order, and learns their numbers."""

    def __init__(
        self, client: RegistryClient, model_name: str, run_key: str, promotion: Promotion
    ) -> None:
        #: This process's own calls (a restart's lookups); the worker makes the same client.
        self.registrar = Registrar(client, model_name, run_key, promotion)
        self._worker: ProcessPoolExecutor | None = None
        self._handed_over: deque[tuple[Future[tuple[int, bool]], PendingVersion]] = deque()
        self._failure: BaseException | None = None

    def published_at(self, batches: int) -> int | None:
        return self.registrar.published_at(batches)

    def download(self, version: int) -> Classifier:
        return self.registrar.download(version)

    def start(self) -> None:
        """Start the worker now (a new interpreter takes a second or two to import what it
        needs), so that it is ready by the first version."""
        if self._worker is None:
            registrar = self.registrar
            self._worker = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(
                    registrar.client.portable(),
                    registrar.model_name,
                    registrar.run_key,
                    registrar.promotion,
                    logging.getLevelName(logging.getLogger().getEffectiveLevel()),
                ),
            )

    def worker_pid(self) -> int:
        """The publishing worker's process id (it answers after the versions handed over)."""
        self.start()
        assert self._worker is not None
        return self._worker.submit(os.getpid).result()

    def submit(
        self,
        artifact: bytes,
        batches: int,
        metadata: dict[str, Any],
        parent: int | PendingVersion | None,
    ) -> PendingVersion:
        """Publish ``artifact`` as the version of position ``batches`` on the worker;
        ``metadata["lineage"]["parent"]`` is set to ``parent``'s number there."""
        self.raise_if_failed()
        self.start()
        assert self._worker is not None
        while len(self._handed_over) >= MAX_WAITING:
            self._settle_oldest()
        if isinstance(parent, PendingVersion):  # numbered by the worker, if not known yet
            parent_number, parent_position = parent.version, parent.position
        else:
            parent_number, parent_position = parent, None
        pending = PendingVersion(batches)
        future = self._worker.submit(
            _publish_on_worker, artifact, batches, metadata, parent_number, parent_position
        )
        self._handed_over.append((future, pending))
        return pending

    def note_published(self) -> None:
        """Take the numbers of the versions published since, in order (it does not wait)."""
        while self._handed_over and self._handed_over[0][0].done():
            self._settle_oldest()

    def flush(self) -> None:
        """Wait until every version handed over is published; raise if one could not be."""
        while self._handed_over:
            self._settle_oldest()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise PublishFailed(f"publishing a version failed: {self._failure}") from self._failure

    def _settle_oldest(self) -> None:
        future, pending = self._handed_over.popleft()
        try:
            pending.version, created = future.result()
        except Exception as exc:  # raised in the loop's thread (raise_if_failed)
            if self._failure is None:
                log.error("publishing a version failed", extra={"error": str(exc)})
                self._failure = exc
            return
        if created:
            PUBLISHED.inc()

    def close(self) -> None:
        """Stop the worker (what was handed over and not published yet is dropped: a trainer
        settles before it closes, and one that failed replays it after its restart)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None


# -- the worker process ----------------------------------------------------------------------

_registrar: Registrar | None = None
#: Position -> version, of what this worker published (a parent whose number the trainer did
#: not know yet when it handed its child version over).
_published: dict[int, int] = {}


def _start_worker(
    client: dict[str, Any], model_name: str, run_key: str, promotion: Promotion, level: str
) -> None:
    global _registrar
    configure_logging("trainer-publisher", level)
    threading.Thread(target=_end_with_the_trainer, name="parent-watch", daemon=True).start()
    _registrar = Registrar(RegistryClient.from_portable(client), model_name, run_key, promotion)


def _end_with_the_trainer() -> None:
    """A killed trainer's worker ends at once (its pipe alone does not tell it): what it was
    publishing, the restarted trainer publishes again under the same idempotency key."""
    trainer = multiprocessing.parent_process()
    if trainer is not None:
        multiprocessing.connection.wait([trainer.sentinel])
        os._exit(1)


def _publish_on_worker(
    artifact: bytes,
    batches: int,
    metadata: dict[str, Any],
    parent: int | None,
    parent_position: int | None,
) -> tuple[int, bool]:
    assert _registrar is not None, "the worker's initializer did not run"
    try:
        if parent is None and parent_position is not None:
            parent = _published[parent_position]
        metadata["lineage"]["parent"] = parent
        version, created = _registrar.publish_bytes(artifact, batches, metadata)
    except Exception as exc:
        # Pickled back to the trainer: as text, whatever the exception's own constructor takes
        # (one that does not unpickle would break the pool and hide the cause).
        raise WorkerFailed(f"{type(exc).__name__}: {exc}") from None
    _published[batches] = version
    return version, created


class WorkerFailed(MillraceError, RuntimeError):
    """What failed in the publishing worker, as its type's name and its text."""
