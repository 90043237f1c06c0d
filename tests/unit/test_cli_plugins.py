"""The product's command finds the development stack's commands by entry point, and a plugin
that cannot load is named and skipped."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint

import pytest

from millrace_cli import plugins
from millrace_cli.app import SETTINGS, app
from millrace_stack.stack import StackSettings


def test_the_stack_plugs_its_commands_and_settings_into_millrace():
    names = {command.name or command.callback.__name__ for command in app.registered_commands}
    assert {"up", "down", "status", "replay", "produce", "backfill"} <= names
    assert StackSettings in SETTINGS


def test_a_plugin_that_cannot_load_or_is_not_a_plugin_is_skipped(monkeypatch, caplog):
    points = [
        EntryPoint("missing", "no_such_package.cli:plugin", plugins.GROUP),
        EntryPoint("wrong", "millrace_cli.app:main", plugins.GROUP),
        EntryPoint("stack", "millrace_stack.cli:plugin", plugins.GROUP),
    ]
    monkeypatch.setattr(plugins, "entry_points", lambda group: points)
    with caplog.at_level(logging.WARNING):
        found = list(plugins.installed())
    assert [p.settings for p in found] == [(StackSettings,)]
    assert "no_such_package.cli:plugin cannot load" in caplog.text
    assert "millrace_cli.app:main is not a millrace_cli.plugins.Plugin" in caplog.text


@pytest.mark.parametrize("command", ["produce", "backfill", "init", "check", "secrets"])
def test_the_products_commands_are_its_own(command):
    owners = {
        (c.name or c.callback.__name__): c.callback.__module__ for c in app.registered_commands
    }
    assert owners[command] == "millrace_cli.app"
