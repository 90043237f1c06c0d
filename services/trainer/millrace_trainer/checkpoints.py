"""Trainer checkpoints on a compacted Kafka topic, committed in the same transaction as the
consumed offsets: after a crash the trainer restores exactly the state that matches where its
consumer group resumes, so no batch is learned twice or skipped.

Each record is signed with the trainer's Ed25519 key (the one it signs models with) and verified
before anything in it is read: a River learner's state is pickle, and anyone who can write to the
topic could otherwise have the trainer unpickle their bytes."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from millrace.errors import MillraceError
from millrace.kafka import (
    Brokers,
    Durability,
    TopicSpec,
    abort_transaction,
    client_config,
    consumer_config,
    ensure_topics,
    outcome_unknown,
    read_range,
    replaceable,
    retry_retriable,
    watermarks,
)
from millrace.learners import learner_class
from millrace.signing import BadSignature, SigningKey

log = logging.getLogger(__name__)

MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
#: The record header holding the hex Ed25519 signature of the record's value.
SIGNATURE_HEADER = "millrace-signature"


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint's state whose signature was checked against the trainer's key: the only
    kind :meth:`StreamTrainer.restore` takes (the pickle of a River learner inside included)."""

    state: dict[str, Any]
    offset: int
    #: False only for a checkpoint from before they were signed (no pickle in it).
    signed: bool


def _unsigned(state: dict[str, Any], offset: int, where: str) -> VerifiedCheckpoint:
    """A checkpoint from before checkpoints were signed: taken for this release, with a
    warning, if nothing in it is pickle (no code runs from it); refused otherwise."""
    learners = [s for s in (state.get("learner"), state.get("parent_learner")) if s is not None]
    if any(learner_class(learner).uses_pickle for learner in learners):
        raise CheckpointRefused(
            f"{where} carries no signature and holds a pickled learner: refusing to start from it"
        )
    log.warning(
        "unsigned checkpoint (written before checkpoints were signed) restored; the next "
        "release refuses unsigned checkpoints",
        extra={"where": where},
    )
    return VerifiedCheckpoint(state, offset, signed=False)


class CheckpointRefused(MillraceError, RuntimeError):
    """The newest checkpoint was not signed by this trainer's key: the trainer does not start
    from it (nor silently without it)."""


class KafkaCheckpoints:
    def __init__(
        self,
        brokers: Brokers,
        topic: str,
        key: str,
        transactional_id: str,
        signer: SigningKey,
        durability: Durability = Durability(),
        commit_timeout_s: float = 30.0,
    ) -> None:
        self.brokers = brokers
        #: How long a checkpoint's commit may take before its outcome counts as unknown.
        self.commit_timeout_s = commit_timeout_s
        self.topic = topic
        self.key = key
        self.signer = signer
        self.verifier = signer.verify_key()
        ensure_topics(
            brokers,
            [
                TopicSpec(
                    topic,
                    1,
                    {"cleanup.policy": "compact", "max.message.bytes": str(MAX_CHECKPOINT_BYTES)},
                )
            ],
            durability=durability,
        )
        self.transactional_id = transactional_id
        #: Producers replaced after a commit of unknown outcome (see :meth:`_recover`).
        self.replaced = 0
        self.producer = self._new_producer()

    def _new_producer(self) -> Producer:
        producer = Producer(
            client_config(
                self.brokers,
                **{
                    "transactional.id": self.transactional_id,
                    "message.max.bytes": MAX_CHECKPOINT_BYTES,
                    "compression.type": "zstd",
                },
            )
        )
        retry_retriable(producer.init_transactions, "init_transactions", 120)
        return producer

    def load(self) -> VerifiedCheckpoint | None:
        """The newest committed checkpoint for this key, verified; None if there is none.
        Raises :class:`CheckpointRefused` if its signature is missing or does not verify."""
        reader = Consumer(
            consumer_config(
                self.brokers,
                f"checkpoint-reader-{uuid.uuid4().hex}",
                **{
                    "fetch.max.bytes": MAX_CHECKPOINT_BYTES,
                    "max.partition.fetch.bytes": MAX_CHECKPOINT_BYTES,
                },
            )
        )
        latest = None
        try:
            low, high = watermarks(reader, self.topic)[0]
            for batch in read_range(reader, self.topic, 0, low, high, batch_size=100):
                for message in batch:
                    if message.key() == self.key.encode():
                        latest = message
        finally:
            reader.close()
        if latest is None:
            return None
        value, offset = latest.value() or b"", latest.offset() or 0
        where = f"the checkpoint of {self.key!r} at {self.topic}/0 offset {offset}"
        signature = dict(latest.headers() or []).get(SIGNATURE_HEADER)
        if signature is None:
            return _unsigned(orjson.loads(value), offset, where)
        try:
            text = signature.decode(errors="replace") if isinstance(signature, bytes) else signature
            self.verifier.verify(value, text)
        except BadSignature:
            raise CheckpointRefused(
                f"{where} is not signed by this trainer's key (MILLRACE_SIGNING_KEY): someone "
                "else wrote it; refusing to start from it"
            ) from None
        return VerifiedCheckpoint(orjson.loads(value), offset, signed=True)

    def commit(
        self, state: dict[str, Any], offsets: list[TopicPartition], consumer: Consumer
    ) -> int:
        """Write ``state`` and commit ``offsets`` for ``consumer``'s group, atomically; returns
        the checkpoint's size in bytes."""
        data = orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            self.producer.begin_transaction()
            signature = self.signer.sign(data).encode()
            self.producer.produce(
                self.topic, data, self.key.encode(), headers=[(SIGNATURE_HEADER, signature)]
            )
            group = consumer.consumer_group_metadata()
            retry_retriable(
                lambda left: self.producer.send_offsets_to_transaction(offsets, group, left),
                "send_offsets_to_transaction",
                self.commit_timeout_s,
            )
            retry_retriable(
                self.producer.commit_transaction, "commit_transaction", self.commit_timeout_s
            )
        except KafkaException as exc:
            self._recover(exc)
            raise CheckpointFailed(str(exc.args[0])) from exc
        return len(data)

    def _recover(self, exc: KafkaException) -> None:
        """After a failed checkpoint: abort what Kafka asks to abort; but a commit whose outcome
        is unknown (timed out, a coordinator away) is never aborted, since the abort could land
        on the next transaction (KAFKA-17754, librdkafka has no transaction protocol v2), and a
        producer that cannot go on for a reason other than a fence is not kept either. Both get
        a new producer: its ``init_transactions`` bumps the epoch, which completes or aborts
        the old transaction first. Either outcome is a consistent checkpoint, since the state
        and the offsets commit together; a fence raises :class:`ServiceFailed`."""
        if exc.args[0].txn_requires_abort() or not (outcome_unknown(exc) or replaceable(exc)):
            abort_transaction(self.producer, exc)
            return
        log.error("checkpoint outcome unknown; replacing the producer", extra={"error": str(exc)})
        self.replaced += 1
        self.producer = self._new_producer()


class CheckpointFailed(MillraceError, RuntimeError):
    """A checkpoint was not written (and its transaction aborted); the next one may be."""
