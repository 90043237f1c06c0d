"""Secrets: none public outside development mode, asymmetric signatures, an optional read token,
no pickle unless allowed, and Kafka security settings that reach the clients."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from river.linear_model import LogisticRegression as RiverLogisticRegression

from millrace.artifacts import dump_model
from millrace.kafka import TopicSpec, ensure_topics, wait_for_broker
from millrace.learners import LogisticRegression
from millrace.learners.river_adapter import RiverLearner
from millrace.registry_client import RegistryClient, RegistryError
from millrace.settings import DEV_TOKEN, CommonSettings, MissingSecret
from millrace.signing import InvalidKey, generate_keypair
from millrace_cli.replay import replay
from millrace_featurizer.live import LiveFeaturizer
from millrace_predictor.serving import ModelHolder
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from tests.helpers import featurizer_settings, read_topic, serve
from tests.integration.test_featurizer_live import expected

pytestmark = pytest.mark.integration

NO_SECRETS = {"registry_token": None, "signing_key": None, "verify_key": None}


def test_no_secret_has_a_default_outside_development_mode(tmp_path: Path):
    bare = CommonSettings(**NO_SECRETS)
    for ask, variable in [
        (bare.token, "MILLRACE_REGISTRY_TOKEN"),
        (bare.signer, "MILLRACE_SIGNING_KEY"),
        (bare.verifier, "MILLRACE_VERIFY_KEY"),
    ]:
        with pytest.raises(MissingSecret, match=variable):
            ask()
    with pytest.raises(MissingSecret):
        create_app(RegistrySettings(data_dir=tmp_path, announce=False, **NO_SECRETS))
    dev = CommonSettings(dev_mode=True, **NO_SECRETS)
    assert dev.token() == DEV_TOKEN
    data = b"artifact"
    dev.verifier().verify(data, dev.signer().sign(data))
    assert "SecretStr" in repr(CommonSettings().registry_token)  # never printed in clear


def test_only_the_private_key_signs_and_reads_can_need_a_token(tmp_path: Path):
    private, public = generate_keypair()
    settings = RegistrySettings(
        data_dir=tmp_path,
        announce=False,
        registry_token="write-token",
        registry_read_token="read-token",
        signing_key=None,
        verify_key=public,
    )
    with serve(create_app(settings), free_port()) as url:
        trainer = RegistryClient(url, "write-token", CommonSettings(signing_key=private).signer())
        trainer.publish("m", dump_model(LogisticRegression()), {})
        # What the registry and the predictors hold cannot sign: someone else's key is refused.
        forger = RegistryClient(url, "write-token", CommonSettings().signer())
        with pytest.raises(RegistryError, match="403"):
            forger.publish("m", dump_model(LogisticRegression()), {})
        assert httpx.get(f"{url}/models/m/versions").status_code == 401
        read = {"Authorization": "Bearer read-token"}
        assert httpx.get(f"{url}/models/m/versions", headers=read).status_code == 200
        reader = RegistryClient(url, "read-token", verifier=settings.verifier())
        assert reader.download("m", 1)
        refused = httpx.post(f"{url}/models/m/rollback", json={}, headers=read)
        assert refused.status_code == 403
        assert httpx.get(f"{url}/health").status_code == 200


def test_predictors_refuse_pickle_artifacts_unless_allowed(tmp_path: Path):
    settings = RegistrySettings(data_dir=tmp_path, announce=False)
    with serve(create_app(settings), free_port()) as url:
        client = RegistryClient.from_settings(settings, signs=True, url=url)
        river = RiverLearner(RiverLogisticRegression())
        river.learn_one({"x": 1.0}, 1.0)
        client.publish("m", dump_model(river), {})
        client.move_alias("m", "production", 1, None, "a River model")
        strict = ModelHolder(client, "m")
        strict.sync()
        assert strict.serving is None, "a signed pickle loaded without MILLRACE_ALLOW_PICKLE"
        trusting = ModelHolder(client, "m", allow_pickle=True)
        trusting.sync()
        assert trusting.current is not None and trusting.current.version == 1


def test_kafka_security_settings_reach_every_client(
    kafka_sasl: tuple[str, str, str], redis_url: str, prefix: str
):
    bootstrap, user, password = kafka_sasl
    settings = CommonSettings(
        kafka_bootstrap=bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username=user,
        kafka_sasl_password=password,
        redis_url=redis_url,
        topic_prefix=prefix,
    )
    assert settings.kafka["sasl.password"] == password
    wait_for_broker(settings.kafka, timeout=30)
    topics = [settings.events_topic, settings.features_topic, settings.labels_topic]
    ensure_topics(settings.kafka, [TopicSpec(t, 1) for t in [*topics, settings.dead_letter_topic]])
    events, _ = expected("2013-01-01", "2013-01-02")
    replay(settings.kafka, settings.events_topic, events[:500])
    runner = LiveFeaturizer.from_settings(
        featurizer_settings(settings, group="featurizer", instance_id="sasl")
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        features = read_topic(
            settings.kafka, settings.features_topic, expect=1, timeout=60, idle=30
        )
        assert features, "no feature came through the SASL listener"
    finally:
        runner.stopping.set()
        thread.join(30)
    wrong = CommonSettings(**{**settings.model_dump(), "kafka_sasl_password": "wrong"})
    with pytest.raises(TimeoutError):
        wait_for_broker(wrong.kafka, timeout=5)


def test_a_signing_key_and_a_verify_key_that_do_not_belong_together_are_refused():
    private, _ = generate_keypair()
    _, someone_elses = generate_keypair()
    settings = CommonSettings(signing_key=private, verify_key=someone_elses)
    with pytest.raises(InvalidKey, match="public half"):
        RegistryClient.from_settings(settings, signs=True)
