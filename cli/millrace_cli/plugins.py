"""Commands that other packages add to ``millrace``, found by entry point.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."millrace.commands"]
    mine = "my_package.cli:plugin"

where ``plugin`` is a :class:`Plugin`. The local development stack plugs in this way, so the
product's command never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

import typer
from pydantic_settings import BaseSettings

GROUP = "millrace.commands"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plugin:
    """``register`` adds commands to the app; ``settings`` are the settings classes whose keys
    those commands read, so that a settings file naming them is not refused as a typo."""

    register: Callable[[typer.Typer], None]
    settings: Sequence[type[BaseSettings]] = ()


def installed() -> Iterator[Plugin]:
    """Every installed plugin; one that cannot load is named and skipped, not fatal."""
    for point in entry_points(group=GROUP):
        try:
            plugin = point.load()
        except Exception as exc:  # a broken plugin must not take the product's command down
            log.warning("millrace plugin %s cannot load: %s", point.value, exc)
            continue
        if not isinstance(plugin, Plugin):
            log.warning("millrace plugin %s is not a millrace_cli.plugins.Plugin", point.value)
            continue
        yield plugin
