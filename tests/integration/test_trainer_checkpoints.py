"""Checkpoints are signed by the trainer's key and verified before anything in them is read: a
record written by anyone else (another key, or no signature) is refused with a clear error, and
the trainer does not start from it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from millrace.learners import LogisticRegression
from millrace.signing import SigningKey, generate_keypair
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from millrace_trainer.checkpoints import SIGNATURE_HEADER, CheckpointRefused, KafkaCheckpoints
from tests.helpers import serve

pytestmark = pytest.mark.integration

#: What a forger would put in: a River learner's state is pickle, run when it is loaded.
FORGED = orjson.dumps({"learner": {"kind": "river", "pickle": "gASVAAAAAAAAAAA="}, "version": 9})


def forge(bootstrap: str, topic: str, key: str, headers: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, FORGED, key.encode(), headers=headers)
    assert producer.flush(30) == 0


def checkpoints(bootstrap: str, topic: str, key: str, signer: SigningKey) -> KafkaCheckpoints:
    return KafkaCheckpoints(bootstrap, topic, key, f"test-{uuid.uuid4().hex}", signer)


def test_a_checkpoint_signed_by_another_key_or_unsigned_is_refused(kafka_bootstrap, prefix):
    topic, key = f"{prefix}trainer-checkpoints", "group/model"
    ours = SigningKey.from_text(generate_keypair()[0])
    theirs = SigningKey.from_text(generate_keypair()[0])
    store = checkpoints(kafka_bootstrap, topic, key, ours)
    assert store.load() is None

    forge(kafka_bootstrap, topic, key, [(SIGNATURE_HEADER, theirs.sign(FORGED).encode())])
    with pytest.raises(CheckpointRefused, match="not signed by this trainer's key"):
        store.load()
    forge(kafka_bootstrap, topic, key, [])
    with pytest.raises(CheckpointRefused, match="no signature and holds a pickled learner"):
        store.load()
    # Ours, signed: the state comes back (another key's store refuses the same record).
    forge(kafka_bootstrap, topic, key, [(SIGNATURE_HEADER, ours.sign(FORGED).encode())])
    verified = store.load()
    assert verified is not None and verified.signed and verified.state == orjson.loads(FORGED)
    with pytest.raises(CheckpointRefused):
        checkpoints(kafka_bootstrap, topic, key, theirs).load()


def test_an_unsigned_checkpoint_from_before_without_pickle_is_taken_with_a_warning(
    kafka_bootstrap, prefix, caplog: pytest.LogCaptureFixture
):
    topic, key = f"{prefix}trainer-checkpoints", "group/model"
    store = checkpoints(kafka_bootstrap, topic, key, SigningKey.from_text(generate_keypair()[0]))
    older = orjson.dumps({"learner": LogisticRegression().state(), "parent_learner": None})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, older, key.encode())
    assert producer.flush(30) == 0
    with caplog.at_level(logging.WARNING):
        restored = store.load()
    assert restored is not None and not restored.signed
    assert "unsigned checkpoint" in caplog.text


def test_the_trainer_does_not_start_from_a_forged_checkpoint(
    kafka_bootstrap, prefix, tmp_path: Path
):
    theirs = SigningKey.from_text(generate_keypair()[0])
    key = f"{prefix}millrace-trainer/forged-model"
    topic = f"{prefix}trainer-checkpoints"
    checkpoints(kafka_bootstrap, topic, key, theirs)  # makes the topic as the trainer does
    forge(kafka_bootstrap, topic, key, [(SIGNATURE_HEADER, theirs.sign(FORGED).encode())])
    port = free_port()
    registry = RegistrySettings(data_dir=tmp_path / "registry", port=port, announce=False)
    with serve(create_app(registry), port) as url:
        env = {
            "MILLRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "MILLRACE_TOPIC_PREFIX": prefix,
            "MILLRACE_REGISTRY_URL": url,
            "MILLRACE_MODEL_NAME": "forged-model",
            "MILLRACE_PORT": str(free_port()),
        }
        trainer = subprocess.run(
            [sys.executable, "-m", "millrace_trainer"],
            env={**os.environ, **env},
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    said = trainer.stdout + trainer.stderr
    assert trainer.returncode == 2, said[-2000:]
    assert "not signed by this trainer's key" in said
    assert "restored checkpoint" not in said
