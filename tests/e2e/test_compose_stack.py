"""`docker compose up`, for real: the README's commands under a Docker engine, on the images
`make images` built (the official ones where a registry answers, the Debian stand-ins where
none does). Skipped, saying why, where no engine or no images are there (`make compose-test`
starts the engine and builds them first)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import read_topic, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGES_ENV = ROOT / ".cache" / "images" / "images.env"
FIGURES = ROOT / "test-artifacts" / "compose.json"
PROJECT = "millrace-compose-test"
PREDICT, REGISTRY, MODEL = "http://127.0.0.1:8701", "http://127.0.0.1:8700", "flights-delay"
SCHEDULED = {
    "schema": "millrace.event/v1",
    "id": "2013-06-01.UA1545.EWR/scheduled",
    "type": "flight.scheduled",
    "key": "N14228",
    "ts": 1370085300000,
    "data": {
        "flight_id": "2013-06-01.UA1545.EWR", "carrier": "UA", "flight": 1545,
        "tailnum": "N14228", "origin": "EWR", "dest": "IAH", "distance": 1400, "year": 2013,
        "month": 6, "day": 1, "hour": 8, "minute": 15, "sched_dep_ms": 1370088900000,
    },
}  # fmt: skip


def _why_not() -> str | None:
    if os.environ.get("MILLRACE_COMPOSE_TEST") != "1":
        return "the compose stack runs under `make compose-test` (MILLRACE_COMPOSE_TEST=1)"
    if shutil.which("docker") is None:
        return "no docker client (make compose-test installs Debian's docker.io)"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode:
        return "no Docker engine answers (make compose-test starts one)"
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode:
        return "no Compose v2 plugin (make compose-test builds it)"
    if not IMAGES_ENV.exists():
        return "the images are not built (make images)"
    return None


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """The repository's tracked files in a folder of their own, with a `.env` made as the README
    says (`millrace secrets`, plus the image names `make images` chose)."""
    why = _why_not()
    if why:
        pytest.skip(why)
    folder = tmp_path / "millrace"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        target = folder / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name.decode(), target)
    secrets = subprocess.run(
        [sys.executable, "-m", "millrace_stack.cli", "secrets"], capture_output=True, check=True
    ).stdout.decode()
    (folder / ".env").write_text(secrets + IMAGES_ENV.read_text())
    try:
        yield folder
    finally:
        compose(folder, "logs", "--no-color", "--tail", "40", check=False)
        compose(folder, "--profile", "demo", "down", "-v", check=False)


def compose(folder: Path, *args: str, check: bool = True) -> str:
    # As a user's shell has it: the tests' own MILLRACE_* secrets would override the .env's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLRACE_")}
    env["COMPOSE_PROJECT_NAME"] = PROJECT
    result = subprocess.run(
        ["docker", "compose", *args], cwd=folder, env=env, capture_output=True, text=True
    )
    if check and result.returncode:
        raise AssertionError(f"docker compose {' '.join(args)}:\n{result.stderr[-3000:]}")
    return result.stdout


def env_value(folder: Path, name: str) -> str:
    for line in (folder / ".env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip("'\"")
    raise KeyError(name)


def predicted_version() -> int | None:
    try:
        response = httpx.post(f"{PREDICT}/predict", json=SCHEDULED, timeout=5)
    except httpx.HTTPError:
        return None
    return int(response.json()["version"]) if response.status_code == 200 else None


def versions() -> list[int]:
    body = httpx.get(f"{REGISTRY}/models/{MODEL}/versions", params={"limit": 1000}).json()
    return sorted(int(v["version"]) for v in body["items"])


def container_restarted(folder: Path, service: str, started_before: str) -> bool:
    cid = compose(folder, "ps", "-a", "-q", service).strip()
    state = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True).stdout)
    health = state[0]["State"].get("Health", {}).get("Status")
    return state[0]["State"]["StartedAt"] != started_before and health == "healthy"


def crash(folder: Path, service: str) -> str:
    """SIGKILL the service's process from the host (a crash; `docker kill` counts as a manual
    stop, which a restart policy leaves stopped); returns when the container had started."""
    cid = compose(folder, "ps", "-q", service).strip()
    state = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True).stdout)
    os.kill(int(state[0]["State"]["Pid"]), signal.SIGKILL)
    return str(state[0]["State"]["StartedAt"])


def test_readme_compose_commands_serve_roll_back_and_survive_down_up(project: Path):
    figures: dict[str, object] = {}
    began = time.monotonic()
    compose(project, "--profile", "demo", "up", "-d")
    wait_until(lambda: (predicted_version() or 0) >= 2, 400, "a prediction by version >= 2")
    figures["compose_up_to_v2_s"] = round(time.monotonic() - began, 1)

    # The README's rollback, with the token from .env; the predictor follows the alias.
    # The trainer stopped first: its next promotion would move the alias on past the rollback.
    compose(project, "stop", "trainer")
    serving = predicted_version()
    token = env_value(project, "MILLRACE_REGISTRY_TOKEN")
    moved = httpx.post(
        f"{REGISTRY}/models/{MODEL}/rollback",
        headers={"Authorization": f"Bearer {token}"},
        json={"reason": "compose test"},
    )
    assert moved.status_code == 200, moved.text
    back_to = moved.json()["to_version"]
    assert back_to != serving
    wait_until(lambda: predicted_version() == back_to, 60, f"the predictor on {back_to}", 0.2)
    assert httpx.get(f"{REGISTRY}/ui/").status_code == 200
    compose(project, "start", "trainer")

    # A producer on the host reaches Kafka at localhost:9092 (`millrace produce`).
    events = project / "later.jsonl"
    later = {**SCHEDULED, "id": "compose-test/scheduled", "ts": SCHEDULED["ts"] + 1}
    events.write_text(json.dumps(later) + "\n")
    host = {
        **os.environ,
        "MILLRACE_KAFKA_BOOTSTRAP": "localhost:9092",
        "MILLRACE_CONFIG": str(project / "millrace.toml"),
    }
    produced = subprocess.run(
        [sys.executable, "-m", "millrace_stack.cli", "produce", str(events)],
        env=host, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert produced.returncode == 0 and "1 events" in produced.stdout, produced.stderr
    seen = read_topic("localhost:9092", "millrace.events", idle=5.0, timeout=120)
    assert any(m.value() and b"compose-test/scheduled" in m.value() for m in seen)

    # A crash (SIGKILL): the restart policy brings the service back.
    for service in ("featurizer", "trainer", "predictor"):
        before = crash(project, service)
        wait_until(
            lambda s=service, b=before: container_restarted(project, s, b),
            120,
            f"{service} restarted and healthy",
        )

    # down and up: topics, Redis's state and the versions are on volumes; the trainer resumes.
    published = versions()
    redis_keys = int(compose(project, "exec", "-T", "redis", "redis-cli", "dbsize").strip())
    compose(project, "--profile", "demo", "down")
    compose(project, "up", "-d", "--wait")
    assert versions()[: len(published)] == published
    assert (
        int(compose(project, "exec", "-T", "redis", "redis-cli", "dbsize").strip())
        >= redis_keys
        > 0
    )
    assert any(
        b"compose-test/scheduled" in (m.value() or b"")
        for m in read_topic("localhost:9092", "millrace.events", idle=5.0, timeout=120)
    )

    def trainer_log() -> str:
        return compose(project, "logs", "--no-color", "trainer")

    wait_until(lambda: "restored checkpoint" in trainer_log(), 120, "the trainer's restore")
    assert "training the baseline" not in trainer_log(), "the trainer started over"
    figures["compose_restart_resumed"] = versions()[: len(published)] == published
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
