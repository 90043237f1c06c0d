"""``millrace registry``: the registry's database (its schema, moving it to PostgreSQL)."""

from __future__ import annotations

import typer
from rich.console import Console

from millrace_registry.schema import make_engine, migrate, sqlite_url
from millrace_registry.settings import RegistrySettings
from millrace_registry.transfer import copy_registry

app = typer.Typer(help="The model registry's database.", no_args_is_help=True)


@app.command("migrate")
def migrate_command(
    to: str = typer.Option(
        None, "--to", help="the database to migrate; default: registry_database_url"
    ),
    source: str = typer.Option(
        None,
        "--from",
        help="copy this registry (e.g. sqlite:///.run/registry/registry.db) into --to, "
        "after migrating both: versions, aliases, history and artifacts",
    ),
) -> None:
    """Bring a registry database's schema to this release (run once per deploy, before the
    replicas start); with --from, copy an existing registry into it."""
    settings = RegistrySettings()
    target = to or settings.registry_database_url or sqlite_url(settings.data_dir)
    out = Console()
    engine = make_engine(target)
    migrate(engine)
    engine.dispose()
    out.print(f"[green]schema current[/] in {_safe(target)}")
    if source:
        counts = copy_registry(source, target, settings.data_dir, progress=out.print)
        out.print(
            f"[green]copied[/] {counts['versions']} versions, {counts['aliases']} aliases, "
            f"{counts['moves']} alias moves, {counts['artifacts']} artifacts"
        )


def _safe(url: str) -> str:
    """The URL without its password, for the terminal."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':')[0]}{at}{host}" if at else url
