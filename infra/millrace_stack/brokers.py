"""Apache Kafka (single node, KRaft) and Redis started as local processes.

Kafka is the real broker: its jars are resolved from Maven Central by ``kafka-pom.xml`` (beside
this module) into ``.cache/kafka/lib`` (cached; resolved again only when the pom changes), the
storage is formatted on first start, and readiness means an AdminClient gets metadata.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from millrace.errors import MillraceError
from millrace.kafka import wait_for_broker
from millrace.waiting import wait_until
from millrace_stack.processes import ProcessTable, free_port, port_open

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = Path(__file__).with_name("kafka-pom.xml")
JAR_CACHE = Path(os.environ.get("MILLRACE_KAFKA_LIB", REPO_ROOT / ".cache" / "kafka" / "lib"))

#: The broker's logging, shared with the Kafka image `make images` builds.
LOG4J2 = Path(__file__).with_name("kafka-log4j2.properties")


class InfraError(MillraceError, RuntimeError):
    pass


def ensure_kafka_jars(cache: Path = JAR_CACHE, pom: Path = POM) -> Path:
    """Resolve the broker's jars with Maven unless the cache already matches the pom."""
    stamp = cache / ".pom-sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and any(cache.glob("kafka_2.13-*.jar")):
        return cache
    if shutil.which("mvn") is None:
        raise InfraError("Maven (mvn) is needed to fetch Kafka's jars: apt-get install maven")
    if shutil.which("java") is None:
        raise InfraError("Java 17+ is needed to run Kafka: apt-get install openjdk-17-jre-headless")
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={cache}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InfraError(
            f"resolving Kafka's jars failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    stamp.write_text(digest)
    return cache


@dataclass
class KafkaNode:
    """One broker+controller; ``data_dir`` holds its config, logs and storage. Alone (the
    default: a standalone controller on loopback) or one node of a :class:`KafkaCluster`, with
    its own address, maybe in a network namespace of its own."""

    data_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    #: A second listener with SASL/PLAIN authentication for these users (name -> password).
    sasl_port: int | None = None
    sasl_users: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    node_id: int = 1
    #: A static quorum ("1@host:port,2@host:port,..."); unset: this node is its own quorum.
    voters: str | None = None
    cluster_id: str | None = None
    #: Replicas of the internal topics and of topics created without a factor.
    replication: int = 1
    #: The network namespace the process runs in (``ip netns exec``), if any.
    netns: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        return f"{self.host}:{self.sasl_port}" if self.sasl_port else None

    def _listener_config(self) -> list[str]:
        listeners = [f"PLAINTEXT://{self.host}:{self.port}"]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        extra = []
        if self.sasl_port:
            listeners.append(f"SASL_PLAINTEXT://{self.host}:{self.sasl_port}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
            extra = [
                "sasl.enabled.mechanisms=PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
            ]
        return [
            f"listeners={','.join(listeners)},CONTROLLER://{self.host}:{self.controller_port}",
            f"advertised.listeners={','.join(listeners)}",
            f"listener.security.protocol.map={','.join(protocols)}",
            *extra,
        ]

    def _quorum_config(self) -> list[str]:
        if self.voters is None:
            return [f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}"]
        return [f"controller.quorum.voters={self.voters}"]

    def _replication_config(self) -> list[str]:
        """Durable when replicated: a write needs two replicas of three, no unclean leader."""
        replicas, min_isr = self.replication, 2 if self.replication >= 3 else 1
        return [
            f"offsets.topic.replication.factor={replicas}",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={min_isr}",
            "unclean.leader.election.enable=false",
        ]

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={self.node_id}",
                    *self._quorum_config(),
                    *self._listener_config(),
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir / 'data'}",
                    "num.partitions=3",
                    "offsets.topic.num.partitions=3",
                    "transaction.state.log.num.partitions=3",
                    *self._replication_config(),
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "",
                ]
            )
        )
        (self.data_dir / "log4j2.properties").write_text(LOG4J2.read_text())
        return config

    def _java(self, lib: Path, *args: str) -> list[str]:
        return [
            *(["ip", "netns", "exec", self.netns] if self.netns else []),
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            *args,
        ]

    def launch(self, procs: ProcessTable, name: str = "kafka") -> None:
        """Format the storage on the first start, and start the process (without waiting)."""
        if self.netns is None and port_open(self.port):
            raise InfraError(f"port {self.port} is taken; set another with MILLRACE_KAFKA_PORT")
        lib = ensure_kafka_jars()
        config = self._write_config()
        if not (self.data_dir / "data" / "meta.properties").exists():
            cluster_id = self.cluster_id or new_cluster_id()
            # "--cluster-id=" form: a random id may start with "-". A static quorum is named by
            # the config; a node alone formats as a standalone controller.
            fmt = self._java(
                lib,
                "kafka.tools.StorageTool",
                "format",
                *(["--standalone"] if self.voters is None else []),
                f"--cluster-id={cluster_id}",
                f"--config={config}",
            )
            result = subprocess.run(fmt, capture_output=True, text=True)
            if result.returncode != 0:
                raise InfraError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")
        procs.start(name, self._java(lib, "kafka.Kafka", str(config)))

    def start(self, procs: ProcessTable, name: str = "kafka", timeout: float = 90.0) -> None:
        self.launch(procs, name)
        try:
            wait_for_broker(self.bootstrap, timeout)
        except TimeoutError as exc:
            tail = procs.log_path(name).read_text(errors="replace")[-2000:]
            procs.stop(name)
            raise InfraError(f"Kafka did not become ready: {exc}\n{tail}") from None

    def stop(self, procs: ProcessTable, name: str = "kafka") -> None:
        procs.stop(name)


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def debian_program(program: str, package: str) -> str:
    """The path of ``program``; when it is missing, install Debian's ``package`` (as root)."""
    found = shutil.which(program) or (
        f"/usr/bin/{program}" if Path(f"/usr/bin/{program}").exists() else None
    )
    if found:
        return found
    if os.geteuid() != 0:
        raise InfraError(f"{program} is not installed: run `sudo apt-get install {package}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise InfraError(f"installing {package} failed: {result.stderr[-2000:]}")
    # A package may start a system service on its default port; ours run on their own.
    subprocess.run(["service", package, "stop"], capture_output=True)
    return f"/usr/bin/{program}"


def redis_server_binary() -> str:
    return debian_program("redis-server", "redis-server")


@dataclass
class RedisNode:
    data_dir: Path
    port: int = 6379
    persist: bool = False
    #: The port of the master this node replicates (on 127.0.0.1), if it is a replica.
    replica_of: int | None = None
    #: A Redis Cluster node: how long it may not answer before its replica takes over.
    cluster_node_timeout_ms: int | None = None
    #: Its cluster bus port (Redis's default, the port + 10000, may not exist or be taken).
    cluster_bus_port: int | None = None
    #: Clients must authenticate (and a replica does with its master).
    password: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, procs: ProcessTable, name: str = "redis", timeout: float = 20.0) -> None:
        if port_open(self.port):
            raise InfraError(f"port {self.port} is taken; set another with MILLRACE_REDIS_PORT")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        cmd += (
            ["--appendonly", "yes", "--save", "60 1000"]
            if self.persist
            else ["--save", "", "--appendonly", "no"]
        )
        if self.replica_of is not None:
            cmd += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.password is not None:
            cmd += ["--requirepass", self.password, "--masterauth", self.password]
        if self.cluster_node_timeout_ms is not None:
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            cmd += ["--cluster-node-timeout", str(self.cluster_node_timeout_ms)]
            if self.cluster_bus_port is not None:
                cmd += ["--cluster-port", str(self.cluster_bus_port)]
        procs.start(name, cmd)
        client = redis.Redis(port=self.port, password=self.password)
        try:
            wait_until(
                client.ping, timeout, f"Redis on port {self.port}", 0.1, (redis.ConnectionError,)
            )
        except TimeoutError as exc:
            raise InfraError(str(exc)) from None


