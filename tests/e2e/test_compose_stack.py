"""`docker compose up`, for real: the README's commands under a Docker engine, on the images
`make images` built (the official ones where a registry answers, the Debian stand-ins where
none does); your own module; scaled replicas. Skipped, saying why, where no engine or no images
are there (`make test` and `make compose-test` start the engine and build them first)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.record_files import write_parquet
from millrace.settings import CommonSettings
from millrace_cli.project import init_project
from millrace_cli.templates.project.features import Features
from millrace_cli.templates.project.generate import generate
from millrace_featurizer.backfill import from_topic
from tests.helpers import read_topic, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGES_ENV = ROOT / ".cache" / "images" / "images.env"
FIGURES = ROOT / "test-artifacts" / "compose.json"
PROJECT = "millrace-compose-test"
DAY_MS = 86_400_000
EVERY_PROFILE = (
    *("--profile", "demo", "--profile", "observability"),
    *("--profile", "scale", "--profile", "postgres"),
)
PROMETHEUS = "http://127.0.0.1:9090"
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
        [sys.executable, "-m", "millrace_cli", "secrets"], capture_output=True, check=True
    ).stdout.decode()
    (folder / ".env").write_text(secrets + IMAGES_ENV.read_text())
    try:
        yield folder
    finally:
        compose(folder, "logs", "--no-color", "--tail", "40", check=False)
        compose(folder, *EVERY_PROFILE, "down", "-v", check=False)


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


SERVICES = {"model-registry", "featurizer", "trainer", "predictor"}


def scraped_services() -> set[str]:
    """The services whose last scrape succeeded."""
    try:
        targets = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=5).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError):
        return set()
    return {t["labels"]["service"] for t in targets["activeTargets"] if t["health"] == "up"}


def prometheus_value(query: str) -> float:
    answer = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": query}, timeout=5).json()
    return float(answer["data"]["result"][0]["value"][1])


def produce_from_host(settings_file: Path, events: Path) -> str:
    """`millrace produce` on the host, to the published Kafka listener; returns what it said."""
    host = {
        **os.environ,
        "MILLRACE_KAFKA_BOOTSTRAP": "localhost:9092",
        "MILLRACE_CONFIG": str(settings_file),
    }
    produced = subprocess.run(
        [sys.executable, "-m", "millrace_cli", "produce", str(events)],
        env=host, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    return produced.stdout


def host_settings() -> CommonSettings:
    """The compose stack's settings as a client on the host sees them (whatever the tests'
    own environment says)."""
    return CommonSettings(kafka_bootstrap="localhost:9092", topic_prefix="millrace.")


def records_out(settings: CommonSettings) -> Counter[bytes]:
    """Every committed feature, label and dead-letter record, as bytes."""
    topics = (settings.features_topic, settings.labels_topic, settings.dead_letter_topic)
    return Counter(e.value for topic in topics for e in from_topic(settings.kafka, topic))


def records_wanted(settings: CommonSettings) -> Counter[bytes]:
    """What the backfill of the events topic as it stands makes: the records the live
    featurizer must have committed, each once."""
    featurizer = Featurizer(load_feature_module(settings.feature_module))
    truth = backfill(featurizer, from_topic(settings.kafka, settings.events_topic))
    return Counter(truth.feature_bytes + truth.label_bytes) + Counter(v for v, _ in truth.dead)


def assert_every_record_once(settings: CommonSettings) -> int:
    """The output topics hold exactly what the backfill of every event sent makes, byte for
    byte (waiting for the featurizers to catch up); returns how many records that is."""
    wanted = records_wanted(settings)
    total = sum(wanted.values())
    try:
        wait_until(lambda: records_out(settings) == wanted, 300, "every record committed", 3.0)
    except TimeoutError:
        got = records_out(settings)
        lost, twice = sum((wanted - got).values()), sum((got - wanted).values())
        raise AssertionError(f"of {total} records: {lost} lost, {twice} extra") from None
    return total


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
    assert "1 events" in produce_from_host(project / "millrace.toml", events)
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

    # Nothing lost, nothing twice: the replay stopped, every record is there once.
    compose(project, "--profile", "demo", "stop", "replay")
    on_host = host_settings()
    figures["compose_events_accounted"] = assert_every_record_once(on_host)

    # The observability profile's Prometheus scrapes every service by its compose name.
    compose(project, "--profile", "observability", "up", "-d", "prometheus")
    wait_until(lambda: scraped_services() == SERVICES, 120, "Prometheus scraping every service")
    assert prometheus_value('count({__name__=~"millrace_.+"})') > 10, "no Millrace series"

    # down and up: topics, Redis's state and the versions are on volumes; the trainer resumes.
    published = versions()
    redis_keys = int(compose(project, "exec", "-T", "redis", "redis-cli", "dbsize").strip())
    compose(project, *EVERY_PROFILE, "down")
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


def test_compose_serves_a_module_of_ones_own(project: Path, tmp_path: Path):
    """README "Your own data", under compose: `MILLRACE_PROJECT=<folder> docker compose up`."""
    own = tmp_path / "jobs-project"
    init_project("jobs", own)
    events = generate(days=5, machines=8)
    cut = events[0]["ts"] + DAY_MS
    history = [e for e in events if e["ts"] < cut]
    write_parquet(
        backfill(Featurizer(Features()), from_envelopes(history)), own / "baseline.parquet"
    )
    stream = own / "events.jsonl"
    stream.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events if e["ts"] >= cut))
    with (project / ".env").open("a") as env:
        env.write(f"MILLRACE_PROJECT={own}\n")

    compose(project, "up", "-d", "--wait")
    produce_from_host(own / "millrace.toml", stream)
    started = next(e for e in reversed(events) if e["type"] == "job.started")

    def learned_answer() -> dict[str, object] | None:
        try:
            answer = httpx.post(f"{PREDICT}/predict", json=started, timeout=5)
        except httpx.HTTPError:
            return None
        body = answer.json() if answer.status_code == 200 else {}
        return body if int(body.get("version", 0)) > 1 else None

    answer = wait_until(learned_answer, 300, "a learned version of jobs served")
    assert answer["model"] == "jobs" and 0.0 < float(answer["probability"]) < 1.0


def test_compose_scales_predictors_and_featurizers(project: Path):
    """Two predictors (`--scale`, a host port each) and two featurizers (each its own instance
    id) share the work; a crashed featurizer comes back under its id and fences its old self:
    the records are still exactly the backfill's."""
    with (project / ".env").open("a") as env:
        env.write("MILLRACE_PREDICTOR_PORTS=8711-8712\n")
    scaled = ("--profile", "demo", "--profile", "scale", "up", "-d", "--scale", "predictor=2")
    compose(project, *scaled)
    ports = [
        compose(project, "port", "--index", str(i), "predictor", "8701").strip().rsplit(":", 1)[1]
        for i in (1, 2)
    ]
    assert sorted(ports) == ["8711", "8712"]
    for port in ports:
        wait_until(lambda p=port: answers_on(p), 120, f"the predictor on {port}")

    on_host = host_settings()
    group = on_host.topic_prefix + "millrace-featurizer"
    wait_until(lambda: len(assigned_members(on_host, group)) == 2, 120, "two featurizers sharing")
    before = crash(project, "featurizer-1")
    wait_until(
        lambda: container_restarted(project, "featurizer-1", before), 120, "featurizer-1 back"
    )
    wait_until(lambda: len(assigned_members(on_host, group)) == 2, 120, "both sharing again")
    compose(project, "--profile", "demo", "stop", "replay")
    assert_every_record_once(on_host)


