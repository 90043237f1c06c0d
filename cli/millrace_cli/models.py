"""``millrace models``: the registry's versions, aliases and moves from a terminal.

Reads go to ``registry_url``; changes send the registry token from the settings
(``MILLRACE_REGISTRY_TOKEN``), or, on a machine running ``make up``, the one in its run folder.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from millrace.registry_client import RegistryClient, RegistryError
from millrace.registry_models import AliasMove
from millrace.settings import CommonSettings, MissingSecret
from millrace.signing import VerifyKey
from millrace_cli.secrets import TOKEN, VERIFY_KEY, read_secrets
from millrace_trainer.rebuild import NotRebuildable, rebuild_version, stream_versions

app = typer.Typer(
    help="Versions, aliases and rollbacks in the model registry.", no_args_is_help=True
)


def _out() -> Console:
    """A console measured now (the terminal's width may change between commands)."""
    return Console()


Model = typer.Option(None, "--model", "-m", help="default: model_name from the settings")
Alias = typer.Option("production", "--alias", help="the alias to act on")
Reason = typer.Option("", "--reason", help="recorded in the alias history")
RunDir = typer.Option(Path(".run"), envvar="MILLRACE_RUN_DIR", help="where `make up` keeps secrets")


def _client(
    run_dir: Path, model: str | None = None, writes: bool = False, verifies: bool = False
) -> tuple[RegistryClient, CommonSettings, str]:
    """A client of the configured registry, its settings, and the model to act on (with
    ``verifies``, holding the key artifacts are checked with)."""
    settings = CommonSettings()
    token = settings.read_token()
    local = read_secrets(run_dir) or {}
    if writes or token is None:
        try:
            token = settings.token()
        except MissingSecret:
            if writes and TOKEN not in local:
                raise
            token = local.get(TOKEN, token)
    verifier = None
    if verifies:
        try:
            verifier = settings.verifier()
        except MissingSecret:
            if VERIFY_KEY not in local:
                raise
            verifier = VerifyKey.from_text(local[VERIFY_KEY])
    client = RegistryClient(settings.registry_url, token, verifier=verifier, retries=1)
    return client, settings, model or settings.model_name


@contextmanager
def _answered(settings: CommonSettings) -> Iterator[None]:
    """The registry's refusals and an unreachable registry as a message and exit status 1."""
    try:
        yield
    except RegistryError as exc:
        _out().print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        _out().print(
            f"[red]cannot reach the registry at {settings.registry_url} ({exc}): is it running? "
            "(registry_url in the settings, MILLRACE_REGISTRY_URL in the environment)[/red]",
            highlight=False,
        )
        raise typer.Exit(1) from None


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _score(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


@app.command("list")
def list_models(run_dir: Path = RunDir) -> None:
    """Every model, its newest version and where its aliases point."""
    client, settings, _ = _client(run_dir)
    with _answered(settings):
        table = Table("model", "versions", "newest", "aliases")
        for name in client.list_models():
            versions = client.list_versions(name, limit=1)
            newest = versions["items"][0]["version"] if versions["items"] else ""
            aliases = ", ".join(f"{a['alias']}→v{a['version']}" for a in client.list_aliases(name))
            table.add_row(name, str(versions["total"]), str(newest), aliases)
    _out().print(table)


@app.command()
def show(
    model: str | None = Model,
    version: int | None = typer.Argument(None, help="one version's lineage and scores"),
    limit: int = typer.Option(20, help="versions to list, newest first"),
    run_dir: Path = RunDir,
) -> None:
    """A model's versions with lineage and prequential scores, or one version in full; and
    the versions its predictors refuse to serve."""
    client, settings, name = _client(run_dir, model)
    with _answered(settings):
        if version is not None:
            _out().print_json(data=client.get_version(name, version))
            return
        pointing: dict[int, list[str]] = {}
        for alias in client.list_aliases(name):
            pointing.setdefault(alias["version"], []).append(alias["alias"])
        items = client.list_versions(name, limit=limit)["items"]
        refusals = _refusals(client)
    table = Table(
        "version",
        "published",
        "aliases",
        "parent",
        "because",
        "log-loss",
        "AUC",
        "samples",
        "schema",
        title=f"{name}: newest {len(items)}",
    )
    notes = []
    for item in items:
        lineage = item["metadata"].get("lineage", {})
        metrics = item["metadata"].get("metrics", {})
        # The baseline shows its own fit, labelled: scored prequentially it was untrained.
        fit = metrics.get("baseline_fit")
        scores = fit["training"] if fit else metrics.get("prequential", {})
        suffix = " (fit)" if fit else ""
        table.add_row(
            str(item["version"]),
            _when(item["created_at"]),
            ", ".join(pointing.get(item["version"], [])),
            str(lineage.get("parent") or ""),
            str(lineage.get("published_because", "")),
            _score(scores.get("log_loss")) + suffix,
            _score(scores.get("auc")) + suffix,
            str(scores.get("samples", "")),
            str(lineage.get("feature_schema", ""))[:12],
        )
        if fit:
            notes.append(_fit_note(item["version"], fit))
    _out().print(table)
    for line in notes:
        _out().print(line, highlight=False)
    for line in refusals:
        _out().print(f"[yellow]{line}[/yellow]", highlight=False)


def _fit_note(version: int, fit: dict[str, Any]) -> str:
    note = f"version {version}: (fit) is {fit['what']}"
    held = fit.get("held_out")
    if held:
        note += (
            f"; a copy trained on all but the newest {held['fraction']:.0%} scores on them "
            f"log-loss {_score(held.get('log_loss'))}, AUC {_score(held.get('auc'))} "
            f"({held['samples']} samples)"
        )
    return note


def _refusals(client: RegistryClient) -> list[str]:
    """What the predictors the registry samples refuse to serve, and why."""
    try:
        targets = client.console_targets()["targets"]
    except RegistryError:
        return []
    return [
        f"predictor {t['url']} refuses version {v}: {why}"
        for t in targets
        for v, why in ((t.get("detail") or {}).get("refused") or {}).items()
    ]


@app.command()
def rebuild(
    versions: list[int] = typer.Argument(None, help="the versions to rebuild (default: --all)"),
    model: str | None = Model,
    every: bool = typer.Option(False, "--all", help="every version that has a parent"),
    run_dir: Path = RunDir,
) -> None:
    """Train versions again from their parent and the records their lineage names (read from
    Kafka), and check that the bytes are the published artifact's. Exit status 1 if any
    differs or cannot be rebuilt."""
    client, settings, name = _client(run_dir, model, verifies=True)
    table = Table("version", "parent", "published because", "batches", "samples", "bytes")
    failed = 0
    with _answered(settings):
        wanted = list(versions or []) if versions and not every else stream_versions(client, name)
        with Progress(transient=True) as progress:
            task = progress.add_task(f"rebuilding {name}", total=len(wanted))
            for version in wanted:
                try:
                    done = rebuild_version(client, settings.kafka, name, version)
                except NotRebuildable as exc:
                    failed += 1
                    table.add_row(str(version), "", "", "", "", f"[red]{exc}[/red]")
                else:
                    failed += not done.identical
                    table.add_row(
                        str(version),
                        str(done.parent),
                        done.published_because,
                        str(done.batches),
                        str(done.samples),
                        "[green]identical[/green]" if done.identical else "[red]differ[/red]",
                    )
                progress.advance(task)
    table.title = f"{name}: {len(wanted) - failed} of {len(wanted)} versions rebuilt identical"
    _out().print(table)
    if failed or not wanted:
        raise typer.Exit(1)


@app.command()
def history(
    model: str | None = Model,
    alias: str = Alias,
    limit: int = typer.Option(20, help="moves to list, newest first"),
    run_dir: Path = RunDir,
) -> None:
    """An alias's moves, newest first, with who made them and why."""
    client, settings, name = _client(run_dir, model)
    with _answered(settings):
        moves = client.history(name, alias, limit)
    table = Table("when", "from", "to", "kind", "by", "reason", title=f"{name} {alias}")
    for move in moves:
        style = "red" if move["reason"].startswith("guardrail") else None
        table.add_row(
            _when(move["at"]),
            str(move["from_version"] or ""),
            str(move["to_version"]),
            move["kind"],
            move["actor"],
            move["reason"],
            style=style,
        )
    _out().print(table)


@app.command()
def promote(
    version: int = typer.Argument(..., help="the version the alias should name"),
    model: str | None = Model,
    alias: str = Alias,
    expect: int | None = typer.Option(
        None, "--expect", help="compare-and-set: move only if the alias names this version now"
    ),
    reason: str = Reason,
    run_dir: Path = RunDir,
) -> None:
    """Point an alias at a version (with --expect, only if it still names the expected one)."""
    client, settings, name = _client(run_dir, model, writes=True)
    with _answered(settings):
        if expect is None:
            move = client.promote(name, version, alias, reason or "promoted from the CLI")
        else:
            move = client.move_alias(name, alias, version, expect, reason or "set from the CLI")
    _moved(name, move)


@app.command()
def rollback(
    model: str | None = Model,
    alias: str = Alias,
    to: int | None = typer.Option(None, "--to", help="default: the version before the current"),
    reason: str = Reason,
    run_dir: Path = RunDir,
) -> None:
    """Move an alias back: to --to, or to the version it named before."""
    client, settings, name = _client(run_dir, model, writes=True)
    with _answered(settings):
        move = client.rollback(name, alias, to, reason or "rollback from the CLI")
    _moved(name, move)


def _moved(model: str, move: AliasMove) -> None:
    _out().print(
        f"{model} {move['alias']}: v{move['from_version']} → v{move['to_version']} "
        f"({move['kind']}, seq {move['seq']})",
        highlight=False,
    )
