"""Publishing and promotion, apart from learning: a version per stream position at most (a
replay after a crash finds the one it published before), and `production` moved to it when the
promotion policy says so.

The registry's calls run on a thread of their own, so the poll loop goes on learning while a
version is uploaded: the loop hands over the model's bytes and metadata at the position
(:meth:`Publisher.submit`), the thread publishes them in the order given (a version's parent is
the one before, whose number it has by then), and a checkpoint first waits for every version
handed over (:meth:`Publisher.flush`), so no committed offset lies past a version not yet
published. A failed publish stops the thread; the loop raises it at its next call, and the
restarted trainer replays from its checkpoint and publishes it again."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from millrace.artifacts import load_model
from millrace.errors import MillraceError
from millrace.learners.base import Classifier
from millrace.registry_client import RegistryClient, RegistryError
from millrace_trainer.settings import Promotion

log = logging.getLogger(__name__)

PROMOTED_BECAUSE = "trainer: promotion policy always"
PUBLISHED = Counter("millrace_trainer_versions_published_total", "Versions published")


@dataclass
class PendingVersion:
    """A version handed to the publishing thread: its number once the registry gave it."""

    position: int
    version: int | None = None


@dataclass
class _Job:
    artifact: bytes
    batches: int
    metadata: dict[str, Any]
    parent: int | PendingVersion | None
    pending: PendingVersion = field(repr=False)


class PublishFailed(MillraceError, RuntimeError):
    """A version handed over could not be published (the cause is chained)."""


class Publisher:
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
        # Versions handed over and not yet published, at most this many (then submit waits,
        # and a registry that stops answering stalls the loop as it did before).
        self._jobs: queue.Queue[_Job] = queue.Queue(maxsize=64)
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(
        self,
        artifact: bytes,
        batches: int,
        metadata: dict[str, Any],
        parent: int | PendingVersion | None,
    ) -> PendingVersion:
        """Publish ``artifact`` as the version of position ``batches`` on the publishing thread;
        ``metadata["lineage"]["parent"]`` is set to ``parent``'s number then."""
        self.raise_if_failed()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="publisher", daemon=True)
            self._thread.start()
        pending = PendingVersion(batches)
        self._jobs.put(_Job(artifact, batches, metadata, parent, pending))
        return pending

    def flush(self) -> None:
        """Wait until every version handed over is published; raise if one could not be."""
        self._jobs.join()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise PublishFailed(f"publishing a version failed: {self._failure}") from self._failure

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if self._failure is None:  # after a failure, the later versions' parents are off
                    parent = job.parent
                    if isinstance(parent, PendingVersion):
                        parent = parent.version
                    job.metadata["lineage"]["parent"] = parent
                    job.pending.version = self.publish_bytes(
                        job.artifact, job.batches, job.metadata
                    )
            except Exception as exc:  # raised in the loop's thread (raise_if_failed)
                log.error("publishing a version failed", extra={"error": str(exc)})
                self._failure = exc
            finally:
                self._jobs.task_done()

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

    def publish_bytes(self, artifact: bytes, batches: int, metadata: dict[str, Any]) -> int:
        """``artifact`` as the version of stream position ``batches`` (once: the position is the
        publish's idempotency key, so a replay gets the version it published before), promoted
        if the policy says so; returns the version. One registry call for a new version."""
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
            PUBLISHED.inc()
            log.info("published version", extra={"model": self.model_name, "version": version})
            return version
        log.info(
            "version already published",
            extra={"version": version, "position": self.position(batches)},
        )
        if self.promotion == "always":  # unless someone moved production meanwhile
            self.promote(version)
        return version

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
