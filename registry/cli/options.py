"""Options the codec commands share, and how they resolve."""

from __future__ import annotations

from typing import Annotated

import typer

from compress.targets import DEFAULT_TARGET_MODULES, TargetSpec

Device = Annotated[str, typer.Option(help="where the arithmetic runs: cpu, cuda, cuda:1, ...")]
Targets = Annotated[list[str] | None, typer.Option(
    "--target", help="a target module name (repeat); default: the attention and MLP projections",
    show_default=False)]
TargetRegex = Annotated[str | None, typer.Option(
    help="target the modules whose full name matches this regular expression instead",
    show_default=False)]


def resolve_targets(target: list[str] | None, target_regex: str | None) -> TargetSpec:
    """--target names, or --target-regex, or the default projections (PEFT's rules)."""
    if target and target_regex:
        raise typer.BadParameter("give --target or --target-regex, not both")
    return target_regex or target or DEFAULT_TARGET_MODULES