def answers_on(port: str) -> bool:
    try:
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json=SCHEDULED, timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def assigned_members(settings: CommonSettings, group: str) -> list[str]:
    """The members of ``group`` that hold at least one partition."""
    client = AdminClient(settings.kafka)
    try:
        described = client.describe_consumer_groups([group])[group].result(timeout=10)
    except KafkaException:
        return []
    return [m.member_id for m in described.members if m.assignment.topic_partitions]


def test_compose_runs_the_registry_on_postgresql(project: Path):
    """README "A registry for a team", under compose: `--profile postgres` migrates the schema
    once, then the registry keeps the trainer's versions in PostgreSQL, across `down` and `up`."""
    password = secrets.token_urlsafe(16)
    with (project / ".env").open("a") as env:
        env.write(f"MILLRACE_POSTGRES_PASSWORD={password}\n")
        env.write(
            f"MILLRACE_REGISTRY_DATABASE_URL=postgresql://millrace:{password}@postgres/millrace\n"
        )
    team = ("--profile", "postgres")
    compose(project, *team, "up", "-d", "--wait", "model-registry", "trainer")
    migrated = compose(project, *team, "ps", "-a", "--format", "json", "registry-migrate")
    assert '"ExitCode":0' in migrated.replace(" ", ""), migrated
    wait_until(lambda: versions() or None, 300, "the trainer's baseline in the registry")

    def rows_in_postgres() -> int:
        sql = "SELECT count(*) FROM versions"
        out = compose(project, *team, "exec", "-T", "postgres", "psql", "-U", "millrace",
                      "-d", "millrace", "-At", "-c", sql)  # fmt: skip
        return int(out.strip())

    published = versions()
    assert rows_in_postgres() == len(published) >= 1
    compose(project, *team, "stop", "trainer")
    compose(project, *team, "down")
    compose(project, *team, "up", "-d", "--wait", "model-registry")
    assert versions()[: len(published)] == published