@dataclass
class SentinelGroup:
    """A master, its replicas and the sentinels that watch it (Redis's own high availability),
    all local processes: ``redis-<i>`` (0 the first master) and ``sentinel-<i>``."""

    data_dir: Path
    redis_ports: list[int]
    sentinel_ports: list[int]
    master_name: str = "mymaster"
    #: How long a master may not answer before the sentinels fail it over.
    down_after_ms: int = 1000
    #: The nodes' password and the sentinels' own (None: no authentication).
    password: str | None = None
    sentinel_password: str | None = None

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def start(self, procs: ProcessTable, timeout: float = 30.0) -> None:
        master = self.redis_ports[0]
        for i, port in enumerate(self.redis_ports):
            node = RedisNode(
                self.data_dir / f"redis-{i}",
                port,
                replica_of=master if i else None,
                password=self.password,
            )
            node.start(procs, name=f"redis-{i}")
        for i, port in enumerate(self.sentinel_ports):
            folder = self.data_dir / f"sentinel-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            config = folder / "sentinel.conf"  # the sentinel rewrites it: its own copy
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} 10000\n"
                f"sentinel parallel-syncs {self.master_name} 1\n" + self._auth_lines()
            )
            procs.start(f"sentinel-{i}", [redis_server_binary(), str(config), "--sentinel"])
        wait_until(
            lambda: self.master() == master and self.replicas_known(),
            timeout,
            "the sentinels to see the master and its replicas",
            0.2,
            (redis.ConnectionError,),
        )

    def _auth_lines(self) -> str:
        lines = ""
        if self.password is not None:
            lines += f"sentinel auth-pass {self.master_name} {self.password}\n"
        if self.sentinel_password is not None:
            lines += f"requirepass {self.sentinel_password}\n"
        return lines

    def restart(self, procs: ProcessTable, index: int) -> None:
        """Start node ``index`` again, empty (no persistence): a replica of the master the
        sentinels name, unless it is that master."""
        master = self.master()
        port = self.redis_ports[index]
        node = RedisNode(
            self.data_dir / f"redis-{index}",
            port,
            replica_of=master if master != port else None,
            password=self.password,
        )
        node.start(procs, name=f"redis-{index}")

    def master(self) -> int | None:
        """The port of the master the first answering sentinel names now."""
        for port in self.sentinel_ports:
            try:
                sentinel = redis.Redis(port=port, password=self.sentinel_password)
                found = sentinel.sentinel_get_master_addr_by_name(self.master_name)
            except redis.ConnectionError:
                continue
            return int(found[1]) if isinstance(found, tuple) else None
        return None

    def replicas_known(self) -> bool:
        client = redis.Redis(port=self.sentinel_ports[0], password=self.sentinel_password)
        return len(client.sentinel_slaves(self.master_name)) == len(self.redis_ports) - 1


