"""`millrace init` writes a module that works as written; `millrace check` tells what passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from millrace_cli.app import app
from millrace_cli.project import init_project
from millrace_cli.templates.project.generate import generate


def test_the_skeleton_passes_its_own_tests(tmp_path: Path):
    written = init_project("jobs", tmp_path)
    assert (tmp_path / "millrace.toml").read_text().count('"jobs.features:Features"') == 1
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "tests")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    with pytest.raises(FileExistsError):
        init_project("jobs", tmp_path)
    assert all(path.exists() for path in written)
    with pytest.raises(ValueError, match="Python package name"):
        init_project("my-jobs", tmp_path / "other")


def test_check_reports_features_and_rejections_and_fails_when_nothing_passes(tmp_path: Path):
    events = generate(days=1, machines=2)[:40]
    sample = tmp_path / "sample.jsonl"
    bad = {**events[0], "data": {**events[0]["data"], "load": 3}}
    sample.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in [*events, bad]))
    module = "millrace_cli.templates.project.features:Features"
    answer = CliRunner().invoke(app, ["check", module, str(sample)])
    assert answer.exit_code == 0, answer.output
    assert "41 events" in answer.output and "rejected as invalid_data: 1" in answer.output
    assert "event 41: invalid job.started: data.load" in answer.output
    assert "temperature" in answer.output
    flights = "millrace_flights.features:FlightsFeatures"
    answer = CliRunner().invoke(app, ["check", flights, str(sample)])
    assert answer.exit_code == 1
    assert "rejected as unknown_type: 41" in answer.output and "nothing passed" in answer.output
