"""One settings file for every process, and `millrace produce` for a user's own events."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaException
from typer.testing import CliRunner

from millrace.kafka import ensure_topics, pipeline_topics
from millrace.loading import OrderedProducer, produce_all
from millrace.settings import CommonSettings
from millrace_cli.app import app
from millrace_featurizer.settings import FeaturizerSettings
from millrace_trainer.settings import TrainerSettings
from tests.helpers import read_topic

pytestmark = pytest.mark.integration


def envelope(i: int, ts: int, key: str = "sensor-1") -> dict:
    return {"id": f"e{i}", "type": "reading", "key": key, "ts": ts, "data": {"celsius": 20 + i}}


def test_the_settings_file_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch):
    config = tmp_path / "millrace.toml"
    config.write_text('model_name = "room-temperature"\ntopic_prefix = "rooms."\nbatch_size = 7\n')
    monkeypatch.setenv("MILLRACE_CONFIG", str(config))
    assert CommonSettings().model_name == "room-temperature"
    assert FeaturizerSettings().batch_size == 7
    assert FeaturizerSettings().events_topic == "rooms.events"
    monkeypatch.setenv("MILLRACE_MODEL_NAME", "from-the-environment")
    assert FeaturizerSettings().model_name == "from-the-environment"


def test_an_unknown_setting_is_refused_with_a_suggestion(tmp_path: Path, monkeypatch):
    config = tmp_path / "millrace.toml"
    config.write_text('feature_modul = "mine:Module"\n')
    monkeypatch.setenv("MILLRACE_CONFIG", str(config))
    answer = CliRunner().invoke(app, ["produce", str(tmp_path / "none.jsonl")])
    assert answer.exit_code == 2
    assert "unknown setting 'feature_modul'" in answer.output
    assert "feature_module" in answer.output


def test_produce_publishes_in_event_time_order_and_refuses_bad_files(
    kafka_bootstrap: str, prefix: str, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("MILLRACE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("MILLRACE_TOPIC_PREFIX", prefix)
    settings = CommonSettings()
    ensure_topics(kafka_bootstrap, pipeline_topics(settings, partitions=1))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(orjson.dumps(envelope(0, 5)) + b"\n{not json\n" + b'{"id": "x"}\n')
    answer = CliRunner().invoke(app, ["produce", str(bad)])
    assert answer.exit_code == 2
    assert "2 events of" in answer.output and "event 2: malformed JSON" in answer.output

    good = tmp_path / "events.jsonl"
    shuffled = [envelope(2, 300), envelope(0, 100), envelope(1, 200), envelope(3, 200, "s-2")]
    good.write_bytes(b"\n".join(orjson.dumps(e) for e in shuffled) + b"\n")
    answer = CliRunner().invoke(app, ["produce", str(good)])
    assert answer.exit_code == 0, answer.output
    assert f"4 events -> {settings.events_topic}" in answer.output
    messages = read_topic(kafka_bootstrap, settings.events_topic, expect=4)
    assert [orjson.loads(m.value())["id"] for m in messages] == ["e0", "e1", "e3", "e2"]
    assert [m.key() for m in messages] == [b"sensor-1", b"sensor-1", b"s-2", b"sensor-1"]


def test_a_relative_path_in_the_settings_file_is_relative_to_the_file(tmp_path: Path, monkeypatch):
    config = tmp_path / "project" / "millrace.toml"
    config.parent.mkdir()
    config.write_text('baseline_parquet = "data/baseline.parquet"\n')
    monkeypatch.setenv("MILLRACE_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    assert TrainerSettings().baseline_parquet == config.parent / "data" / "baseline.parquet"


def test_a_load_keeps_each_partitions_order_and_reports_what_it_could_not_deliver(
    kafka_bootstrap: str, prefix: str
):
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix)
    ensure_topics(kafka_bootstrap, pipeline_topics(settings, partitions=3))
    rows = [(settings.events_topic, str(i).encode(), f"k{i % 7}") for i in range(20_000)]
    assert produce_all(kafka_bootstrap, rows) == 20_000
    by_key: dict[bytes, list[int]] = {}
    for message in read_topic(kafka_bootstrap, settings.events_topic, expect=20_000):
        by_key.setdefault(message.key() or b"", []).append(int(message.value() or b"0"))
    assert {k: sorted(v) for k, v in by_key.items()} == by_key
    # No auto-created topics on our brokers: a record for a missing topic is undeliverable.
    producer = OrderedProducer(kafka_bootstrap, **{"message.timeout.ms": 2000})
    producer.produce(f"{prefix}missing", b"x")
    with pytest.raises(KafkaException, match=r"errors: .*timed out"):
        producer.flush(30)