@dataclass
class RedisClusterGroup:
    """A Redis Cluster of local processes ``cluster-<i>``: as many primaries as ``ports`` hold
    beyond their ``replicas`` replicas each, the slots spread by ``redis-cli --cluster create``
    (Redis's own tool)."""

    data_dir: Path
    ports: list[int]
    replicas: int = 1
    #: How long a primary may not answer before its replica is promoted.
    node_timeout_ms: int = 2000
    #: Every node's password (None: no authentication).
    password: str | None = None

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start(self, procs: ProcessTable, timeout: float = 60.0) -> None:
        for i, port in enumerate(self.ports):
            node = RedisNode(
                self.data_dir / f"node-{i}",
                port,
                cluster_node_timeout_ms=self.node_timeout_ms,
                cluster_bus_port=free_port(),
                password=self.password,
            )
            node.start(procs, name=f"cluster-{i}")
        create = [debian_program("redis-cli", "redis-tools"), "--cluster", "create", *self.nodes]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        if self.password is not None:
            create += ["-a", self.password, "--no-auth-warning"]
        result = subprocess.run(create, capture_output=True, text=True)
        if result.returncode != 0:
            raise InfraError(f"redis-cli --cluster create failed: {result.stdout[-2000:]}")
        wait_until(self.healthy, timeout, "the Redis Cluster's slots and replicas", 0.2)

    def roles(self) -> dict[int, int | None]:
        """port -> the port of its primary (None: it is a primary), as a live node sees it."""
        for port in self.ports:
            try:
                node = redis.Redis(port=port, password=self.password)
                table = node.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
            except redis.ConnectionError:
                continue
            text = table.decode() if isinstance(table, bytes) else str(table)
            return _cluster_roles(text)
        return {}

    def primaries(self) -> list[int]:
        return [port for port, primary in self.roles().items() if primary is None]

    def healthy(self) -> bool:
        """Every slot served, every primary with its replicas linked up."""
        roles = self.roles()
        if not roles or len([p for p, of in roles.items() if of is None]) * (
            1 + self.replicas
        ) != len(roles):
            return False
        for port, primary in roles.items():
            client = redis.Redis(port=port, password=self.password)
            info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
            if b"cluster_state:ok" not in info:
                return False
            if primary is not None and client.info("replication")["master_link_status"] != "up":
                return False
        return True


def _cluster_roles(table: str) -> dict[int, int | None]:
    """CLUSTER NODES of the live nodes: port -> its primary's port (None for a primary)."""
    ids: dict[str, int] = {}
    rows = []
    for line in table.splitlines():
        node_id, address, flags, primary = line.split()[:4]
        if "fail" in flags.split(","):
            continue
        port = int(address.split("@")[0].rsplit(":", 1)[1])
        ids[node_id] = port
        rows.append((port, "master" in flags, primary))
    return {port: (None if is_primary else ids.get(of)) for port, is_primary, of in rows}
