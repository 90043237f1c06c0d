"""The trainer's publishing worker against a real registry over HTTP: versions handed over are
published in order with their parents numbered, the same position again finds its version,
and a registry that is gone or a worker that was killed is an error raised in the loop's
thread (PublishFailed), never a version silently lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from millrace.registry_client import RegistryClient
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from millrace_trainer.publishing import PendingVersion, Publisher, PublishFailed
from tests.helpers import artifacts
from tests.integration.test_registry_live import serving

pytestmark = pytest.mark.integration


def metadata() -> dict:
    return {"lineage": {"parent": "set by the worker"}, "metrics": {}}


@pytest.fixture
def settings(tmp_path: Path) -> RegistrySettings:
    return RegistrySettings(data_dir=tmp_path, port=free_port(), announce=False)


def test_versions_are_published_in_order_with_their_parents_and_found_again(settings):
    with serving(settings) as client:
        publisher = Publisher(client, "m", "run", "always")
        try:
            parent: int | PendingVersion | None = None
            handed: list[PendingVersion] = []
            for position, artifact in enumerate(artifacts(5)):
                parent = publisher.submit(artifact, position, metadata(), parent)
                handed.append(parent)
            publisher.flush()
            assert [p.version for p in handed] == [1, 2, 3, 4, 5]
            parents = [
                client.get_version("m", v)["metadata"]["lineage"]["parent"] for v in range(1, 6)
            ]
            assert parents == [None, 1, 2, 3, 4]
            assert client.get_alias("m", "production") == 5
            # A replay of a position (a restarted trainer) gets the version made there before.
            again = publisher.submit(artifacts(1)[0], 0, metadata(), None)
            publisher.flush()
            assert again.version == 1 and client.list_versions("m")["total"] == 5
        finally:
            publisher.close()


def test_a_registry_that_is_gone_fails_the_publish_in_the_loops_thread(settings):
    with serving(settings) as client:
        made_with = client.portable()
    gone = RegistryClient.from_portable({**made_with, "retries": 1})
    publisher = Publisher(gone, "m", "run", "always")
    try:
        publisher.submit(artifacts(1)[0], 0, metadata(), None)
        with pytest.raises(PublishFailed, match="publishing a version failed: ConnectError"):
            publisher.flush()
        with pytest.raises(PublishFailed):  # and every call after it, until a restart
            publisher.submit(artifacts(1)[0], 1, metadata(), None)
    finally:
        publisher.close()


def test_a_refused_publish_names_the_registrys_answer(settings, tmp_path):
    with serving(settings) as client:
        stranger = RegistryClient.from_portable({**client.portable(), "token": "not-the-token"})
        publisher = Publisher(stranger, "m", "run", "always")
        try:
            publisher.submit(artifacts(1)[0], 0, metadata(), None)
            with pytest.raises(PublishFailed, match="RegistryError: registry answered 403"):
                publisher.flush()
        finally:
            publisher.close()


def test_a_killed_worker_fails_the_publish_and_the_versions_after_it(settings):
    with serving(settings) as client:
        publisher = Publisher(client, "m", "run", "always")
        try:
            first = publisher.submit(artifacts(1)[0], 0, metadata(), None)
            publisher.flush()
            assert first.version == 1
            os.kill(publisher.worker_pid(), signal.SIGKILL)
            publisher.submit(artifacts(2)[1], 1, metadata(), first)
            with pytest.raises(PublishFailed):
                publisher.flush()
            assert client.list_versions("m")["total"] == 1
        finally:
            publisher.close()


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped by whoever adopted it, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_the_worker_of_a_killed_trainer_ends_with_it():
    trainer = (
        "import os, signal\n"
        "from millrace.registry_client import RegistryClient\n"
        "from millrace_trainer.publishing import Publisher\n"
        "publisher = Publisher(RegistryClient('http://127.0.0.1:9', None), 'm', 'run', 'none')\n"
        "print(publisher.worker_pid(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", trainer], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    worker = int(done.stdout)
    deadline = time.monotonic() + 15
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(worker), f"the worker {worker} outlived its trainer"
