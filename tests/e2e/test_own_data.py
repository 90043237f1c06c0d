"""A user's own data, from `millrace init` to a served, learning model, through the whole stack:
no flights anywhere (a different entity, a different label, a settings file of its own)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from millrace.features import feature_schema_hash
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.record_files import write_parquet
from millrace_cli.project import check_module, init_project
from millrace_cli.replay import replay
from millrace_cli.templates.project.features import Features
from millrace_cli.templates.project.generate import generate
from tests.e2e.stack import running_stack
from tests.helpers import read_topic, wait_until

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000


def test_init_a_module_and_run_it_through_the_stack(
    kafka_bootstrap: str, redis_url: str, prefix: str, tmp_path: Path
):
    project = tmp_path / "project"
    init_project("jobs", project)
    events = generate(days=5, machines=8)
    sample = project / "sample.jsonl"
    sample.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events[:200]))
    assert check_module("millrace_cli.templates.project.features:Features", sample).passed

    # The baseline: a backfill of the first day, where the settings file says it is.
    cut = events[0]["ts"] + DAY_MS
    history = [e for e in events if e["ts"] < cut]
    write_parquet(
        backfill(Featurizer(Features()), from_envelopes(history)), project / "baseline.parquet"
    )
    settings_file = {"MILLRACE_CONFIG": str(project / "millrace.toml"), "PYTHONPATH": str(project)}
    with running_stack(
        tmp_path, kafka_bootstrap, redis_url, prefix, "jobs", {}, settings_file
    ) as stack:
        assert stack.alias() == 1
        first = stack.registry.get("/models/jobs/versions/1").json()["metadata"]["lineage"]
        assert first["feature_schema"] == feature_schema_hash(Features())
        assert first["source"] == {"backfill": str(project / "baseline.parquet")}

        replay(kafka_bootstrap, stack.settings.events_topic, [e for e in events if e["ts"] >= cut])
        # Version 2 is the baseline after a day of the stream's batches, learned and promoted.
        wait_until(lambda: stack.alias() not in (None, 1), 240, "a learned version in production")

        started = next(e for e in reversed(events) if e["type"] == "job.started")
        answer = stack.predictor.post("/predict", content=orjson.dumps(started))
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "jobs" and answer.json()["version"] > 1
        assert 0.0 < answer.json()["probability"] < 1.0
        finished = {**started, "type": "job.finished"}
        refused = stack.predictor.post("/predict", content=orjson.dumps(finished))
        assert refused.status_code == 422  # its payload is not a job.finished one

    dead = read_topic(kafka_bootstrap, stack.settings.dead_letter_topic, idle=2.0)
    assert dead == [], [dict(m.headers() or []) for m in dead[:3]]
