"""The ``millrace`` command: your own feature module, backfills, producing events, the registry."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

import orjson
import typer
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.table import Table

from millrace.days import day_start_ms
from millrace.dotted import load_object
from millrace.envelope import InvalidEvent, parse_event
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, SourceEvent, backfill, from_envelopes
from millrace.logs import configure_logging
from millrace.progress import progress
from millrace.record_files import write_parquet
from millrace.settings import CommonSettings, UnknownSetting, check_config_keys, config_file
from millrace.signing import generate_keypair
from millrace.state import RedisState
from millrace_cli import models, plugins, registry
from millrace_cli.project import check_module, init_project
from millrace_cli.replay import replay
from millrace_featurizer import backfill as backfill_runner
from millrace_featurizer.settings import FeaturizerSettings
from millrace_predictor.settings import PredictorSettings
from millrace_registry.settings import RegistrySettings
from millrace_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)
app = typer.Typer(help="Millrace: online learning and serving on Kafka.", no_args_is_help=True)
app.add_typer(models.app, name="models")
app.add_typer(registry.app, name="registry")
SETTINGS: list[type[BaseSettings]] = [
    CommonSettings,
    FeaturizerSettings,
    TrainerSettings,
    PredictorSettings,
    RegistrySettings,
]
# `nycflights13` named the demo's data before `events:` sources existed (deprecated).
DEMO_EVENTS = "millrace_flights.events:baseline_events"


@app.callback()
def _module_path() -> None:
    """Millrace: online learning and serving on Kafka."""
    # A feature module of your own is imported from the settings file's folder, as the
    # services do (and from the working folder).
    for folder in (Path.cwd(), config_file().resolve().parent):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def checked_settings() -> CommonSettings:
    """The settings, after refusing a settings file with a key that nothing reads."""
    try:
        check_config_keys(config_file(), (name for s in SETTINGS for name in s.model_fields))
    except UnknownSetting as exc:
        raise typer.BadParameter(str(exc)) from None
    return CommonSettings()


@app.command("secrets")
def secrets_command() -> None:
    """Print a fresh registry token and Ed25519 key pair as an env file (for compose's .env)."""
    private, public = generate_keypair()
    typer.echo(f"MILLRACE_REGISTRY_TOKEN={token_urlsafe(32)}")
    typer.echo(f"MILLRACE_SIGNING_KEY={private}")
    typer.echo(f"MILLRACE_VERIFY_KEY={public}")


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
        "its end offsets now), or events:<package.module:function> (a function of (start_ms, "
        "end_ms) that returns envelopes, as the trainer's baseline_events setting names)",
    ),
    out: Path = typer.Option(Path(".run/backfill/features.parquet"), help="Parquet output"),
    start: str = typer.Option("2013-01-01", help="events: first day (UTC)"),
    end: str = typer.Option("2013-01-15", help="events: day to stop before"),
    materialize: bool = typer.Option(False, help="write the final state into Redis"),
) -> None:
    """Run the feature module over history: the same code as the live featurizer."""
    settings = CommonSettings()
    configure_logging("backfill", settings.log_level)
    featurizer = Featurizer(load_feature_module(settings.feature_module))
    sources, total = backfill_sources(settings, source, start, end)
    result = backfill(featurizer, sources, on_progress=progress(total, "backfill"))
    write_parquet(result, out)
    if materialize:
        partitions = FeaturizerSettings().partitions
        RedisState.from_settings(settings).materialize(result.state, partitions)
    typer.echo(
        f"{result.events} events: {len(result.features)} feature records, "
        f"{len(result.labels)} labels, {len(result.dead)} rejected -> {out}"
        + (f"; state of {len(result.state)} entities written to Redis" if materialize else "")
    )


def backfill_sources(
    settings: CommonSettings, source: str, start: str, end: str
) -> tuple[Iterable[SourceEvent], int | None]:
    """The records a backfill reads, and how many when that is known up front."""
    if source == "nycflights13":
        typer.echo(f"backfill nycflights13 is deprecated: use events:{DEMO_EVENTS}", err=True)
        source = f"events:{DEMO_EVENTS}"
    if source.startswith("events:"):
        try:
            window = load_object(source.removeprefix("events:"), "events")
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        events = list(window(day_start_ms(start), day_start_ms(end)))
        return from_envelopes(events), len(events)
    if source.startswith("topic:"):
        topic = source.removeprefix("topic:")
        ends = backfill_runner.topic_end_offsets(settings.kafka, topic)
        total = sum(high - low for low, high in ends.values())
        return backfill_runner.from_topic(settings.kafka, topic, ends), total
    path = Path(source)
    if not path.exists():
        raise typer.BadParameter(f"no such file: {path}")
    return backfill_runner.from_file(path), None


for _plugin in plugins.installed():
    _plugin.register(app)
    SETTINGS.extend(_plugin.settings)


def main() -> None:
    app()
