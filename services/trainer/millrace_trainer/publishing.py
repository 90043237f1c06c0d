"""Publishing and promotion, apart from learning: a version per stream position at most (a
replay after a crash finds the one it published before), and `production` moved to it by
compare-and-set when the promotion policy says so."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from prometheus_client import Counter

from millrace.artifacts import dump_model, load_model
from millrace.learners.base import Classifier
from millrace.registry_client import RegistryClient, RegistryError
from millrace_trainer.settings import Promotion

log = logging.getLogger(__name__)

PUBLISHED = Counter("millrace_trainer_versions_published_total", "Versions published")


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

    def publish(self, learner: Classifier, batches: int, metadata: dict[str, Any]) -> int:
        """``learner`` as the version of stream position ``batches`` (once: the position is the
        publish's idempotency key, so a replay gets the version it published before), promoted
        if the policy says so; returns the version. Two registry calls for a new version."""
        version = self._published_before(batches)
        created = version is None
        if version is None:
            tags = {"tags": {"position": self.position(batches)}}
            answer, created = self.client.publish_keyed(
                self.model_name, dump_model(learner), tags | metadata, self.idempotency_key(batches)
            )
            version = int(answer["version"])
        if created:
            PUBLISHED.inc()
            log.info("published version", extra={"model": self.model_name, "version": version})
        else:
            log.info(
                "version already published",
                extra={"version": version, "position": self.position(batches)},
            )
        if self.promotion == "always":
            if created:  # a new version: moved from whatever production names now
                self.client.promote(
                    self.model_name, version, reason="trainer: promotion policy always"
                )
            else:
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
                reason="trainer: promotion policy always",
            )
        except RegistryError as exc:
            if exc.status != 409:
                raise
            log.warning("production moved meanwhile; not promoted", extra={"version": version})
