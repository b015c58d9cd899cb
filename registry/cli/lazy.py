"""A command group that imports a command's module only when that command runs.

`deltahub --help` and the client commands must start in a blink and work without torch
or the server stack installed, so no command module is imported up front: the group
knows each command's name, one-line summary and module (registry/cli/app.py), lists
them from that table, and imports a module when one of its commands is invoked (or asked
for its own `--help`). A module whose dependencies are missing becomes one line naming
the extra to install.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import typer
import typer.main

# Typer (>= 0.26) runs on its own copy of Click, and a group's hooks take its types.
from typer._click.core import Command, Context
from typer._click.exceptions import UsageError
from typer._click.formatting import HelpFormatter
from typer.core import TyperCommand, TyperGroup

from registry.cli.failures import EXIT_NOT_INSTALLED, CommandFailure, reported

OUR_PACKAGES = frozenset({"registry", "compress", "kernels"})


@dataclass(frozen=True)
class Entry:
    module: str  # under registry.cli
    summary: str  # the first line of the command's own help (a test keeps them equal)
    panel: str  # where `--help` lists it
    extra: str | None = None  # the extra its module needs; None: the client's own deps


class LazyGroup(TyperGroup):
    entries: Mapping[str, Entry] = {}  # set by a subclass: the command table

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.entries)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        entry = self.entries.get(cmd_name)
        if entry is None:
            return None
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if self._listing or ctx.resilient_parsing:  # help listing, shell completion
            return _summary_only(cmd_name, entry)
        self._load(cmd_name, entry)
        return self.commands[cmd_name]

    def _load(self, cmd_name: str, entry: Entry) -> None:
        try:
            module = importlib.import_module(f"registry.cli.{entry.module}")
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if entry.extra is None or not missing or missing in OUR_PACKAGES:
                raise
            raise CommandFailure(
                f"deltahub {cmd_name} is not installed",
                f"it needs the {entry.extra} extra ({missing} is missing): "
                f"{install_hint(entry.extra)}", EXIT_NOT_INSTALLED) from exc
        commands = typer.Typer()
        module.register(commands)
        for name, command in typer.main.get_group(commands).commands.items():
            self.commands[name] = command

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(self, ctx: Context, args: list[str]
                        ) -> tuple[str | None, Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.entries:
            matches = difflib.get_close_matches(name, list(self.entries), n=3)
            hint = f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
            raise UsageError(f"No such command {name!r}.{hint}", ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: Context) -> Any:
        with reported(bool(ctx.params.get("debug"))):
            return super().invoke(ctx)


def install_hint(extra: str) -> str:
    """How to install `extra`: from the package index, and from a checkout (the only way
    until the package is published, and the server's way: its migrations stay there)."""
    return (f"pip install 'deltahub[{extra}]', or from a checkout: pip install -e "
            f"'.[{extra}]' (or from its parent directory: pip install './deltahub[{extra}]')")


def _summary_only(name: str, entry: Entry) -> Command:
    """What the listing shows of a command that was not imported."""
    return TyperCommand(name, help=entry.summary, short_help=entry.summary,
                        rich_help_panel=entry.panel)
