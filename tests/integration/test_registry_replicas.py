"""Two registry processes on one PostgreSQL database, as a team runs them behind a load
balancer: concurrent publishers and alias movers on both, then an exact account (versions
gapless and unique, every alias history a chain of its seqs, no move lost); and a replica
SIGKILLed in the middle of a publish (no orphan version, no half-written artifact, the client's
retry through the other replica lands once)."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from millrace.registry_client import RegistryClient, RegistryError
from millrace.settings import CommonSettings
from millrace_registry.schema import alias_history, artifacts, make_engine, versions
from millrace_stack.postgres import PostgresServer
from millrace_stack.processes import ProcessTable, free_port
from tests.conftest import new_registry_database

pytestmark = pytest.mark.integration

PUBLISHERS, MOVERS = 8, 4
DURATION_S = float(os.environ.get("MILLRACE_REGISTRY_RACE_S", "30"))


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_server: PostgresServer
) -> Iterator[tuple[ProcessTable, list[str], str]]:
    """(the process table, the two replicas' URLs, the database URL)."""
    registry_database = new_registry_database(postgres_server)
    procs, urls = ProcessTable(tmp_path), []
    for i in range(2):
        port = free_port()
        env = {
            "MILLRACE_DATA_DIR": str(tmp_path / f"replica-{i}"),
            "MILLRACE_PORT": str(port),
            "MILLRACE_REGISTRY_DATABASE_URL": registry_database,
            "MILLRACE_ANNOUNCE": "false",
            "MILLRACE_METRICS_TARGETS": "{}",
        }
        procs.start(f"replica-{i}", [sys.executable, "-m", "millrace_registry"], env)
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        client(url).wait_ready(60)
    try:
        yield procs, urls, registry_database
    finally:
        for i in range(2):
            procs.stop(f"replica-{i}")


def client(url: str) -> RegistryClient:
    return RegistryClient.from_settings(CommonSettings(), signs=True, url=url)


@pytest.mark.timeout(300)
def test_two_replicas_hand_out_gapless_versions_and_lose_no_alias_move(replicas):
    _, urls, database = replicas
    deadline = time.monotonic() + DURATION_S
    seed = client(urls[0])
    seed.publish("m", b'{"seed": 0}', {})
    for alias in ("a", "b"):
        seed.move_alias("m", alias, 1, None, "seed")

    def publisher(worker: int) -> list[int]:
        mine, made = client(urls[worker % 2]), []
        while time.monotonic() < deadline and len(made) < 5000:
            artifact = f'{{"w": {worker}, "i": {len(made)}}}'.encode()
            made.append(mine.publish("m", artifact, {})["version"])
        return made

    def mover(worker: int) -> list[tuple[str, int, int, int]]:
        """(alias, seq, from, to) of every move this mover made; two movers share an alias."""
        mine, alias, moves = client(urls[worker % 2]), "ab"[worker // 2], []
        while time.monotonic() < deadline and len(moves) < 5000:
            state = mine.alias_state("m", alias)
            assert state is not None
            newest = int(mine.list_versions("m", limit=1)["items"][0]["version"])
            try:
                move = mine.move_alias("m", alias, newest, state["version"], f"mover {worker}")
            except RegistryError as exc:
                assert exc.status == 409, exc
                continue
            moves.append((alias, move["seq"], state["version"], newest))
        return moves

    with ThreadPoolExecutor(PUBLISHERS + MOVERS) as pool:
        published = [pool.submit(publisher, w) for w in range(PUBLISHERS)]
        moved = [pool.submit(mover, w) for w in range(MOVERS)]
        numbers = sorted(v for f in published for v in f.result())
        moves = [m for f in moved for m in f.result()]

    total = int(seed.list_versions("m", limit=1)["total"])
    assert numbers == list(range(2, total + 1)), "versions not gapless and unique"
    assert len(numbers) > 100 and len(moves) > 20, (len(numbers), len(moves))
    engine = make_engine(database)
    with engine.connect() as db:
        history = db.execute(select(alias_history).order_by(alias_history.c.id)).all()
    engine.dispose()
    for alias in ("a", "b"):
        chain = [h for h in history if h.alias == alias]
        assert [h.seq for h in chain] == list(range(1, len(chain) + 1)), alias
        for before, after in itertools.pairwise(chain):
            assert after.from_version == before.to_version, (before, after)
    told = set(moves)
    assert len(told) == len(moves), "two movers were told they made the same move"
    recorded = {(h.alias, h.seq, h.from_version, h.to_version) for h in history if h.seq > 1}
    assert recorded == told, "a move a client was told about is not in the history, or one more"


@pytest.mark.timeout(300)
def test_a_replica_killed_mid_publish_leaves_nothing_half_done_and_the_retry_lands_once(
    replicas,
):
    procs, urls, database = replicas
    artifact = os.urandom(24 * 1024 * 1024)
    signer = client(urls[0])
    form = {
        "files": {"artifact": ("model.bin", artifact, "application/octet-stream")},
        "data": {"signature": signer.signature(artifact), "metadata": "{}"},
    }
    key, token = uuid.uuid4().hex, CommonSettings().token()
    headers = {"Idempotency-Key": key, "Authorization": f"Bearer {token}"}
    lost: list[BaseException] = []
    half_sent, killed = threading.Event(), threading.Event()
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="signature"\r\n\r\n'
        f"{form['data']['signature']}\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{{}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; '
        'filename="model.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()

    def body_cut_by_the_kill() -> Iterator[bytes]:
        """Half the artifact, then nothing until the replica is dead: killed mid-publish on
        any machine, however fast, not after a guessed sleep."""
        yield head + artifact[: len(artifact) // 2]
        half_sent.set()
        killed.wait(60)
        yield artifact[len(artifact) // 2 :] + f"\r\n--{boundary}--\r\n".encode()

    def publish_to_the_doomed_replica() -> None:
        try:
            httpx.post(
                f"{urls[0]}/models/m/versions",
                headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                content=body_cut_by_the_kill(),
                timeout=60,
            )
        except httpx.HTTPError as exc:
            lost.append(exc)

    sender = threading.Thread(target=publish_to_the_doomed_replica)
    sender.start()
    assert half_sent.wait(60), "the publish did not start"
    procs.kill("replica-0")
    killed.set()
    sender.join(60)
    assert lost, "the publish finished before the replica was killed"

    engine = make_engine(database)
    with engine.connect() as db:
        rows = db.execute(select(func.count()).select_from(versions)).scalar_one()
        orphans = db.execute(
            select(func.count())
            .select_from(artifacts)
            .where(artifacts.c.sha256.not_in(select(versions.c.sha256)))
        ).scalar_one()
    assert rows in (0, 1) and orphans == 0, (rows, orphans)

    retried = httpx.post(f"{urls[1]}/models/m/versions", headers=headers, timeout=120, **form)
    assert retried.status_code in (200, 201), retried.text
    again = httpx.post(f"{urls[1]}/models/m/versions", headers=headers, timeout=120, **form)
    assert again.status_code == 200 and again.json()["version"] == retried.json()["version"]
    survivor = client(urls[1])
    assert survivor.list_versions("m", limit=10)["total"] == 1
    assert survivor.download("m", retried.json()["version"]) == artifact
    engine.dispose()
