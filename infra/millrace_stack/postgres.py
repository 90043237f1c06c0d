"""A PostgreSQL server from Debian's ``postgresql`` package, started as a local process on a
port of its own with its own data folder (like the Redis and Kafka nodes beside it): for the
registry's PostgreSQL backend in tests and benchmarks.

PostgreSQL refuses to run as root; run as root, the server and ``initdb`` run as the package's
``postgres`` user (``setpriv``, which execs, so the process table holds the server itself) and
the data folder is theirs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from millrace.waiting import wait_until
from millrace_stack.brokers import InfraError, debian_program
from millrace_stack.processes import ProcessTable, port_open

SUPERUSER = "postgres"


def postgres_bin() -> Path:
    """The folder of Debian's PostgreSQL programs (the package installed if missing)."""
    debian_program("pg_ctlcluster", "postgresql")
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise InfraError("Debian's postgresql is installed but /usr/lib/postgresql has no server")
    return found[-1].parent


@dataclass
class PostgresServer:
    #: Its data folder; as root, every folder above it must be one the postgres user can enter.
    data_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    def start(self, procs: ProcessTable, name: str = "postgres", timeout: float = 30.0) -> None:
        if port_open(self.port):
            raise InfraError(f"port {self.port} is taken")
        bin_dir = postgres_bin()
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                shutil.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
            initdb = [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER]
            initdb += ["--auth=trust", "--encoding=UTF8", "--no-sync"]
            result = subprocess.run([*self._as_owner(), *initdb], capture_output=True, text=True)
            if result.returncode != 0:
                raise InfraError(f"initdb failed: {result.stderr[-2000:]}")
        server = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        # Its socket in its own folder (not /run/postgresql, which may not exist); fsync off:
        # a test server, whose data is thrown away.
        server += ["-k", str(self.data_dir), "-c", "listen_addresses=127.0.0.1"]
        server += ["-c", "fsync=off", "-c", "max_connections=200"]
        procs.start(name, [*self._as_owner(), *server])
        try:
            wait_until(
                self._answers,
                timeout,
                f"PostgreSQL on port {self.port}",
                0.2,
                (psycopg.OperationalError,),
            )
        except TimeoutError as exc:
            raise InfraError(f"{exc}: see {procs.log_path(name)}") from None

    def _answers(self) -> bool:
        psycopg.connect(self.url(), connect_timeout=2).close()
        return True

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
